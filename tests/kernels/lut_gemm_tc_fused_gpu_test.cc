// The tensor-core LUT-GEMM's fused norms (kernels/lut_gemm.h): the residual epilogue with
// prenorm_out in the projection before a RMSNorm, and the deferred norm in the one after,
// against the separate kernels (plain GEMM, gpu::LaunchAddRmsNorm, plain GEMM) and the CPU
// reference, on fresh random data every run (bf16: the fused instances are compiled for bf16
// only); and the calls that must be rejected. Skips with a message without CUDA or a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/llama_ops.h"
#include "kernels/lut_format.h"
#include "kernels/lut_gemm.h"
#include "tests/kernels/gpu_test_util.h"
#include "tests/kernels/lut_problem_util.h"

namespace flute::lut {
namespace {

#ifndef FLUTE_HAVE_CUDA
TEST(LutGemmTcFusedGpuTest, SkippedWithoutCuda) {
  GTEST_SKIP() << "built without CUDA: the tensor-core LUT-GEMM tests need nvcc at build time";
}
#else

#define REQUIRE_GPU() REQUIRE_GPU_FOR("tensor-core LUT-GEMM fused norms")
using flute::testing::ActivationName;
using flute::testing::DeviceBuffer;
using flute::testing::FromActivationBits;
using flute::testing::LutProblem;
using flute::testing::MakeFusedNormInputs;
using flute::testing::MakeLutProblem;
using flute::testing::MatchesReference;
using flute::testing::RandomActivations;
using flute::testing::ReferenceY;
using flute::testing::ScopedEnv;
using flute::testing::SwiGluOfInterleaved;
using flute::testing::ToActivationBits;

template <typename V>
std::vector<V> Download(const DeviceBuffer& d, size_t count) {
  std::vector<V> out(count);
  cudaMemcpy(out.data(), d.ptr, count * sizeof(V), cudaMemcpyDeviceToHost);
  return out;
}

LutGemmParams Params(const LutProblem& p, ActivationType dtype, int64_t m, const void* x, void* y,
                     void* workspace, size_t workspace_bytes, int split_k) {
  LutGemmParams params;
  params.shape = p.shape;
  params.dtype = dtype;
  params.m = m;
  params.x = x;
  params.packed = static_cast<const uint8_t*>(p.d_packed->ptr);
  params.scales = static_cast<const uint16_t*>(p.d_scales->ptr);
  params.table = static_cast<const float*>(p.d_table->ptr);
  params.y = y;
  params.workspace = workspace;
  params.workspace_bytes = workspace_bytes;
  params.split_k = split_k;
  return params;
}

// Producer P [h, kp] before a RMSNorm of width h, consumer C [nc, h] after it (SwiGLU: [nc / 2]
// outputs). Separate: P on the tensor-core kernel into proj, gpu::LaunchAddRmsNorm, C on the
// tensor-core kernel. Fused, launched as the engine does (kAuto, PDL, early weights): P with
// the residual epilogue and prenorm_out, then C on prenorm_out with the deferred norm.
// - residual: bitwise equal (the same rounded products, added the same way);
// - sums of squares (over 128 columns, with prenorm_out): equal to a CPU sum of the new residual;
// - prenorm_out: bitwise weight * residual rounded;
// - C's output: close to the separate kernels' and to the CPU reference on the CPU-normalized
//   residual (the rounding to dtype happens before the 1 / rms factor instead of after it).
void CheckFusedNorms(int64_t h, int64_t kp, int64_t nc, int bits, int group, bool swiglu, ActivationType dtype,
                     int split_k, const std::vector<int64_t>& ms, std::mt19937& rng) {
  // The plain calls of the separate path sum their splits as the fused calls do (the workspace
  // reduction): split-K in clusters applies to plain calls only and may replace Stream-K there.
  const ScopedEnv workspace_reduction("FLUTE_LUT_TC_CLUSTER", "off");
  SCOPED_TRACE(::testing::Message() << "h=" << h << " kp=" << kp << " nc=" << nc << " b=" << bits << " G=" << group
                                    << " swiglu=" << swiglu << " " << ActivationName(dtype) << " split_k=" << split_k);
  std::normal_distribution<float> normal;
  const auto& [prod, cons, weight, d_weight] = MakeFusedNormInputs(h, kp, nc, bits, group, normal, rng);
  const float eps = 1e-5f;
  const int64_t nc_out = swiglu ? nc / 2 : nc;
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  double worst_separate = 0, worst_reference = 0;
  for (int64_t m : ms) {
    SCOPED_TRACE(::testing::Message() << "m=" << m);
    const std::vector<float> x = RandomActivations(dtype, m, kp, rng);
    std::vector<float> residual(m * h);
    for (float& r : residual) r = 3.0f * normal(rng);
    std::vector<uint16_t> xb(x.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = ToActivationBits(dtype, x[i]);
    const size_t ws_bytes = LutGemmWorkspaceBytes({nc, h, bits, group}, m) + LutGemmWorkspaceBytes(prod.shape, m) +
                            static_cast<size_t>(std::max<int64_t>(split_k, 1) * m * std::max(h, nc)) * 4 + 65536;
    DeviceBuffer d_x(xb.size() * 2), d_proj(m * h * 2), d_normed(m * h * 2), d_prenorm(m * h * 2),
        d_res_a(m * h * 4), d_res_b(m * h * 4), d_sumsq(m * (h / 16) * 4), d_y_ref(m * nc_out * 2),
        d_y(m * nc_out * 2), d_ws(ws_bytes);
    cudaMemset(d_ws.ptr, 0, ws_bytes);
    cudaMemcpy(d_x.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(d_res_a.ptr, residual.data(), m * h * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(d_res_b.ptr, residual.data(), m * h * 4, cudaMemcpyHostToDevice);
    cudaMemset(d_y.ptr, 0xFF, m * nc_out * 2);  // NaN in fp16 and bf16
    cudaMemset(d_prenorm.ptr, 0xFF, m * h * 2);
    cudaMemset(d_sumsq.ptr, 0xFF, m * (h / 16) * 4);

    LutGemmParams p_plain = Params(prod, dtype, m, d_x.ptr, d_proj.ptr, d_ws.ptr, ws_bytes, split_k);
    p_plain.kernel = LutKernel::kTensorCore;
    ASSERT_TRUE(LaunchLutGemm(p_plain, stream).ok());
    ASSERT_TRUE(gpu::LaunchAddRmsNorm(dtype, static_cast<int>(m), static_cast<int>(h), eps, d_proj.ptr,
                                      static_cast<float*>(d_res_a.ptr), static_cast<const float*>(d_weight->ptr),
                                      d_normed.ptr, stream)
                    .ok());
    LutGemmParams c_plain = Params(cons, dtype, m, d_normed.ptr, d_y_ref.ptr, d_ws.ptr, ws_bytes, split_k);
    c_plain.kernel = LutKernel::kTensorCore;
    c_plain.swiglu = swiglu;
    ASSERT_TRUE(LaunchLutGemm(c_plain, stream).ok());

    LutGemmParams p_fused = Params(prod, dtype, m, d_x.ptr, nullptr, d_ws.ptr, ws_bytes, split_k);
    p_fused.pdl = p_fused.early_weights = true;
    p_fused.residual_out = static_cast<float*>(d_res_b.ptr);
    p_fused.sumsq_out = static_cast<float*>(d_sumsq.ptr);
    p_fused.prenorm_out = d_prenorm.ptr;
    p_fused.prenorm_weight = static_cast<const float*>(d_weight->ptr);
    absl::Status st = LaunchLutGemm(p_fused, stream);
    ASSERT_TRUE(st.ok()) << st;
    LutGemmParams c_fused = Params(cons, dtype, m, d_prenorm.ptr, d_y.ptr, d_ws.ptr, ws_bytes, split_k);
    c_fused.pdl = c_fused.early_weights = true;
    c_fused.swiglu = swiglu;
    c_fused.deferred_sumsq = static_cast<const float*>(d_sumsq.ptr);
    c_fused.norm_eps = eps;
    st = LaunchLutGemm(c_fused, stream);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

    const std::vector<float> res_a = Download<float>(d_res_a, m * h), res_b = Download<float>(d_res_b, m * h);
    const std::vector<float> sumsq = Download<float>(d_sumsq, m * (h / 16));
    const std::vector<uint16_t> prenorm = Download<uint16_t>(d_prenorm, m * h);
    const std::vector<uint16_t> y_ref = Download<uint16_t>(d_y_ref, m * nc_out), y = Download<uint16_t>(d_y, m * nc_out);
    ASSERT_EQ(std::memcmp(res_a.data(), res_b.data(), res_a.size() * 4), 0) << "residual differs";
    // kTileGroupLoop (m <= 32, G >= 128) and kRawScaleLoop (m = 65-128) against the general loop:
    // every output bitwise
    const char* loop_switch = group >= 128 && m <= 32        ? "FLUTE_LUT_TC_TILEGROUP"
                              : m > 64 && m <= 128 ? "FLUTE_LUT_TC_RAWSCALES"
                                                   : nullptr;
    if (loop_switch != nullptr) {
      SCOPED_TRACE(::testing::Message() << loop_switch << "=off");
      ScopedEnv env(loop_switch, "off");
      cudaMemcpy(d_res_b.ptr, residual.data(), m * h * 4, cudaMemcpyHostToDevice);
      cudaMemset(d_y.ptr, 0xFF, m * nc_out * 2);
      cudaMemset(d_prenorm.ptr, 0xFF, m * h * 2);
      cudaMemset(d_sumsq.ptr, 0xFF, m * (h / 16) * 4);
      ASSERT_TRUE(LaunchLutGemm(p_fused, stream).ok());
      ASSERT_TRUE(LaunchLutGemm(c_fused, stream).ok());
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      // (bits, as the unused sums-of-squares slots hold the NaN poison)
      EXPECT_EQ(std::memcmp(Download<float>(d_res_b, m * h).data(), res_b.data(), res_b.size() * 4), 0)
          << "residual (the general loop)";
      EXPECT_EQ(std::memcmp(Download<float>(d_sumsq, m * (h / 16)).data(), sumsq.data(), sumsq.size() * 4), 0)
          << "sums of squares (the general loop)";
      EXPECT_EQ(Download<uint16_t>(d_prenorm, m * h), prenorm) << "prenorm_out (the general loop)";
      EXPECT_EQ(Download<uint16_t>(d_y, m * nc_out), y) << "consumer output (the general loop)";
    }
    std::vector<float> normed(m * h);
    for (int64_t r = 0; r < m; ++r) {  // with prenorm_out: sums over 128 columns
      double total = 0;
      for (int64_t s = 0; s < h / 128; ++s) {
        double part = 0;
        for (int64_t c = 128 * s; c < 128 * s + 128; ++c) part += static_cast<double>(res_a[r * h + c]) * res_a[r * h + c];
        ASSERT_NEAR(sumsq[r * (h / 128) + s], part, 1e-5 * part + 1e-30) << "row " << r << " columns " << 128 * s;
        total += part;
      }
      const float inv = static_cast<float>(1.0 / std::sqrt(total / h + eps));
      for (int64_t c = 0; c < h; ++c) {
        ASSERT_EQ(prenorm[r * h + c], ToActivationBits(dtype, weight[c] * res_a[r * h + c])) << "prenorm_out row " << r
                                                                                                << " column " << c;
        normed[r * h + c] = FromActivationBits(dtype, ToActivationBits(dtype, weight[c] * (res_a[r * h + c] * inv)));
      }
    }
    std::vector<float> separate(y_ref.size());
    for (size_t i = 0; i < y_ref.size(); ++i) separate[i] = FromActivationBits(dtype, y_ref[i]);
    double err = 0;
    EXPECT_TRUE(MatchesReference(dtype, y, separate, &err, swiglu ? 2.0 : 1.0)) << "fused vs separate kernels";
    worst_separate = std::max(worst_separate, err);
    std::vector<float> ref = ReferenceY(cons, normed, m);
    if (swiglu) ref = SwiGluOfInterleaved(ref, m, nc);
    EXPECT_TRUE(MatchesReference(dtype, y, ref, &err, swiglu ? 2.0 : 1.0)) << "fused vs CPU reference";
    worst_reference = std::max(worst_reference, err);
  }
  std::printf("fused norms h=%lld kp=%lld nc=%lld b=%d G=%d %s%s split_k=%d: worst normalized error %.2e vs the "
              "separate kernels, %.2e vs the CPU reference\n",
              static_cast<long long>(h), static_cast<long long>(kp), static_cast<long long>(nc), bits, group,
              ActivationName(dtype), swiglu ? " swiglu" : "", split_k, worst_separate, worst_reference);
  cudaStreamDestroy(stream);
}

TEST(LutGemmTcFusedGpuTest, ResidualEpilogueAndDeferredNormEqualTheSeparateKernels) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (ActivationType dtype : {ActivationType::kBFloat16}) {  // (fp16: rejected, below)
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 128}) {
        // nc = 1040 / 2080: a partial last column block (65 / 130 strips of 16 features).
        CheckFusedNorms(1024, 2048, 1040, bits, g, false, dtype, 0, {1, 5, 16, 17, 33}, rng);
        CheckFusedNorms(1024, 1024, 2080, bits, g, true, dtype, 0, {5, 32, 100}, rng);
      }
    }
    // Forced splits: the last split's reduction applies the epilogues.
    CheckFusedNorms(1024, 2048, 1040, 4, 128, false, dtype, 3, {8, 20, 64}, rng);
    CheckFusedNorms(1024, 1024, 2080, 4, 64, true, dtype, 5, {16, 128}, rng);
    // LLaMA-3 8B o -> gate/up and down -> qkv at decode batch sizes.
    CheckFusedNorms(4096, 4096, 28672, 4, 128, true, dtype, 0, {8, 16, 32}, rng);
    CheckFusedNorms(4096, 14336, 6144, 4, 128, false, dtype, 0, {16, 31}, rng);
  }
}

// The same with Stream-K wherever it applies (FLUTE_LUT_TC_STREAMK=on; 128-row tiles): the
// residual epilogue (with prenorm_out) and the deferred norm run in whichever block sums a
// tile's pieces last. 8B down -> qkv (4096 x 14336 producer: 32 tiles x 112 k-tiles) and
// o -> gate/up (SwiGLU), m = 100 (a partial tile) and 128.
TEST(LutGemmTcFusedGpuTest, StreamKAppliesTheEpiloguesInTheLastPiece) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  ScopedEnv env("FLUTE_LUT_TC_STREAMK", "on");
  CheckFusedNorms(4096, 14336, 6144, 4, 128, false, ActivationType::kBFloat16, 0, {100, 128}, rng);
  CheckFusedNorms(4096, 4096, 28672, 4, 128, true, ActivationType::kBFloat16, 0, {128}, rng);
}

// Without prenorm_out the tensor-core residual epilogue writes the strip kernel's layout (sums of
// squares over 16 columns), and the residual bitwise as the plain kernel + gpu::LaunchAddRmsNorm.
void CheckResidualEpilogueAlone(const LutShape& s, int split_k, const std::vector<int64_t>& ms, std::mt19937& rng) {
  const ScopedEnv workspace_reduction("FLUTE_LUT_TC_CLUSTER", "off");  // (as in CheckFusedNorms)
  SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size
                                    << " split_k=" << split_k);
  const ActivationType dtype = ActivationType::kBFloat16;
  const LutProblem p = MakeLutProblem(s, rng);
  std::normal_distribution<float> normal;
  for (int64_t m : ms) {
    SCOPED_TRACE(::testing::Message() << "m=" << m);
    const int64_t n = s.n;
    const std::vector<float> x = RandomActivations(dtype, m, s.k, rng);
    std::vector<uint16_t> xb(x.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = ToActivationBits(dtype, x[i]);
    std::vector<float> residual(m * n), ones(n, 1.0f);
    for (float& r : residual) r = 3.0f * normal(rng);
    // (+ a forced split's partials, padded to 8-row groups and 128-column blocks as the kernel's)
    const size_t ws_bytes = LutGemmWorkspaceBytes(s, m) +
                            static_cast<size_t>(std::max(split_k, 1) * ((m + 7) / 8 * 8) * ((n + 127) / 128 * 128)) * 4 +
                            65536;
    DeviceBuffer d_x(xb.size() * 2), d_proj(m * n * 2), d_normed(m * n * 2), d_ones(n * 4), d_res_a(m * n * 4),
        d_res_b(m * n * 4), d_sumsq(m * (n / 16) * 4), d_ws(ws_bytes);
    cudaMemset(d_ws.ptr, 0, ws_bytes);
    cudaMemcpy(d_x.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(d_ones.ptr, ones.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(d_res_a.ptr, residual.data(), m * n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(d_res_b.ptr, residual.data(), m * n * 4, cudaMemcpyHostToDevice);
    cudaMemset(d_sumsq.ptr, 0xFF, m * (n / 16) * 4);
    LutGemmParams plain = Params(p, dtype, m, d_x.ptr, d_proj.ptr, d_ws.ptr, ws_bytes, split_k);
    plain.kernel = LutKernel::kTensorCore;
    ASSERT_TRUE(LaunchLutGemm(plain, nullptr).ok());
    ASSERT_TRUE(gpu::LaunchAddRmsNorm(dtype, static_cast<int>(m), static_cast<int>(n), 1e-5f, d_proj.ptr,
                                      static_cast<float*>(d_res_a.ptr), static_cast<const float*>(d_ones.ptr),
                                      d_normed.ptr, nullptr)
                    .ok());
    LutGemmParams fused = Params(p, dtype, m, d_x.ptr, nullptr, d_ws.ptr, ws_bytes, split_k);
    fused.kernel = LutKernel::kTensorCore;
    fused.residual_out = static_cast<float*>(d_res_b.ptr);
    fused.sumsq_out = static_cast<float*>(d_sumsq.ptr);
    const absl::Status st = LaunchLutGemm(fused, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> res_a = Download<float>(d_res_a, m * n), res_b = Download<float>(d_res_b, m * n);
    const std::vector<float> sumsq = Download<float>(d_sumsq, m * (n / 16));
    ASSERT_EQ(std::memcmp(res_a.data(), res_b.data(), res_a.size() * 4), 0) << "residual differs";
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t j = 0; j < n / 16; ++j) {
        double part = 0;
        for (int64_t c = 16 * j; c < 16 * j + 16; ++c) part += static_cast<double>(res_a[r * n + c]) * res_a[r * n + c];
        ASSERT_NEAR(sumsq[r * (n / 16) + j], part, 1e-5 * part + 1e-30) << "row " << r << " strip " << j;
      }
    }
  }
}

TEST(LutGemmTcFusedGpuTest, ResidualEpilogueWithoutPrenormKeepsTheStripLayout) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  CheckResidualEpilogueAlone({1040, 2048, 4, 128}, 0, {5, 16, 33, 100}, rng);
  CheckResidualEpilogueAlone({4096, 14336, 4, 128}, 0, {16}, rng);
  CheckResidualEpilogueAlone({1040, 1024, 3, 32}, 3, {17, 64}, rng);
}

// Small, for compute-sanitizer (scripts/gpu).
TEST(LutGemmTcFusedGpuTest, SanitizerSubset) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  CheckFusedNorms(1024, 1024, 1040, 4, 128, false, ActivationType::kBFloat16, 0, {5, 17}, rng);
  CheckFusedNorms(1024, 1024, 1040, 3, 32, true, ActivationType::kBFloat16, 3, {16, 33}, rng);
  CheckResidualEpilogueAlone({1040, 1024, 4, 64}, 2, {9}, rng);
}

// Stream-K for compute-sanitizer (memcheck, racecheck: the segments of a block reuse its shared
// memory stages): 128-row tiles, 9 column blocks x 64 k-tiles on 132 blocks, so tiles are cut
// into many pieces; the residual epilogue (producer 1152 x 8192) in the last piece.
TEST(LutGemmTcFusedGpuTest, StreamKSanitizerSubset) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  ScopedEnv env("FLUTE_LUT_TC_STREAMK", "on");
  CheckFusedNorms(1152, 8192, 1040, 4, 128, false, ActivationType::kBFloat16, 0, {100}, rng);
}

// The 128-row tiles without Stream-K (the engine's prefill passes of 65-512 rows), for
// compute-sanitizer: the residual epilogue and the deferred norm at m = 100 and 300 (3 m tiles,
// the last partial), and SwiGLU with the deferred norm at m = 129 (a 1-row last tile).
TEST(LutGemmTcFusedGpuTest, TiledSanitizerSubset) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  ScopedEnv env("FLUTE_LUT_TC_STREAMK", "off");
  CheckFusedNorms(1024, 1024, 1040, 4, 128, false, ActivationType::kBFloat16, 0, {100, 300}, rng);
  CheckFusedNorms(1024, 1024, 2080, 2, 128, true, ActivationType::kBFloat16, 0, {129}, rng);
}

LutGemmParams BadCall(const DeviceBuffer& buf) {
  LutGemmParams params;
  params.shape = {256, 1024, 4, 128};
  params.m = 16;
  params.x = params.y = buf.ptr;
  params.packed = static_cast<const uint8_t*>(buf.ptr);
  params.scales = static_cast<const uint16_t*>(buf.ptr);
  params.table = static_cast<const float*>(buf.ptr);
  return params;
}

void ExpectRejected(const LutGemmParams& params, const std::string& words) {
  const absl::Status st = LaunchLutGemm(params, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find(words), std::string::npos) << "expected \"" << words << "\" in: " << st;
}

TEST(LutGemmTcFusedGpuTest, IncompleteOrUnsupportedFusionsAreRejected) {
  REQUIRE_GPU();
  DeviceBuffer buf(1 << 20);
  float* f = static_cast<float*>(buf.ptr);
  LutGemmParams p = BadCall(buf);
  p.prenorm_out = buf.ptr;  // without prenorm_weight and without the residual epilogue
  ExpectRejected(p, "prenorm_weight");
  p.prenorm_weight = f;
  ExpectRejected(p, "prenorm_out needs it");
  p.residual_out = p.sumsq_out = f;
  p.deferred_sumsq = f;  // residual epilogue + deferred norm
  ExpectRejected(p, "cannot be combined");
  p.deferred_sumsq = nullptr;
  for (LutKernel kernel : {LutKernel::kSplitK, LutKernel::kStrip}) {
    p.kernel = kernel;
    ExpectRejected(p, "tensor-core kernel");
  }
  p.kernel = LutKernel::kAuto;
  p.swiglu = true;
  ExpectRejected(p, "swiglu");
  LutGemmParams d = BadCall(buf);
  d.deferred_sumsq = f;
  d.kernel = LutKernel::kSplitK;
  ExpectRejected(d, "tensor-core kernel");
  d.kernel = LutKernel::kTensorCore;
  d.residual_in = d.sumsq_in = d.norm_weight = f;  // norm prologue + deferred norm
  ExpectRejected(d, "cannot be combined");
  d.deferred_sumsq = nullptr;  // the norm prologue alone: strip kernel only
  ExpectRejected(d, "strip kernel");
  // The tensor-core fusions are compiled for bf16 only.
  LutGemmParams h = BadCall(buf);
  h.dtype = ActivationType::kFloat16;
  h.deferred_sumsq = f;
  ExpectRejected(h, "bf16 only");
  h.deferred_sumsq = nullptr;
  h.residual_out = h.sumsq_out = f;
  h.kernel = LutKernel::kTensorCore;
  ExpectRejected(h, "bf16 only");
  h.dtype = ActivationType::kBFloat16;
  h.deferred_sumsq = nullptr;
  h.residual_out = h.sumsq_out = nullptr;
  h.deferred_sumsq = f + 1;  // 4-byte offset
  ExpectRejected(h, "16-byte aligned");
}

#endif  // FLUTE_HAVE_CUDA

}  // namespace
}  // namespace flute::lut
