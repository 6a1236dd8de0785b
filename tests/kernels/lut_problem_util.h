// Helpers for GPU tests of the LUT-GEMM kernels: a random quantized matrix on host and device,
// the CPU reference (lut::ReferenceMatmul, parallel over strips), random activations exactly
// representable in the activation type, the fixed inputs of a fused-norm test, and the
// normalized-error comparison.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/lut_format.h"
#include "kernels/lut_gemm.h"
#include "tests/kernels/gpu_test_util.h"

#ifdef FLUTE_HAVE_CUDA
#include <cuda_runtime.h>

namespace flute::testing {

// A random quantized matrix: codes uniform in [0, 2^bits), scales ±[0.01, 0.04] in fp16, a
// standard-normal table; host copies and device buffers.
struct LutProblem {
  lut::LutShape shape;
  std::vector<uint8_t> packed;
  std::vector<uint16_t> scales;  // fp16 [n, k / G]
  std::vector<float> table;      // [2^bits]
  std::unique_ptr<DeviceBuffer> d_packed, d_scales, d_table;
};

inline LutProblem MakeLutProblem(const lut::LutShape& shape, std::mt19937& rng) {
  LutProblem p;
  p.shape = shape;
  std::vector<uint8_t> codes(static_cast<size_t>(shape.n * shape.k));
  for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << shape.bits) - 1));
  p.packed.resize(lut::PackedCodeBytes(shape));
  lut::PackCodes(shape, codes.data(), p.packed.data());
  std::uniform_real_distribution<float> magnitude(0.01f, 0.04f);
  p.scales.resize(static_cast<size_t>(shape.n * (shape.k / shape.group_size)));
  for (auto& v : p.scales) v = FloatToHalf((rng() & 1) ? magnitude(rng) : -magnitude(rng));
  std::normal_distribution<float> normal;
  for (int i = 0; i < (1 << shape.bits); ++i) p.table.push_back(normal(rng));
  p.d_packed = std::make_unique<DeviceBuffer>(p.packed.size());
  p.d_scales = std::make_unique<DeviceBuffer>(p.scales.size() * 2);
  p.d_table = std::make_unique<DeviceBuffer>(p.table.size() * 4);
  cudaMemcpy(p.d_packed->ptr, p.packed.data(), p.packed.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(p.d_scales->ptr, p.scales.data(), p.scales.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(p.d_table->ptr, p.table.data(), p.table.size() * 4, cudaMemcpyHostToDevice);
  return p;
}

// y[m, n] = x[m, k] · Ŵᵀ in fp32 by lut::ReferenceMatmul, the strips (16 rows, each a valid
// packed matrix of its own) shared among up to 16 threads.
inline std::vector<float> ReferenceY(const LutProblem& p, const std::vector<float>& x, int64_t m) {
  const lut::LutShape& s = p.shape;
  std::vector<float> y(static_cast<size_t>(m * s.n));
  const int64_t strips = s.n / 16;
  const int64_t num_threads = std::min<int64_t>(strips, std::max(1u, std::min(16u, std::thread::hardware_concurrency())));
  std::vector<std::thread> threads;
  for (int64_t t = 0; t < num_threads; ++t) {
    threads.emplace_back([&, t] {
      const int64_t first = strips * t / num_threads, last = strips * (t + 1) / num_threads;
      lut::LutShape part = s;
      part.n = (last - first) * 16;
      if (part.n == 0) return;
      const uint8_t* packed = p.packed.data() + lut::PackedCodeBytes({first * 16, s.k, s.bits, s.group_size});
      const uint16_t* scales = p.scales.data() + first * 16 * (s.k / s.group_size);
      std::vector<float> part_y(static_cast<size_t>(m * part.n));
      lut::ReferenceMatmul(part, packed, scales, p.table.data(), x.data(), m, part_y.data());
      for (int64_t r = 0; r < m; ++r) {
        std::copy(part_y.begin() + r * part.n, part_y.begin() + (r + 1) * part.n, y.begin() + r * s.n + first * 16);
      }
    });
  }
  for (auto& th : threads) th.join();
  return y;
}

// silu(gate) * up of a reference GEMM output y [m, n] whose rows are gate and up features
// interleaved by 8 (lut::InterleaveRowHalves: rows 16j..16j+7 gate, 16j+8..16j+15 up):
// [m, n / 2], what the kernels' SwiGLU epilogue computes.
inline std::vector<float> SwiGluOfInterleaved(const std::vector<float>& y, int64_t m, int64_t n) {
  const int64_t inter = n / 2;
  std::vector<float> out(static_cast<size_t>(m * inter));
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < inter; ++c) {
      const float gate = y[r * n + 16 * (c / 8) + c % 8], up = y[r * n + 16 * (c / 8) + c % 8 + 8];
      out[r * inter + c] = gate / (1.0f + std::exp(-gate)) * up;
    }
  }
  return out;
}

// Standard-normal [m, k], each value exactly representable in dtype.
inline std::vector<float> RandomActivations(lut::ActivationType dtype, int64_t m, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(m * k));
  for (auto& v : x) v = FromActivationBits(dtype, ToActivationBits(dtype, normal(rng)));
  return x;
}

// The fixed inputs of a fused-norm test: producer P [h, kp] and consumer C [nc, h], random
// quantized matrices, around a RMSNorm of width h whose weight, 1 + 0.1 N(0, 1) drawn with
// `normal`, is on the host and the device.
struct FusedNormInputs {
  LutProblem prod, cons;
  std::vector<float> weight;  // [h]
  std::unique_ptr<DeviceBuffer> d_weight;
};

inline FusedNormInputs MakeFusedNormInputs(int64_t h, int64_t kp, int64_t nc, int bits, int group,
                                           std::normal_distribution<float>& normal, std::mt19937& rng) {
  FusedNormInputs in;
  in.prod = MakeLutProblem({h, kp, bits, group}, rng);
  in.cons = MakeLutProblem({nc, h, bits, group}, rng);
  in.weight.resize(h);
  for (float& w : in.weight) w = 1.0f + 0.1f * normal(rng);
  in.d_weight = std::make_unique<DeviceBuffer>(h * 4);
  cudaMemcpy(in.d_weight->ptr, in.weight.data(), h * 4, cudaMemcpyHostToDevice);
  return in;
}

// ‖y − ref‖ / ‖ref‖ below tol_scale × (2e-3 fp16, 1.6e-2 bf16: the split-K kernel's test
// tolerances), every element finite (outputs are poisoned with NaN before a call).
inline ::testing::AssertionResult MatchesReference(lut::ActivationType dtype, const std::vector<uint16_t>& y_bits,
                                                   const std::vector<float>& ref, double* err_out = nullptr,
                                                   double tol_scale = 1.0) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double y = FromActivationBits(dtype, y_bits[i]);
    if (!std::isfinite(y)) return ::testing::AssertionFailure() << "element " << i << " not written or not finite";
    num += (y - ref[i]) * (y - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  const double err = std::sqrt(num / std::max(den, 1e-30));
  if (err_out) *err_out = err;
  const double tol = tol_scale * (dtype == lut::ActivationType::kFloat16 ? 2e-3 : 1.6e-2);
  if (err > tol) return ::testing::AssertionFailure() << "normalized error " << err << " > " << tol;
  return ::testing::AssertionSuccess() << "normalized error " << err;
}

}  // namespace flute::testing

#endif  // FLUTE_HAVE_CUDA
