// The kernels of kernels/llama_ops.h against simple CPU references, on fresh random data
// every run (the seed is printed on failure), with every output buffer poisoned (0xFF: NaN in
// fp16, bf16 and fp32) before the call. Skips with a message when the build has no CUDA or
// the machine has no GPU; the argument checks run without a GPU.
//
// Tolerances. Every kernel computes in fp32 and rounds its output to 16 bits once, so
// against a double-precision reference the error of an element is half a 16-bit ulp plus
// the fp32 error (relative ~1e-6): we allow one ulp of the 16-bit type at the reference
// value (2^-10..2^-11 relative for fp16, 2^-7..2^-8 for bf16). RoPE adds an absolute term
// 2^-20 (|a| + |b|) for the cancellation in a cos - b sin (sincosf is within 2 fp32 ulps).
// Embedding, the residual update and the LUT dequantization are exact: compared bitwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/llama_ops.h"
#include "tests/kernels/gpu_test_util.h"
#include "kernels/lut_format.h"

#ifdef FLUTE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace flute::gpu {
namespace {

#ifndef FLUTE_HAVE_CUDA
TEST(LlamaOpsGpuTest, SkippedWithoutCuda) {
  EXPECT_EQ(LaunchFillFloat(nullptr, 1, 0.0f, nullptr).code(), absl::StatusCode::kUnimplemented);
  GTEST_SKIP() << "built without CUDA: the GPU llama_ops tests need nvcc at build time";
}
#else

#define REQUIRE_GPU() REQUIRE_GPU_FOR("llama_ops")
using flute::testing::Bf16ToFloat;
using flute::testing::FloatToBf16;
using flute::testing::FloatToHalf;
using flute::testing::HalfToFloat;

bool IsHalf(ActivationType t) { return t == ActivationType::kFloat16; }
const char* Name(ActivationType t) { return IsHalf(t) ? "fp16" : "bf16"; }
uint16_t ToAct(ActivationType t, float f) { return IsHalf(t) ? FloatToHalf(f) : FloatToBf16(f); }
float FromAct(ActivationType t, uint16_t h) { return IsHalf(t) ? HalfToFloat(h) : Bf16ToFloat(h); }

// One ulp of the 16-bit type at |v| (the subnormal spacing below the smallest normal).
double Ulp16(ActivationType t, double v) {
  const int mantissa_bits = IsHalf(t) ? 10 : 7;
  const int min_exp = IsHalf(t) ? -14 : -126;
  const int e = v == 0.0 ? min_exp : std::max(std::ilogb(v), min_exp);
  return std::ldexp(1.0, e - mantissa_bits);
}

// ---- Device buffers ----
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) {
    if (n > 0 && cudaMalloc(&ptr, n) != cudaSuccess) ptr = nullptr;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T> T* as() const { return static_cast<T*>(ptr); }
  void Poison() const { cudaMemset(ptr, 0xFF, bytes); }
};

template <typename T>
std::unique_ptr<DeviceBuffer> Upload(const std::vector<T>& host) {
  auto buf = std::make_unique<DeviceBuffer>(host.size() * sizeof(T));
  cudaMemcpy(buf->ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return buf;
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& buf, size_t count) {
  std::vector<T> host(count);
  cudaMemcpy(host.data(), buf.ptr, count * sizeof(T), cudaMemcpyDeviceToHost);
  return host;
}

// OK status, then a clean synchronize.
::testing::AssertionResult Finished(const absl::Status& st) {
  if (!st.ok()) return ::testing::AssertionFailure() << st;
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) return ::testing::AssertionFailure() << cudaGetErrorString(err);
  return ::testing::AssertionSuccess();
}

// count random 16-bit values ~ N(0, sigma^2), as bits.
std::vector<uint16_t> RandomAct(ActivationType t, size_t count, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<uint16_t> v(count);
  for (auto& h : v) h = ToAct(t, normal(rng));
  return v;
}

std::vector<float> RandomFloat(size_t count, float mean, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> normal(mean, sigma);
  std::vector<float> v(count);
  for (auto& f : v) f = normal(rng);
  return v;
}

// |got - ref| <= Ulp16(ref) + abs_slack, got finite (so written).
::testing::AssertionResult Near(ActivationType t, uint16_t got_bits, double ref, double abs_slack,
                                size_t index) {
  const float got = FromAct(t, got_bits);
  const double tol = Ulp16(t, std::fabs(ref)) + abs_slack;
  if (!std::isfinite(got) || std::fabs(got - ref) > tol) {
    char bits[8];
    std::snprintf(bits, sizeof(bits), "%04x", got_bits);
    return ::testing::AssertionFailure() << "element " << index << ": got " << got << " (0x" << bits
                                         << "), reference " << ref << ", tolerance " << tol;
  }
  return ::testing::AssertionSuccess();
}

constexpr ActivationType kDtypes[] = {ActivationType::kFloat16, ActivationType::kBFloat16};
const std::vector<int> kRows = {1, 3, 17, 100};

// ---- Embedding ----
void CheckEmbedding(ActivationType t, int m, int hidden, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << Name(t) << " m=" << m << " hidden=" << hidden);
  const int vocab = 300;
  const std::vector<uint16_t> table = RandomAct(t, static_cast<size_t>(vocab) * hidden, 1.0f, rng);
  std::vector<int32_t> tokens(m);
  for (auto& id : tokens) id = static_cast<int32_t>(rng() % vocab);
  if (m >= 3) {  // out-of-range ids write zeros
    tokens[1] = -1;
    tokens[2] = vocab;
  }
  auto d_table = Upload(table);
  auto d_tokens = Upload(tokens);
  DeviceBuffer d_res(static_cast<size_t>(m) * hidden * 4);
  d_res.Poison();
  ASSERT_TRUE(Finished(LaunchEmbedding(t, d_tokens->as<int32_t>(), m, d_table->ptr, vocab, hidden,
                                       d_res.as<float>(), nullptr)));
  const std::vector<float> res = Download<float>(d_res, static_cast<size_t>(m) * hidden);
  for (int i = 0; i < m; ++i) {
    const bool valid = tokens[i] >= 0 && tokens[i] < vocab;
    for (int c = 0; c < hidden; ++c) {
      const float want = valid ? FromAct(t, table[static_cast<size_t>(tokens[i]) * hidden + c]) : 0.0f;
      const float got = res[static_cast<size_t>(i) * hidden + c];
      ASSERT_EQ(std::memcmp(&want, &got, 4), 0)
          << "row " << i << " (token " << tokens[i] << ") col " << c << ": got " << got << " want " << want;
    }
  }
}

TEST(LlamaOpsGpuTest, EmbeddingGathersRowsAndZerosOutOfRangeIds) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (ActivationType t : kDtypes) {
    for (int m : kRows) {
      for (int hidden : {512, 4096, 8192, 100}) CheckEmbedding(t, m, hidden, rng);  // 100: scalar path
    }
  }
}

// ---- Residual add + RMSNorm ----
void CheckAddRmsNorm(ActivationType t, int m, int hidden, bool with_x, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << Name(t) << " m=" << m << " hidden=" << hidden
                                    << (with_x ? " with x" : " without x"));
  const float eps = 1e-5f;
  const size_t count = static_cast<size_t>(m) * hidden;
  const std::vector<float> residual = RandomFloat(count, 0.0f, 1.0f, rng);
  const std::vector<uint16_t> x = RandomAct(t, count, 0.5f, rng);
  const std::vector<float> weight = RandomFloat(hidden, 1.0f, 0.2f, rng);
  auto d_res = Upload(residual);
  auto d_x = Upload(x);
  auto d_w = Upload(weight);
  DeviceBuffer d_out(count * 2);
  d_out.Poison();
  ASSERT_TRUE(Finished(LaunchAddRmsNorm(t, m, hidden, eps, with_x ? d_x->ptr : nullptr,
                                        d_res->as<float>(), d_w->as<float>(), d_out.ptr, nullptr)));
  const std::vector<float> res = Download<float>(*d_res, count);
  const std::vector<uint16_t> out = Download<uint16_t>(d_out, count);
  for (int i = 0; i < m; ++i) {
    const size_t row = static_cast<size_t>(i) * hidden;
    double sumsq = 0;
    for (int c = 0; c < hidden; ++c) {
      const float want = with_x ? residual[row + c] + FromAct(t, x[row + c]) : residual[row + c];  // fp32 add
      ASSERT_EQ(std::memcmp(&want, &res[row + c], 4), 0)
          << "residual row " << i << " col " << c << ": got " << res[row + c] << " want " << want;
      sumsq += static_cast<double>(want) * want;
    }
    const double inv = 1.0 / std::sqrt(sumsq / hidden + eps);
    for (int c = 0; c < hidden; ++c) {
      const double ref = static_cast<double>(weight[c]) * res[row + c] * inv;
      ASSERT_TRUE(Near(t, out[row + c], ref, 0.0, row + c)) << "row " << i << " col " << c;
    }
  }
}

TEST(LlamaOpsGpuTest, AddRmsNormMatchesFp32Reference) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (ActivationType t : kDtypes) {
    for (int m : kRows) {
      for (int hidden : {512, 4096, 8192, 200}) {  // 200: not a multiple of 8 (scalar path)
        for (bool with_x : {true, false}) CheckAddRmsNorm(t, m, hidden, with_x, rng);
      }
    }
    // Rows longer than the register cache of a block (re-read from residual), both paths.
    CheckAddRmsNorm(t, 3, 40000, true, rng);
    CheckAddRmsNorm(t, 3, 5004, true, rng);
  }
}

// ---- RoPE ----
using flute::testing::Llama3InvFreq;

struct RopeCase {
  int num_heads, num_kv_heads, head_dim, extra_cols;  // row_stride = (h + 2 kv) d + extra
};

void CheckRope(ActivationType t, int m, const RopeCase& rc, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << Name(t) << " m=" << m << " heads=" << rc.num_heads << "/"
                                    << rc.num_kv_heads << " head_dim=" << rc.head_dim);
  const int d = rc.head_dim, half = d / 2;
  const int k_offset = rc.num_heads * d;
  const int row_stride = (rc.num_heads + 2 * rc.num_kv_heads) * d + rc.extra_cols;
  const size_t count = static_cast<size_t>(m) * row_stride;
  const std::vector<uint16_t> qkv = RandomAct(t, count, 1.0f, rng);
  std::vector<int32_t> positions(m);
  for (auto& p : positions) p = static_cast<int32_t>(rng() % 131073);
  positions[0] = 131072;
  if (m > 1) positions[1] = 0;
  const std::vector<float> inv_freq = Llama3InvFreq(d);
  auto d_qkv = Upload(qkv);
  auto d_pos = Upload(positions);
  auto d_freq = Upload(inv_freq);
  ASSERT_TRUE(Finished(LaunchRope(t, d_qkv->ptr, m, row_stride, rc.num_heads, k_offset,
                                  rc.num_kv_heads, d, d_pos->as<int32_t>(), d_freq->as<float>(), nullptr)));
  const std::vector<uint16_t> out = Download<uint16_t>(*d_qkv, count);
  std::vector<bool> rotated(row_stride, false);
  for (int c = 0; c < (rc.num_heads + rc.num_kv_heads) * d; ++c) rotated[c] = true;
  for (int i = 0; i < m; ++i) {
    const size_t row = static_cast<size_t>(i) * row_stride;
    for (int c = 0; c < row_stride; ++c) {  // v heads and padding columns are untouched
      if (!rotated[c]) {
        ASSERT_EQ(out[row + c], qkv[row + c]) << "row " << i << " col " << c << " changed";
      }
    }
    for (int head = 0; head < rc.num_heads + rc.num_kv_heads; ++head) {
      const size_t base = row + static_cast<size_t>(head) * d;  // k heads follow q here
      for (int j = 0; j < half; ++j) {
        const float angle = static_cast<float>(positions[i]) * inv_freq[j];  // fp32, as the kernel
        const double c = std::cos(static_cast<double>(angle)), s = std::sin(static_cast<double>(angle));
        const double a = FromAct(t, qkv[base + j]), b = FromAct(t, qkv[base + j + half]);
        const double slack = std::ldexp(std::fabs(a) + std::fabs(b), -20);
        ASSERT_TRUE(Near(t, out[base + j], a * c - b * s, slack, base + j))
            << "row " << i << " position " << positions[i] << " head " << head << " j " << j;
        ASSERT_TRUE(Near(t, out[base + j + half], b * c + a * s, slack, base + j + half))
            << "row " << i << " position " << positions[i] << " head " << head << " j " << j + half;
      }
    }
  }
}

TEST(LlamaOpsGpuTest, RopeMatchesReferenceUpToPosition131072) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  const std::vector<RopeCase> cases = {
      {32, 8, 128, 0},  // LLaMA-3 8B fused QKV
      {8, 2, 64, 0},    // man-page model
      {4, 4, 64, 8},    // MHA with padding columns after v
      {3, 1, 12, 2},    // head_dim / 2 = 6: the scalar path
  };
  for (ActivationType t : kDtypes) {
    for (int m : kRows) {
      for (const RopeCase& rc : cases) CheckRope(t, m, rc, rng);
    }
  }
}

// ---- SwiGLU ----
// interleave 0: gate columns [0, inter), up [inter, 2 inter); 8: runs of 8 alternate.
void CheckSwiGlu(ActivationType t, int m, int inter, int interleave, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << Name(t) << " m=" << m << " inter=" << inter << " interleave=" << interleave);
  const size_t count = static_cast<size_t>(m) * inter;
  const std::vector<uint16_t> gate_up = RandomAct(t, 2 * count, 3.0f, rng);
  auto d_in = Upload(gate_up);
  DeviceBuffer d_out(count * 2);
  d_out.Poison();
  ASSERT_TRUE(Finished(LaunchSwiGlu(t, d_in->ptr, m, inter, d_out.ptr, nullptr, interleave)));
  const std::vector<uint16_t> out = Download<uint16_t>(d_out, count);
  for (int i = 0; i < m; ++i) {
    for (int c = 0; c < inter; ++c) {
      const size_t gate_col = interleave == 0 ? c : 16 * (c / 8) + c % 8;
      const size_t in = static_cast<size_t>(i) * 2 * inter + gate_col;
      const size_t up = interleave == 0 ? in + inter : in + 8;
      const double g = FromAct(t, gate_up[in]), u = FromAct(t, gate_up[up]);
      const double ref = g / (1.0 + std::exp(-g)) * u;
      ASSERT_TRUE(Near(t, out[static_cast<size_t>(i) * inter + c], ref, 0.0, i * inter + c))
          << "row " << i << " col " << c << " gate " << g << " up " << u;
    }
  }
}

TEST(LlamaOpsGpuTest, SwiGluMatchesReference) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (ActivationType t : kDtypes) {
    for (int m : kRows) {
      for (int inter : {512, 4096, 14336, 1004}) CheckSwiGlu(t, m, inter, 0, rng);  // 1004: scalar path
      for (int inter : {512, 14336, 1000}) CheckSwiGlu(t, m, inter, 8, rng);        // 1000: 125 runs
    }
  }
}

// ---- LUT dequantization ----
// out_offset / packed_offset (bytes) misalign the buffers to take the unvectorized paths.
void CheckDequantize(ActivationType t, const lut::LutShape& s, size_t out_offset,
                     size_t packed_offset, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << Name(t) << " n=" << s.n << " k=" << s.k << " bits=" << s.bits
                                    << " G=" << s.group_size << " out_offset=" << out_offset
                                    << " packed_offset=" << packed_offset);
  const size_t count = static_cast<size_t>(s.n * s.k);
  std::vector<uint8_t> codes(count);
  for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << s.bits) - 1));
  std::vector<uint8_t> packed(lut::PackedCodeBytes(s) + packed_offset, 0);
  lut::PackCodes(s, codes.data(), packed.data() + packed_offset);
  std::uniform_real_distribution<float> mag(0.5f, 2.0f);
  std::vector<uint16_t> scales(static_cast<size_t>(s.n * (s.k / s.group_size)));
  for (auto& v : scales) v = FloatToHalf(mag(rng) * ((rng() & 1) ? 0.02f : -0.02f));
  const std::vector<float> table = RandomFloat(size_t{1} << s.bits, 0.0f, 1.0f, rng);
  std::vector<float> ref(count);
  lut::DequantizeRows(s, packed.data() + packed_offset, scales.data(), table.data(), 0, s.n, ref.data());

  auto d_packed = Upload(packed);
  auto d_scales = Upload(scales);
  auto d_table = Upload(table);
  DeviceBuffer d_out(count * 2 + out_offset);
  d_out.Poison();
  void* out = static_cast<char*>(d_out.ptr) + out_offset;
  ASSERT_TRUE(Finished(LaunchLutDequantize(s, t, d_packed->as<uint8_t>() + packed_offset,
                                           d_scales->as<uint16_t>(), d_table->as<float>(), out, nullptr)));
  std::vector<uint16_t> got(count);
  cudaMemcpy(got.data(), out, count * 2, cudaMemcpyDeviceToHost);
  for (size_t i = 0; i < count; ++i) {
    ASSERT_EQ(got[i], ToAct(t, ref[i])) << "row " << i / s.k << " col " << i % s.k << ": got "
                                        << FromAct(t, got[i]) << ", DequantizeRows " << ref[i];
  }
}

TEST(LlamaOpsGpuTest, LutDequantizeEqualsDequantizeRowsBitwise) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (ActivationType t : kDtypes) {
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 64, 128, 256}) {
        const int64_t kmin = std::max(128, g);
        CheckDequantize(t, {16, kmin, bits, g}, 0, 0, rng);    // the smallest allowed shape
        CheckDequantize(t, {48, 3 * kmin, bits, g}, 0, 0, rng);
      }
      CheckDequantize(t, {32, 256, bits, 32}, 2, 1, rng);  // unaligned out and packed
    }
    CheckDequantize(t, {512, 1536, 4, 128}, 0, 0, rng);  // man-page model's down projection
    CheckDequantize(t, {1024, 4096, 3, 64}, 0, 0, rng);
  }
}

// ---- Random fills ----
// Fills `count` elements of a poisoned buffer of count + 64 bytes; checks the tail is intact.
template <typename Launch>
std::vector<uint8_t> FillBytesOf(size_t bytes, Launch launch) {
  DeviceBuffer buf(bytes + 64);
  buf.Poison();
  EXPECT_TRUE(Finished(launch(buf.ptr)));
  std::vector<uint8_t> all = Download<uint8_t>(buf, bytes + 64);
  for (size_t i = bytes; i < all.size(); ++i) {
    EXPECT_EQ(all[i], 0xFF) << "fill wrote past its end at byte " << i;
  }
  all.resize(bytes);
  return all;
}

TEST(LlamaOpsGpuTest, FillUniformIsDeterministicAndInRange) {
  REQUIRE_GPU();
  const size_t count = (size_t{1} << 20) + 3;
  const float amplitude = 0.5f;
  for (ActivationType t : kDtypes) {
    SCOPED_TRACE(Name(t));
    auto fill = [&](uint64_t seed) {
      return FillBytesOf(count * 2, [&](void* p) { return LaunchFillUniform(t, p, count, amplitude, seed, nullptr); });
    };
    const std::vector<uint8_t> a = fill(42), b = fill(42), c = fill(43);
    EXPECT_EQ(a, b) << "same seed, different bytes";
    EXPECT_NE(a, c) << "different seeds, same bytes";
    std::vector<uint16_t> v(count);
    std::memcpy(v.data(), a.data(), count * 2);
    double sum = 0, lo = 1e30, hi = -1e30;
    for (uint16_t h : v) {
      const double f = FromAct(t, h);
      ASSERT_TRUE(std::isfinite(f));
      sum += f;
      lo = std::min(lo, f);
      hi = std::max(hi, f);
    }
    // Uniform in [-a, a]: standard error of the mean a / sqrt(3 count) ~ 3e-4 a.
    EXPECT_NEAR(sum / count, 0.0, 0.005 * amplitude);
    EXPECT_GE(lo, -amplitude);
    EXPECT_LE(hi, amplitude);
    EXPECT_LT(lo, -0.99 * amplitude);
    EXPECT_GT(hi, 0.99 * amplitude);
  }
}

TEST(LlamaOpsGpuTest, FillBytesIsDeterministicAndUniform) {
  REQUIRE_GPU();
  const size_t count = (size_t{1} << 20) + 5;
  auto fill = [&](uint64_t seed) {
    return FillBytesOf(count, [&](void* p) { return LaunchFillBytes(static_cast<uint8_t*>(p), count, seed, nullptr); });
  };
  const std::vector<uint8_t> a = fill(7), b = fill(7), c = fill(8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<size_t> histogram(256, 0);
  double sum = 0;
  for (uint8_t v : a) {
    ++histogram[v];
    sum += v;
  }
  EXPECT_NEAR(sum / count, 127.5, 0.5);  // standard error 74 / 1024 = 0.07
  for (int v = 0; v < 256; ++v) EXPECT_GT(histogram[v], count / 256 / 2) << "byte value " << v;
}

TEST(LlamaOpsGpuTest, FillHalfUniformIsDeterministicAndInRange) {
  REQUIRE_GPU();
  const size_t count = (size_t{1} << 20) + 1;
  const float lo = 0.01f, hi = 0.04f;
  auto fill = [&](uint64_t seed) {
    return FillBytesOf(count * 2, [&](void* p) {
      return LaunchFillHalfUniform(static_cast<uint16_t*>(p), count, lo, hi, seed, nullptr);
    });
  };
  const std::vector<uint8_t> a = fill(1), b = fill(1), c = fill(2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<uint16_t> v(count);
  std::memcpy(v.data(), a.data(), count * 2);
  double sum = 0;
  const float lo16 = HalfToFloat(FloatToHalf(lo)), hi16 = HalfToFloat(FloatToHalf(hi));
  for (uint16_t h : v) {
    const float f = HalfToFloat(h);
    ASSERT_GE(f, lo16);
    ASSERT_LE(f, hi16);
    sum += f;
  }
  EXPECT_NEAR(sum / count, 0.5 * (lo + hi), 1e-4);  // standard error 0.03 / sqrt(12 count) ~ 1e-5
}

TEST(LlamaOpsGpuTest, FillFloatWritesTheValueEverywhere) {
  REQUIRE_GPU();
  const size_t count = 1000003;
  const float value = 1.25f;
  const std::vector<uint8_t> bytes = FillBytesOf(
      count * 4, [&](void* p) { return LaunchFillFloat(static_cast<float*>(p), count, value, nullptr); });
  std::vector<float> v(count);
  std::memcpy(v.data(), bytes.data(), count * 4);
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(v[i], value) << "element " << i;
}

// ---- Graph capture: every launcher on a non-default stream, captured and replayed ----
TEST(LlamaOpsGpuTest, LaunchersAreGraphCapturable) {
  REQUIRE_GPU();
  const ActivationType t = ActivationType::kBFloat16;
  const int m = 4, hidden = 512, inter = 1024, vocab = 64;
  const lut::LutShape shape{128, 512, 4, 128};
  DeviceBuffer act(static_cast<size_t>(m) * 2 * inter * 2), out(static_cast<size_t>(m) * inter * 2),
      residual(static_cast<size_t>(m) * hidden * 4), weight(hidden * 4), table(vocab * hidden * 2),
      tokens(m * 4), positions(m * 4), inv_freq(32 * 4), packed(lut::PackedCodeBytes(shape)),
      scales(shape.n * shape.k / shape.group_size * 2), lut_table(16 * 4),
      dequant(shape.n * shape.k * 2);
  cudaMemset(tokens.ptr, 0, tokens.bytes);
  cudaMemset(positions.ptr, 0, positions.bytes);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  std::vector<absl::Status> statuses = {
      LaunchFillUniform(t, act.ptr, act.bytes / 2, 1.0f, 3, stream),
      LaunchFillUniform(t, table.ptr, table.bytes / 2, 1.0f, 4, stream),
      LaunchFillFloat(weight.as<float>(), hidden, 1.0f, stream),
      LaunchFillFloat(inv_freq.as<float>(), 32, 0.5f, stream),
      LaunchFillBytes(packed.as<uint8_t>(), packed.bytes, 5, stream),
      LaunchFillHalfUniform(scales.as<uint16_t>(), scales.bytes / 2, 0.01f, 0.02f, 6, stream),
      LaunchFillFloat(lut_table.as<float>(), 16, 0.25f, stream),
      LaunchEmbedding(t, tokens.as<int32_t>(), m, table.ptr, vocab, hidden, residual.as<float>(), stream),
      LaunchAddRmsNorm(t, m, hidden, 1e-5f, act.ptr, residual.as<float>(), weight.as<float>(), out.ptr, stream),
      LaunchRope(t, act.ptr, m, 2 * inter, 4, 256, 4, 64, positions.as<int32_t>(), inv_freq.as<float>(), stream),
      LaunchSwiGlu(t, act.ptr, m, inter, out.ptr, stream),
      LaunchLutDequantize(shape, t, packed.as<uint8_t>(), scales.as<uint16_t>(), lut_table.as<float>(),
                          dequant.ptr, stream),
  };
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  for (size_t i = 0; i < statuses.size(); ++i) EXPECT_TRUE(statuses[i].ok()) << "launch " << i << ": " << statuses[i];
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const std::vector<float> w = Download<float>(weight, hidden);
  EXPECT_EQ(w[hidden - 1], 1.0f);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// ---- Argument checks (before any CUDA call, so no GPU needed) ----
void ExpectInvalid(const absl::Status& st, const std::string& needle) {
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(std::string(st.message()).find(needle), std::string::npos)
      << "message should mention \"" << needle << "\": " << st;
}

TEST(LlamaOpsGpuTest, RejectsBadArgumentsWithAClearError) {
  const ActivationType t = ActivationType::kFloat16;
  // Non-null dummies: validation must fail before anything is dereferenced.
  int32_t ids[1] = {0};
  float f[1] = {0.0f};
  uint16_t h[1] = {0};
  uint8_t b[1] = {0};
  ExpectInvalid(LaunchEmbedding(t, ids, -1, h, 10, 512, f, nullptr), "-1");
  ExpectInvalid(LaunchEmbedding(t, ids, 1, h, 0, 512, f, nullptr), "vocab");
  ExpectInvalid(LaunchEmbedding(t, ids, 1, h, 10, 0, f, nullptr), "hidden");
  ExpectInvalid(LaunchEmbedding(t, nullptr, 1, h, 10, 512, f, nullptr), "tokens");
  ExpectInvalid(LaunchAddRmsNorm(t, -3, 512, 1e-5f, h, f, f, h, nullptr), "-3");
  ExpectInvalid(LaunchAddRmsNorm(t, 1, -8, 1e-5f, h, f, f, h, nullptr), "hidden");
  ExpectInvalid(LaunchAddRmsNorm(t, 1, 512, -1.0f, h, f, f, h, nullptr), "eps");
  ExpectInvalid(LaunchAddRmsNorm(t, 1, 512, 1e-5f, h, f, nullptr, h, nullptr), "weight");
  ExpectInvalid(LaunchAddRmsNorm(static_cast<ActivationType>(7), 1, 512, 1e-5f, h, f, f, h, nullptr), "dtype");
  ExpectInvalid(LaunchRope(t, h, -1, 768, 8, 512, 2, 64, ids, f, nullptr), "-1");
  ExpectInvalid(LaunchRope(t, h, 1, 768, 8, 512, 2, 63, ids, f, nullptr), "63");
  ExpectInvalid(LaunchRope(t, h, 1, 600, 8, 512, 2, 64, ids, f, nullptr), "600");
  ExpectInvalid(LaunchRope(t, h, 1, 768, 8, 256, 2, 64, ids, f, nullptr), "k_offset");
  ExpectInvalid(LaunchSwiGlu(t, h, -2, 512, h, nullptr), "-2");
  ExpectInvalid(LaunchSwiGlu(t, h, 1, 0, h, nullptr), "inter");
  ExpectInvalid(LaunchSwiGlu(t, h, 1, 1004, h, nullptr, 8), "interleave");  // 1004 % 8 != 0
  ExpectInvalid(LaunchSwiGlu(t, h, 1, 512, h, nullptr, 16), "interleave");
  ExpectInvalid(LaunchLutDequantize({16, 128, 5, 128}, t, b, h, f, h, nullptr), "5");
  ExpectInvalid(LaunchLutDequantize({16, 100, 4, 128}, t, b, h, f, h, nullptr), "100");
  ExpectInvalid(LaunchLutDequantize({16, 128, 4, 128}, t, b, nullptr, f, h, nullptr), "scales");
  ExpectInvalid(LaunchFillUniform(t, h, 1, -1.0f, 0, nullptr), "amplitude");
  ExpectInvalid(LaunchFillHalfUniform(h, 1, 2.0f, 1.0f, 0, nullptr), "lo");
  ExpectInvalid(LaunchFillFloat(nullptr, 1, 0.0f, nullptr), "out");
  // Nothing to do is not an error.
  EXPECT_TRUE(LaunchEmbedding(t, nullptr, 0, nullptr, 10, 512, nullptr, nullptr).ok());
  EXPECT_TRUE(LaunchFillBytes(nullptr, 0, 0, nullptr).ok());
}

#endif  // FLUTE_HAVE_CUDA

}  // namespace
}  // namespace flute::gpu
