// Helpers shared by the GPU kernel tests: whether a GPU is present, a fresh printed seed per
// test, and host conversions to and from fp16 / bf16 (round to nearest even, fp16
// subnormals included), the reference side of every 16-bit comparison, also by activation type.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/lut_gemm.h"

#ifdef FLUTE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace flute::testing {

#ifdef FLUTE_HAVE_CUDA
inline bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

// Skips the test, naming the suite, on a machine without a CUDA GPU.
#define REQUIRE_GPU_FOR(what) \
  if (!::flute::testing::HaveGpu()) GTEST_SKIP() << "no CUDA GPU on this machine: " what " GPU tests skipped"

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr << ": " << cudaGetErrorString(cudaGetLastError())

// cudaMalloc'ed bytes for a test (ptr stays null when the allocation fails).
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (bytes > 0 && cudaMalloc(&ptr, bytes) != cudaSuccess) ptr = nullptr;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};
#endif

// A fresh seed per test, printed with any failure of the test.
#define FRESH_RNG(rng)                                  \
  const unsigned rng##_seed = std::random_device{}();   \
  std::mt19937 rng(rng##_seed);                         \
  SCOPED_TRACE(::testing::Message() << "random seed " << rng##_seed)

inline uint16_t FloatToHalf(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000);
  const float a = std::fabs(f);
  if (a < 6.103515625e-05f) {  // below 2^-14: a multiple of 2^-24, rint is round-half-even
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f)));
  }
  const int exp = static_cast<int>((b >> 23) & 0xff) - 127 + 15;
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);  // overflow (not produced here)
  const uint32_t mant = b & 0x7fffff;
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // a carry rounds into the exponent
  return static_cast<uint16_t>(h);
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t b;
  if (exp == 0x1f) {
    b = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    const float f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  } else {
    b = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

inline uint16_t FloatToBf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7fff + ((b >> 16) & 1);
  return static_cast<uint16_t>(b >> 16);
}

inline float Bf16ToFloat(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// The activation type's name in test output: "fp16" or "bf16".
inline const char* ActivationName(lut::ActivationType dtype) {
  return dtype == lut::ActivationType::kFloat16 ? "fp16" : "bf16";
}

// f rounded to the activation type (its 16 bits), and those bits as a float.
inline uint16_t ToActivationBits(lut::ActivationType dtype, float f) {
  return dtype == lut::ActivationType::kFloat16 ? FloatToHalf(f) : FloatToBf16(f);
}
inline float FromActivationBits(lut::ActivationType dtype, uint16_t bits) {
  return dtype == lut::ActivationType::kFloat16 ? HalfToFloat(bits) : Bf16ToFloat(bits);
}

// llama3-scaled RoPE inverse frequencies as engine/rope.cc computes them (theta 500000,
// factor 8, low 1, high 4, original context 8192): [head_dim / 2]. Spelled out here because
// the kernel tests do not link the engine.
inline std::vector<float> Llama3InvFreq(int head_dim) {
  const float factor = 8.0f, low = 1.0f, high = 4.0f, old_context = 8192.0f;
  const float pi = 3.141592653589793f;
  std::vector<float> inv_freq(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    float f = 1.0f / std::pow(500000.0f, static_cast<float>(2 * i) / static_cast<float>(head_dim));
    const float wavelen = 2.0f * pi / f;
    float scaled = wavelen > old_context / low ? f / factor : f;
    if (!(wavelen < old_context / high) && !(wavelen > old_context / low)) {
      const float smooth = (old_context / wavelen - low) / (high - low);
      scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
    }
    inv_freq[i] = scaled;
  }
  return inv_freq;
}

// Sets an environment variable for one scope (nullptr or "" unsets it), for the kernels' A/B
// switches that are read on every call (FLUTE_LUT_TC, FLUTE_LUT_TC_STREAMK, ...).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (value != nullptr && *value != '\0') {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

}  // namespace flute::testing
