// The CUDA LUT-GEMM against the CPU ReferenceMatmul, on fresh random inputs every run, over
// bits x group size x dtype x M, with the output poisoned before each call. Skips with a
// message when the build has no CUDA or the machine has no GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/lut_format.h"
#include "kernels/llama_ops.h"
#include "kernels/lut_gemm.h"
#include "kernels/lut_gemm_rows16.h"
#include "kernels/lut_gemm_strip.h"
#include "tests/kernels/gpu_test_util.h"
#include "tests/kernels/lut_problem_util.h"

#ifdef FLUTE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace flute::lut {
namespace {

#ifndef FLUTE_HAVE_CUDA
TEST(LutGemmGpuTest, SkippedWithoutCuda) {
  EXPECT_FALSE(LaunchLutGemm(LutGemmParams{}, nullptr).ok());
  GTEST_SKIP() << "built without CUDA: the GPU LUT-GEMM tests need nvcc at build time";
}
#else

#define REQUIRE_GPU() REQUIRE_GPU_FOR("LUT-GEMM")
using flute::testing::ActivationName;
using flute::testing::DeviceBuffer;
using flute::testing::FloatToHalf;
using flute::testing::FromActivationBits;
using flute::testing::HalfToFloat;
using flute::testing::ScopedEnv;
using flute::testing::ToActivationBits;

// A random quantized matrix on the host and the device, and the CPU reference product
// (tests/kernels/lut_problem_util.h, shared with the tensor-core kernel's tests).
using Problem = flute::testing::LutProblem;
Problem MakeProblem(const LutShape& s, std::mt19937& rng) { return flute::testing::MakeLutProblem(s, rng); }
std::vector<float> Reference(const Problem& p, const std::vector<float>& x, int64_t m) {
  return flute::testing::ReferenceY(p, x, m);
}

// How a test launches the kernel: forced split count, kernel choice, PDL.
struct LaunchChoice {
  int split_k = 0;
  LutKernel kernel = LutKernel::kAuto;
  bool pdl = false;
  bool early_weights = false;
};

LutGemmParams MakeParams(const Problem& p, ActivationType dtype, int64_t m, const LaunchChoice& how) {
  LutGemmParams params;
  params.shape = p.shape;
  params.dtype = dtype;
  params.m = m;
  params.split_k = how.split_k;
  params.kernel = how.kernel;
  params.pdl = how.pdl;
  params.early_weights = how.early_weights;
  params.packed = static_cast<const uint8_t*>(p.d_packed->ptr);
  params.scales = static_cast<const uint16_t*>(p.d_scales->ptr);
  params.table = static_cast<const float*>(p.d_table->ptr);
  return params;
}

// Runs the kernel once on x (floats exactly representable in dtype), poisoning y first.
::testing::AssertionResult RunGpu(const Problem& p, ActivationType dtype, const std::vector<float>& x,
                                  int64_t m, const LaunchChoice& how, std::vector<uint16_t>* y_bits) {
  const LutShape& s = p.shape;
  std::vector<uint16_t> xb(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    xb[i] = ToActivationBits(dtype, x[i]);
  }
  DeviceBuffer d_x(xb.size() * 2), d_y(static_cast<size_t>(m * s.n) * 2);
  LutGemmParams params = MakeParams(p, dtype, m, how);
  params.x = d_x.ptr;
  params.y = d_y.ptr;
  // Workspace for the forced split too: the automatic size may be smaller.
  const int split_k = how.split_k;
  const size_t ws_bytes = std::max({LutGemmWorkspaceBytes(s, m), size_t{256},
                                    split_k > 0 ? LutGemmWorkspaceBytesForSplits(s, m, split_k) : 0});
  DeviceBuffer d_ws(ws_bytes);
  cudaMemset(d_ws.ptr, 0, ws_bytes);
  params.workspace = d_ws.ptr;
  params.workspace_bytes = ws_bytes;
  cudaMemcpy(d_x.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
  cudaMemset(d_y.ptr, 0xFF, static_cast<size_t>(m * s.n) * 2);  // NaN in fp16 and bf16
  const absl::Status st = LaunchLutGemm(params, nullptr);
  if (!st.ok()) return ::testing::AssertionFailure() << st;
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) return ::testing::AssertionFailure() << cudaGetErrorString(err);
  y_bits->resize(static_cast<size_t>(m * s.n));
  cudaMemcpy(y_bits->data(), d_y.ptr, y_bits->size() * 2, cudaMemcpyDeviceToHost);
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult RunGpu(const Problem& p, ActivationType dtype, const std::vector<float>& x,
                                  int64_t m, int split_k, std::vector<uint16_t>* y_bits) {
  LaunchChoice how;
  how.split_k = split_k;
  return RunGpu(p, dtype, x, m, how, y_bits);
}

std::vector<float> RandomX(ActivationType dtype, int64_t m, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(m * k));
  for (auto& v : x) {
    const float f = normal(rng);
    v = FromActivationBits(dtype, ToActivationBits(dtype, f));
  }
  return x;
}

// ‖y − ref‖ / ‖ref‖ with every element written and finite.
::testing::AssertionResult Compare(ActivationType dtype, const std::vector<uint16_t>& y_bits,
                                   const std::vector<float>& ref, double* err_out, double tol_scale = 1.0) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const float y = FromActivationBits(dtype, y_bits[i]);
    if (!std::isfinite(y)) return ::testing::AssertionFailure() << "element " << i << " not written/finite";
    num += (static_cast<double>(y) - ref[i]) * (static_cast<double>(y) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  const double err = std::sqrt(num / std::max(den, 1e-30));
  *err_out = err;
  const double tol = tol_scale * (dtype == ActivationType::kFloat16 ? 2e-3 : 1.6e-2);
  if (err > tol) return ::testing::AssertionFailure() << "normalized error " << err << " > " << tol;
  return ::testing::AssertionSuccess();
}

void CheckShapeAllM(const LutShape& s, const std::vector<int64_t>& ms, const LaunchChoice& how,
                    std::mt19937& rng) {
  Problem p = MakeProblem(s, rng);
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    double worst = 0;
    for (int64_t m : ms) {
      std::vector<float> x = RandomX(dtype, m, s.k, rng);
      std::vector<uint16_t> y;
      ASSERT_TRUE(RunGpu(p, dtype, x, m, how, &y));
      double err = 0;
      EXPECT_TRUE(Compare(dtype, y, Reference(p, x, m), &err))
          << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size << " " << ActivationName(dtype)
          << " m=" << m << " split_k=" << how.split_k << " kernel=" << static_cast<int>(how.kernel);
      worst = std::max(worst, err);
    }
    std::printf("n=%lld k=%lld b=%d G=%d %s split_k=%d kernel=%d: worst normalized error %.2e over %zu M values\n",
                static_cast<long long>(s.n), static_cast<long long>(s.k), s.bits, s.group_size,
                ActivationName(dtype), how.split_k, static_cast<int>(how.kernel), worst, ms.size());
  }
}

void CheckShapeAllM(const LutShape& s, const std::vector<int64_t>& ms, int split_k, std::mt19937& rng) {
  LaunchChoice how;
  how.split_k = split_k;
  CheckShapeAllM(s, ms, how, rng);
}

const std::vector<int64_t> kAllM = {1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 128, 256, 512};

TEST(LutGemmGpuTest, SmallShapesEveryBitsGroupDtypeAndM) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int bits : {2, 3, 4}) {
    for (int g : {32, 64, 128, 256}) {
      const int64_t kmin = std::max(128, g);
      CheckShapeAllM({16, kmin, bits, g}, kAllM, 0, rng);  // the smallest allowed shape
      CheckShapeAllM({80, 768, bits, g}, kAllM, 0, rng);   // partial block of rows
      CheckShapeAllM({512, 1536, bits, g}, kAllM, 0, rng);  // man-page model's down proj
    }
  }
}

TEST(LutGemmGpuTest, ManPageShapes) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  for (auto nk : std::vector<std::pair<int64_t, int64_t>>{{512, 512}, {128, 512}, {1536, 512}, {4096, 512}}) {
    CheckShapeAllM({nk.first, nk.second, 4, 128}, {1, 7, 64, 100}, 0, rng);
  }
}

TEST(LutGemmGpuTest, ForcedSplitKIncludingUnevenSplits) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int split : {2, 3, 5, 12}) {
    CheckShapeAllM({256, 1536, 4, 128}, {1, 8, 17, 64, 100}, split, rng);
    CheckShapeAllM({96, 1536, 3, 32}, {1, 33}, split, rng);
  }
}

TEST(LutGemmGpuTest, LlamaShapes) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  const std::vector<int64_t> ms = {1, 2, 7, 16, 33, 64, 128};
  CheckShapeAllM({4096, 4096, 4, 128}, kAllM, 0, rng);
  CheckShapeAllM({6144, 4096, 4, 128}, ms, 0, rng);
  CheckShapeAllM({28672, 4096, 3, 128}, ms, 0, rng);
  CheckShapeAllM({4096, 14336, 2, 128}, ms, 0, rng);
  CheckShapeAllM({10240, 8192, 4, 64}, {1, 16, 64}, 0, rng);
  CheckShapeAllM({8192, 28672, 4, 128}, {1, 16}, 0, rng);
  CheckShapeAllM({128256, 4096, 4, 128}, {1, 16}, 0, rng);
}

// Split calls of different shapes share one workspace, as in the engine: a call with few
// output tiles (its partials right after the counters) and then one with many tiles (more
// counters) must not read the first call's partials as counts.
TEST(LutGemmGpuTest, SplitCallsOfDifferentShapesShareAWorkspace) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  Problem few = MakeProblem({256, 2048, 4, 128}, rng);     // 2 column blocks
  Problem many = MakeProblem({16384, 1024, 4, 128}, rng);  // 128 column blocks
  const int64_t m = 8;
  const size_t ws_bytes = std::max(LutGemmWorkspaceBytesForSplits(few.shape, m, 4),
                                   LutGemmWorkspaceBytesForSplits(many.shape, m, 2));
  DeviceBuffer d_ws(ws_bytes), d_x(m * 2048 * 2), d_y_few(m * 256 * 2), d_y_many(m * 16384 * 2);
  ASSERT_EQ(cudaMemset(d_ws.ptr, 0, ws_bytes), cudaSuccess);
  const std::vector<float> x = RandomX(ActivationType::kFloat16, m, 2048, rng);
  std::vector<uint16_t> xb(x.size());
  for (size_t i = 0; i < x.size(); ++i) xb[i] = FloatToHalf(x[i]);
  ASSERT_EQ(cudaMemcpy(d_x.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  std::vector<float> x_many(m * 1024);  // the first 1024 columns of each row
  for (int64_t r = 0; r < m; ++r) std::copy_n(&x[r * 2048], 1024, &x_many[r * 1024]);
  std::vector<uint16_t> xb_many(x_many.size());
  for (size_t i = 0; i < x_many.size(); ++i) xb_many[i] = FloatToHalf(x_many[i]);
  DeviceBuffer d_x_many(xb_many.size() * 2);
  ASSERT_EQ(cudaMemcpy(d_x_many.ptr, xb_many.data(), xb_many.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  LaunchChoice split4, split2;
  split4.split_k = 4;
  split2.split_k = 2;
  for (int rep = 0; rep < 3; ++rep) {
    LutGemmParams a = MakeParams(few, ActivationType::kFloat16, m, split4);
    a.x = d_x.ptr;
    a.y = d_y_few.ptr;
    a.workspace = d_ws.ptr;
    a.workspace_bytes = ws_bytes;
    LutGemmParams b = MakeParams(many, ActivationType::kFloat16, m, split2);
    b.x = d_x_many.ptr;
    b.y = d_y_many.ptr;
    b.workspace = d_ws.ptr;
    b.workspace_bytes = ws_bytes;
    ASSERT_EQ(cudaMemset(d_y_few.ptr, 0xFF, m * 256 * 2), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_y_many.ptr, 0xFF, m * 16384 * 2), cudaSuccess);
    ASSERT_TRUE(LaunchLutGemm(a, nullptr).ok());
    ASSERT_TRUE(LaunchLutGemm(b, nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint16_t> y_few(m * 256), y_many(m * 16384);
    cudaMemcpy(y_few.data(), d_y_few.ptr, y_few.size() * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(y_many.data(), d_y_many.ptr, y_many.size() * 2, cudaMemcpyDeviceToHost);
    double err = 0;
    ASSERT_TRUE(Compare(ActivationType::kFloat16, y_few, Reference(few, x, m), &err)) << "rep " << rep;
    ASSERT_TRUE(Compare(ActivationType::kFloat16, y_many, Reference(many, x_many, m), &err)) << "rep " << rep;
  }
}

TEST(LutGemmGpuTest, DeterministicBitwiseRunToRun) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int split : {0, 4}) {
    Problem p = MakeProblem({4096, 4096, 4, 128}, rng);
    for (int64_t m : {1, 16, 33}) {
      std::vector<float> x = RandomX(ActivationType::kBFloat16, m, 4096, rng);
      std::vector<uint16_t> first, again;
      ASSERT_TRUE(RunGpu(p, ActivationType::kBFloat16, x, m, split, &first));
      for (int rep = 0; rep < 5; ++rep) {
        ASSERT_TRUE(RunGpu(p, ActivationType::kBFloat16, x, m, split, &again));
        ASSERT_EQ(first, again) << "m=" << m << " split_k=" << split << " rep " << rep;
      }
    }
  }
}

// A few launches of every path (each bits, G 32/128, M tiles 16/32/64/128, split or not, strip), small
// enough for compute-sanitizer memcheck/racecheck: --gtest_filter=*SanitizerSubset*.
TEST(LutGemmGpuTest, SanitizerSubset) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int bits : {2, 3, 4}) {
    for (int g : {32, 128}) {
      for (int split : {0, 3}) {
        Problem p = MakeProblem({80, 768, bits, g}, rng);
        for (int64_t m : {1, 8, 17, 33, 100}) {  // 8-100 with split 0: the tensor-core kernel
          std::vector<float> x = RandomX(ActivationType::kFloat16, m, 768, rng);
          std::vector<uint16_t> y;
          ASSERT_TRUE(RunGpu(p, ActivationType::kFloat16, x, m, split, &y));
          double err = 0;
          EXPECT_TRUE(Compare(ActivationType::kFloat16, y, Reference(p, x, m), &err));
        }
      }
      LaunchChoice tc_split;  // the tensor-core kernel with a forced split (its reduction)
      tc_split.kernel = LutKernel::kTensorCore;
      tc_split.split_k = 2;
      tc_split.pdl = tc_split.early_weights = bits == 4;  // (all prologue codes before the wait)
      {
        Problem p = MakeProblem({80, 768, bits, g}, rng);
        for (int64_t m : {12, 40, 100}) {
          std::vector<float> x = RandomX(ActivationType::kFloat16, m, 768, rng);
          std::vector<uint16_t> y;
          ASSERT_TRUE(RunGpu(p, ActivationType::kFloat16, x, m, tc_split, &y));
          double err = 0;
          EXPECT_TRUE(Compare(ActivationType::kFloat16, y, Reference(p, x, m), &err));
        }
      }
      LaunchChoice strip;  // the persistent-strip kernel, 2 and 1 tiles per warp
      strip.kernel = LutKernel::kStrip;
      for (int64_t k : {2048, 1024}) {
        Problem p = MakeProblem({80, k, bits, g}, rng);
        for (int64_t signed_m : {1, 8, -8}) {  // -8: m = 8 with X resident (copied by cp.async)
          ScopedEnv env("FLUTE_LUT_STRIP_X", signed_m < 0 ? "resident" : "");
          const int64_t m = std::abs(signed_m);
          std::vector<float> x = RandomX(ActivationType::kFloat16, m, k, rng);
          std::vector<uint16_t> y;
          ASSERT_TRUE(RunGpu(p, ActivationType::kFloat16, x, m, strip, &y));
          double err = 0;
          EXPECT_TRUE(Compare(ActivationType::kFloat16, y, Reference(p, x, m), &err));
        }
      }
    }
  }
}

// The persistent-strip kernel (M <= 8) forced, over every bits x G x dtype, in each of its
// (tiles per warp, pipeline stages) configurations: one strip, a few, and more strips than
// resident blocks (each block loops), K with and without the 2-tile stage (K % 2048). M = 1 runs
// the one-row instances (X staged in the one-row order), with and without early weights.
TEST(LutGemmGpuTest, StripKernelEveryBitsGroupDtypeAndConfig) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  LaunchChoice strip, early;
  strip.kernel = early.kernel = LutKernel::kStrip;
  early.pdl = early.early_weights = true;  // every prologue stage's weights before the (no-op) wait
  const std::vector<int64_t> ms = {1, 2, 3, 5, 7, 8};
  for (const char* config : {"", "1,2", "1,3", "1,4", "2,2", "2,3", "2,4"}) {
    ScopedEnv env("FLUTE_LUT_STRIP", config);
    std::printf("FLUTE_LUT_STRIP=\"%s\"\n", config);
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 64, 128, 256}) {
        CheckShapeAllM({16, 1024, bits, g}, ms, strip, rng);
        CheckShapeAllM({400, 2048, bits, g}, ms, strip, rng);
        CheckShapeAllM({272, 3072, bits, g}, {1, 8}, strip, rng);
      }
      CheckShapeAllM({9600, 1024, bits, 128}, {1, 8}, strip, rng);
      CheckShapeAllM({16, 1024, bits, 64}, {1, 8}, early, rng);   // fewer stages than the prologue
      CheckShapeAllM({400, 3072, bits, 128}, {1, 8}, early, rng);
      CheckShapeAllM({9600, 1024, bits, 128}, {1, 8}, early, rng);
    }
  }
}

// One-hot rows of X pick single weights: row r = e_{k_r}, so y[r, n] is exactly one product,
// T(float(T(table[code[n, k_r]])) * scale[n, k_r / G]) (a one-product MMA sum is exact, and every
// other group and warp adds +0.0f). Bitwise, at random code positions of every lookup word: the
// strip kernel's pair tables (2 bits: the quad table; 3 bits: the wide table over two bit planes)
// for each bits x G x dtype, one and eight rows.
void CheckOneHotRows(const LutShape& s, ActivationType dtype, int64_t m, const LaunchChoice& how, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size
                                    << " " << ActivationName(dtype) << " m=" << m);
  Problem p = MakeProblem(s, rng);
  std::vector<uint8_t> codes(static_cast<size_t>(s.n * s.k));
  lut::UnpackCodes(s, p.packed.data(), codes.data());
  auto round_t = [&](float f) {
    return FromActivationBits(dtype, ToActivationBits(dtype, f));
  };
  // Each run covers m positions; 64 runs' worth of random k positions.
  for (int run = 0; run < 64 / m; ++run) {
    std::vector<int64_t> ks(m);
    std::vector<float> x(static_cast<size_t>(m * s.k), 0.0f);
    for (int64_t r = 0; r < m; ++r) {
      ks[r] = static_cast<int64_t>(rng() % s.k);
      x[r * s.k + ks[r]] = 1.0f;
    }
    std::vector<uint16_t> y;
    ASSERT_TRUE(RunGpu(p, dtype, x, m, how, &y));
    int64_t wrong = 0;
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t n = 0; n < s.n; ++n) {
        const float w = round_t(p.table[codes[n * s.k + ks[r]]]);
        const float scale = HalfToFloat(p.scales[n * (s.k / s.group_size) + ks[r] / s.group_size]);
        const float want = round_t(w * scale);
        const float got = FromActivationBits(dtype, y[r * s.n + n]);
        if (got != want && wrong++ < 3) {
          ADD_FAILURE() << "y[" << r << ", " << n << "] (k = " << ks[r] << ", code " << int{codes[n * s.k + ks[r]]}
                        << "): expected " << want << ", got " << got;
        }
      }
    }
    ASSERT_EQ(wrong, 0) << "one-hot outputs that are not the dequantized weight";
  }
}

TEST(LutGemmGpuTest, StripKernelOneHotRowsAreTheDequantizedWeights) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  LaunchChoice strip;
  strip.kernel = LutKernel::kStrip;
  for (int bits : {2, 3, 4}) {
    for (int g : {32, 128}) {
      for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
        for (int64_t m : {1, 8}) {
          CheckOneHotRows({400, 2048, bits, g}, dtype, m, strip, rng);
          CheckOneHotRows({272, 3072, bits, g}, dtype, m, strip, rng);
        }
      }
    }
  }
}

// X [m, k] (fresh values from RandomX) in dtype on the device.
void UploadX(ActivationType dtype, const std::vector<float>& x, void* d_x) {
  std::vector<uint16_t> xb(x.size());
  for (size_t i = 0; i < x.size(); ++i) xb[i] = ToActivationBits(dtype, x[i]);
  cudaMemcpy(d_x, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
}

// One LaunchLutGemm of p on the device X d_x into a poisoned output; y: [m, n] ([m, n / 2] with
// the SwiGLU epilogue), copied back.
void RunOnDeviceX(const Problem& p, ActivationType dtype, int64_t m, const LaunchChoice& how, bool swiglu,
                  const void* d_x, std::vector<uint16_t>* y) {
  const int64_t n_out = swiglu ? p.shape.n / 2 : p.shape.n;
  DeviceBuffer d_y(m * n_out * 2);
  LutGemmParams params = MakeParams(p, dtype, m, how);
  params.x = d_x;
  params.y = d_y.ptr;
  params.swiglu = swiglu;
  cudaMemset(d_y.ptr, 0xFF, m * n_out * 2);
  const absl::Status st = LaunchLutGemm(params, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  y->resize(m * n_out);
  cudaMemcpy(y->data(), d_y.ptr, y->size() * 2, cudaMemcpyDeviceToHost);
}

// Plain strip calls of 2-8 rows keep X resident in shared memory where 2 blocks per SM still
// fit (copied once per block) instead of staging it with every stage (by default only where the
// blocks take 1.5 strips or more; FLUTE_LUT_STRIP_X=resident wherever it fits): bitwise the same
// outputs as the staged layout (FLUTE_LUT_STRIP_X=staged), and right against the CPU reference, over
// every bits x G x dtype, one and two tiles per warp, blocks looping over strips, with PDL and
// early weights (X then joins the oldest copy group), and with the SwiGLU epilogue.
void CheckResidentXEqualsStagedX(const LutShape& s, ActivationType dtype, const std::vector<int64_t>& ms,
                                 bool swiglu, const LaunchChoice& how, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size
                                    << " " << ActivationName(dtype) << " swiglu=" << swiglu << " pdl=" << how.pdl);
  Problem p = MakeProblem(s, rng);
  const int64_t n_out = swiglu ? s.n / 2 : s.n;
  for (int64_t m : ms) {
    const std::vector<float> x = RandomX(dtype, m, s.k, rng);
    DeviceBuffer d_x(x.size() * 2);
    UploadX(dtype, x, d_x.ptr);
    std::vector<uint16_t> y[3];  // staged, resident where it fits, the default rule
    for (int resident = 0; resident < 3; ++resident) {
      ScopedEnv env("FLUTE_LUT_STRIP_X", resident == 0 ? "staged" : resident == 1 ? "resident" : "");
      RunOnDeviceX(p, dtype, m, how, swiglu, d_x.ptr, &y[resident]);
      ASSERT_FALSE(::testing::Test::HasFatalFailure());
    }
    for (size_t i = 0; i < y[0].size(); ++i) {
      ASSERT_EQ(y[1][i], y[0][i]) << "m=" << m << " element " << i << " (row " << i / n_out << ")";
      ASSERT_EQ(y[2][i], y[0][i]) << "default rule, m=" << m << " element " << i;
    }
    if (!swiglu) {
      double err = 0;
      EXPECT_TRUE(Compare(dtype, y[1], Reference(p, x, m), &err)) << "m=" << m;
    }
  }
}

TEST(LutGemmGpuTest, StripKernelResidentXIsBitwiseTheStagedX) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  LaunchChoice strip, early;
  strip.kernel = early.kernel = LutKernel::kStrip;
  early.pdl = early.early_weights = true;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 64, 128, 256}) {
        CheckResidentXEqualsStagedX({16, 1024, bits, g}, dtype, {2, 8}, false, strip, rng);
        CheckResidentXEqualsStagedX({400, 2048, bits, g}, dtype, {2, 3, 5}, false, strip, rng);
        CheckResidentXEqualsStagedX({272, 3072, bits, g}, dtype, {4, 7}, false, early, rng);
      }
      CheckResidentXEqualsStagedX({9600, 1024, bits, 128}, dtype, {2, 8}, false, early, rng);
      CheckResidentXEqualsStagedX({1040, 3072, bits, 64}, dtype, {2, 5}, true, strip, rng);
    }
    // LLaMA-3 8B shapes at decode batch sizes 2-4 (o, qkv, gate/up with SwiGLU).
    CheckResidentXEqualsStagedX({4096, 4096, 4, 128}, dtype, {2, 4}, false, early, rng);
    CheckResidentXEqualsStagedX({6144, 4096, 4, 128}, dtype, {3}, false, strip, rng);
    CheckResidentXEqualsStagedX({28672, 4096, 4, 128}, dtype, {2, 4}, true, early, rng);
  }
}

// Plain calls of 7-8 rows at 4 bits and K = 8192 (OneTilePerWarpForResidentX, session 49): two
// stages of two tiles per warp do not fit beside a resident X of 112-128 KB and the 32 KB pair
// table, so the plan of 2 groups takes one tile per warp and keeps X resident (at 6 rows two
// tiles per warp still fit); FLUTE_LUT_STRIP_TPW1=off stages X; the engine's launches (norm
// prologue, early weights) keep their plans. With 57344 features auto gives the strip kernel
// these calls. The outputs are right against the CPU reference, in both dtypes and at G = 64.
TEST(LutGemmGpuTest, StripPlanTakesOneTilePerWarpWhereXFillsSharedMemory) {
  REQUIRE_GPU();
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  StripLaunch plain, norm;
  norm.fusion.norm_prologue = true;
  norm.early_weights = true;
  const LutShape gate_up{57344, 8192, 4, 128};
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int64_t m : {7, 8}) {
      SCOPED_TRACE(::testing::Message() << ActivationName(dtype) << " m=" << m);
      const StripPlan p = MakeStripPlan(gate_up, dtype, m, plain, sms);
      EXPECT_TRUE(p.copy_x);
      EXPECT_EQ(p.tiles_per_warp, 1);
      EXPECT_GE(p.groups, 2);
      EXPECT_GE(p.blocks_per_sm * p.groups, 2);
      EXPECT_EQ(MakeStripPlan(gate_up, dtype, m, norm, sms).tiles_per_warp, 2);
      ScopedEnv env("FLUTE_LUT_STRIP_TPW1", "off");
      EXPECT_FALSE(MakeStripPlan(gate_up, dtype, m, plain, sms).copy_x);
    }
    EXPECT_EQ(MakeStripPlan(gate_up, dtype, 6, plain, sms).tiles_per_warp, 2);
  }
  LutGemmParams auto_call;
  auto_call.dtype = ActivationType::kFloat16;
  auto_call.m = 8;
  auto_call.shape = gate_up;
  EXPECT_TRUE(UsesStripKernel(auto_call)) << "8192x57344, 8 rows";

  // 128 strips: the rule that keeps X resident only for pipelines of 1.5 strips or more would stage
  // it, so FLUTE_LUT_STRIP_X=resident takes it wherever it fits.
  std::mt19937 rng(std::random_device{}());
  ScopedEnv resident("FLUTE_LUT_STRIP_X", "resident");
  LaunchChoice strip;
  strip.kernel = LutKernel::kStrip;
  for (const LutShape s : {LutShape{2048, 8192, 4, 128}, LutShape{2048, 8192, 4, 64}}) {
    Problem p = MakeProblem(s, rng);
    for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
      for (int64_t m : {7, 8}) {
        SCOPED_TRACE(::testing::Message() << "G=" << s.group_size << " " << ActivationName(dtype) << " m=" << m);
        const StripPlan plan = MakeStripPlan(s, dtype, m, plain, sms);
        ASSERT_TRUE(plan.copy_x && plan.tiles_per_warp == 1 && plan.groups >= 2)
            << "tpw " << plan.tiles_per_warp << " groups " << plan.groups << " copy_x " << plan.copy_x;
        const std::vector<float> x = RandomX(dtype, m, s.k, rng);
        std::vector<uint16_t> y;
        ASSERT_TRUE(RunGpu(p, dtype, x, m, strip, &y));
        double err = 0;
        EXPECT_TRUE(Compare(dtype, y, Reference(p, x, m), &err)) << "normalized error " << err;
      }
    }
  }
}

// Each output row of the strip kernel is the same bits whatever M (<= 8) is: the summation
// order depends on the shape only. (M = 1 runs the one-row instances, whose X is staged in
// another order and read by LDS.128 instead of ldmatrix: the same B registers.)
TEST(LutGemmGpuTest, StripKernelRowsDoNotDependOnM) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  Problem p = MakeProblem({4096, 4096, 4, 128}, rng);
  LaunchChoice strip;
  strip.kernel = LutKernel::kStrip;
  std::vector<float> x8 = RandomX(ActivationType::kBFloat16, 8, 4096, rng);
  std::vector<uint16_t> y8, ym;
  ASSERT_TRUE(RunGpu(p, ActivationType::kBFloat16, x8, 8, strip, &y8));
  for (int64_t m = 1; m < 8; ++m) {
    std::vector<float> xm(x8.begin(), x8.begin() + m * 4096);
    ASSERT_TRUE(RunGpu(p, ActivationType::kBFloat16, xm, m, strip, &ym));
    ASSERT_TRUE(std::equal(ym.begin(), ym.end(), y8.begin())) << "m=" << m;
  }
}

// One-row calls load their X fragments in lanes 0-3 only (the B column whose products are
// stored; the other lanes keep zeros): bitwise what all 32 lanes loading gives
// (FLUTE_LUT_STRIP_M1X=all), and right against the CPU reference, for every bits x G x dtype,
// with 2 and 1 tiles per warp (K = 2048, 3072) and several strips per block (N = 9600).
TEST(LutGemmGpuTest, StripKernelOneRowXInFourLanesIsBitwiseAllLanes) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  LaunchChoice strip;
  strip.kernel = LutKernel::kStrip;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 64, 128, 256}) {
        for (const LutShape s : {LutShape{400, 2048, bits, g}, LutShape{272, 3072, bits, g},
                                 LutShape{9600, 1024, bits, g}}) {
          SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << bits << " G=" << g << " "
                                            << ActivationName(dtype));
          Problem p = MakeProblem(s, rng);
          std::vector<float> x = RandomX(dtype, 1, s.k, rng);
          std::vector<uint16_t> y4, y32;
          ASSERT_TRUE(RunGpu(p, dtype, x, 1, strip, &y4));
          {
            ScopedEnv env("FLUTE_LUT_STRIP_M1X", "all");
            ASSERT_TRUE(RunGpu(p, dtype, x, 1, strip, &y32));
          }
          ASSERT_EQ(y4, y32);
          double err = 0;
          EXPECT_TRUE(Compare(dtype, y4, Reference(p, x, 1), &err));
        }
      }
    }
  }
}

// The strip plan's first choice of pipeline depth (ShallowFirst, lut_gemm_strip.cu): 2 stages for
// plain 3-bit calls of one row and for 2- and 3-bit launches with early weights; 4 bits (and
// plain 3-bit calls of more rows) keep the deeper choice, and FLUTE_LUT_STRIP_SHALLOW=off
// restores it everywhere. The depth changes no bits (tiles per warp, so the summation order,
// depend on the shape only): 3-bit M = 1 both ways, bitwise.
TEST(LutGemmGpuTest, StripPlanTakesTwoStagesFirstAtTwoAndThreeBits) {
  REQUIRE_GPU();
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  StripLaunch plain, early;
  early.early_weights = true;
  const auto stages = [&](int bits, int64_t m, const StripLaunch& launch) {
    return MakeStripPlan({28672, 4096, bits, 128}, ActivationType::kBFloat16, m, launch, sms).stages;
  };
  EXPECT_EQ(stages(3, 1, plain), 2);
  EXPECT_EQ(stages(3, 1, early), 2);
  EXPECT_EQ(stages(2, 1, early), 2);
  EXPECT_EQ(stages(2, 4, early), 2);
  EXPECT_GT(stages(4, 1, plain), 2);
  EXPECT_GT(stages(4, 1, early), 2);
  {
    ScopedEnv env("FLUTE_LUT_STRIP_SHALLOW", "off");
    EXPECT_GT(stages(3, 1, plain), 2);
    EXPECT_GT(stages(3, 1, early), 2);
    EXPECT_GT(stages(2, 1, early), 2);
  }
  std::mt19937 rng(std::random_device{}());
  Problem p = MakeProblem({4096, 4096, 3, 128}, rng);
  LaunchChoice strip;
  strip.kernel = LutKernel::kStrip;
  const std::vector<float> x = RandomX(ActivationType::kBFloat16, 1, 4096, rng);
  std::vector<uint16_t> shallow, deep;
  ASSERT_TRUE(RunGpu(p, ActivationType::kBFloat16, x, 1, strip, &shallow));
  {
    ScopedEnv env("FLUTE_LUT_STRIP_SHALLOW", "off");
    ASSERT_TRUE(RunGpu(p, ActivationType::kBFloat16, x, 1, strip, &deep));
  }
  EXPECT_EQ(shallow, deep);
}

// 4-bit plain calls of 3-4 rows with X staged take 3-4 stages at one block per SM where two
// blocks of 2 stages would leave block slots idle (DeepFirst, lut_gemm_strip.cu: 640 strips of
// 8192x10240 over 264 slots), and keep 2 stages where two blocks fill the SMs as well (256 strips
// of 4096x4096); 1-2 rows, early weights and FLUTE_LUT_STRIP_DEEP=off keep the plan without it.
// The depth changes no bits: M = 4 both ways, bitwise.
TEST(LutGemmGpuTest, StripPlanTakesDeeperPipelinesAtFourBitsAndThreeOrFourRows) {
  REQUIRE_GPU();
  // The one-group plans (with groups these calls keep X resident instead: the next test).
  ScopedEnv one_group("FLUTE_LUT_STRIP_GROUPS", "1");
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  const LutShape shape{10240, 8192, 4, 128};  // X [4][8200] does not fit beside 2 blocks' stages
  StripLaunch plain, early;
  early.early_weights = true;
  const auto plan = [&](int64_t m, const StripLaunch& launch) {
    return MakeStripPlan(shape, ActivationType::kFloat16, m, launch, sms);
  };
  for (int64_t m : {3, 4}) {
    const StripPlan deep = plan(m, plain);
    EXPECT_FALSE(deep.copy_x) << "m=" << m;
    EXPECT_GE(deep.stages, 3) << "m=" << m;
    ScopedEnv env("FLUTE_LUT_STRIP_DEEP", "off");
    const StripPlan off = plan(m, plain);
    EXPECT_EQ(off.stages, 2) << "m=" << m;
    EXPECT_EQ(off.tiles_per_warp, deep.tiles_per_warp) << "m=" << m;
  }
  if (sms == 132) {  // (the strip and slot counts above are the H100's)
    const StripPlan square = MakeStripPlan({4096, 4096, 4, 128}, ActivationType::kFloat16, 4, plain, sms);
    EXPECT_FALSE(square.copy_x);
    EXPECT_EQ(square.stages, 2);
  }
  for (int64_t m : {1, 2}) {
    const StripPlan with = plan(m, plain);
    ScopedEnv env("FLUTE_LUT_STRIP_DEEP", "off");
    const StripPlan without = plan(m, plain);
    EXPECT_EQ(with.stages, without.stages) << "m=" << m;
    EXPECT_EQ(with.copy_x, without.copy_x) << "m=" << m;
  }
  {
    const int early_stages = plan(4, early).stages;
    ScopedEnv env("FLUTE_LUT_STRIP_DEEP", "off");
    EXPECT_EQ(plan(4, early).stages, early_stages);
  }
  std::mt19937 rng(std::random_device{}());
  Problem p = MakeProblem(shape, rng);
  LaunchChoice strip;
  strip.kernel = LutKernel::kStrip;
  const std::vector<float> x = RandomX(ActivationType::kFloat16, 4, shape.k, rng);
  std::vector<uint16_t> deep, off;
  ASSERT_TRUE(RunGpu(p, ActivationType::kFloat16, x, 4, strip, &deep));
  {
    ScopedEnv env("FLUTE_LUT_STRIP_DEEP", "off");
    ASSERT_TRUE(RunGpu(p, ActivationType::kFloat16, x, 4, strip, &off));
  }
  EXPECT_EQ(deep, off);
  double err = 0;
  EXPECT_TRUE(Compare(ActivationType::kFloat16, deep, Reference(p, x, 4), &err));
}

// Strip groups (StripPlan::groups, lut_gemm_strip.cu): a block of 2-3 strip pipelines that share
// the pair table and a resident X. Forced with FLUTE_LUT_STRIP_GROUPS, the plan takes them (and
// keeps every group a strip: grid * groups <= strips), and the outputs are bitwise those of one
// group per block (the same warps sum the same tiles in the same order) and right against the
// CPU reference: every bits x G x dtype, X staged and resident, one and two tiles per warp,
// strip counts that the groups do not divide (25, 17), groups looping over strips (600), PDL with
// early weights, the SwiGLU epilogue, and M = 2-8.
void CheckGroupsEqualOneGroup(const LutShape& s, ActivationType dtype, const std::vector<int64_t>& ms, bool swiglu,
                              const LaunchChoice& how, std::mt19937& rng, int* grouped_launches) {
  SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size
                                    << " " << ActivationName(dtype) << " swiglu=" << swiglu << " pdl=" << how.pdl);
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  Problem p = MakeProblem(s, rng);
  for (int64_t m : ms) {
    const std::vector<float> x = RandomX(dtype, m, s.k, rng);
    DeviceBuffer d_x(x.size() * 2);
    UploadX(dtype, x, d_x.ptr);
    for (const char* x_rule : {"staged", "resident"}) {
      ScopedEnv env_x("FLUTE_LUT_STRIP_X", x_rule);
      std::vector<uint16_t> y[4];  // [groups]
      for (int groups = 1; groups <= 3; ++groups) {
        SCOPED_TRACE(::testing::Message() << "m=" << m << " X " << x_rule << " groups=" << groups);
        ScopedEnv env("FLUTE_LUT_STRIP_GROUPS", std::to_string(groups).c_str());
        StripLaunch launch;
        launch.early_weights = how.pdl && how.early_weights;
        const StripPlan plan = MakeStripPlan(s, dtype, m, launch, sms);
        ASSERT_GT(plan.grid, 0);
        ASSERT_LE(static_cast<int64_t>(plan.grid) * plan.groups, s.n / 16);
        // Groups that fit nowhere fall back to one (3 groups of 8 staged rows at k = 2048).
        ASSERT_TRUE(plan.groups == groups || plan.groups == 1) << plan.groups;
        if (plan.groups > 1) ++*grouped_launches;
        RunOnDeviceX(p, dtype, m, how, swiglu, d_x.ptr, &y[groups]);
        ASSERT_FALSE(::testing::Test::HasFatalFailure());
        if (groups > 1) {
          ASSERT_EQ(y[groups], y[1]);
        }
      }
      if (!swiglu && std::string(x_rule) == "staged") {
        double err = 0;
        EXPECT_TRUE(Compare(dtype, y[2], Reference(p, x, m), &err)) << "m=" << m;
      }
    }
  }
}

TEST(LutGemmGpuTest, StripKernelStripGroupsAreBitwiseOneGroup) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  LaunchChoice strip, early;
  strip.kernel = early.kernel = LutKernel::kStrip;
  early.pdl = early.early_weights = true;
  int grouped = 0;  // launches that ran 2-3 groups per block
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 64, 128, 256}) {
        CheckGroupsEqualOneGroup({400, 2048, bits, g}, dtype, {2, 3, 8}, false, strip, rng, &grouped);
        CheckGroupsEqualOneGroup({272, 3072, bits, g}, dtype, {4, 7}, false, strip, rng, &grouped);
      }
      CheckGroupsEqualOneGroup({9600, 1024, bits, 128}, dtype, {2, 5}, false, early, rng, &grouped);
      CheckGroupsEqualOneGroup({1040, 3072, bits, 64}, dtype, {2, 6}, true, strip, rng, &grouped);
    }
    // LLaMA-3 shapes: 4096x6144 at 2 rows, 8192x10240 at 4 (X [4][8200] resident).
    CheckGroupsEqualOneGroup({6144, 4096, 4, 128}, dtype, {2}, false, strip, rng, &grouped);
    CheckGroupsEqualOneGroup({10240, 8192, 4, 128}, dtype, {4}, false, strip, rng, &grouped);
  }
  // Of the 592 launches with 2 or 3 groups forced, most fit (not 3 groups of 8 staged rows).
  EXPECT_GT(grouped, 296);
  std::printf("strip launches with 2-3 groups per block: %d of 592\n", grouped);
}

// The plan takes 2-3 strip groups for plain calls of 2-8 rows where one group per block cannot
// keep X resident beside a second block and a grouped plan can (H100: 8192x57344 and 8192x10240 at
// 4 bits and 3-4 rows), never for one row, plain early weights or the residual epilogue, nor where
// one group already keeps X resident (8192x57344 2-bit at 2 rows); with the norm prologue where
// one group has one block per SM (70B shapes at 4 rows, not 8B's or 2 rows). From M = 5 the strip kernel takes the
// plain calls of n >= 16384 whose plan keeps X resident (4096x28672 at 8 rows), not those whose X
// does not fit (8192x57344 4-bit at 8 rows) nor the narrower shapes. The grouped launch is bitwise
// the one-group launch and right against the CPU reference.
// A few grouped launches for compute-sanitizer (memcheck, racecheck): 2 and 3 groups, X staged
// and resident, 5 rows, blocks whose groups loop over strips (9600 = 600 strips) and a strip count
// the groups do not divide (25).
TEST(LutGemmGpuTest, SanitizerSubsetStripGroups) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  LaunchChoice strip;
  strip.kernel = LutKernel::kStrip;
  int grouped = 0;
  CheckGroupsEqualOneGroup({400, 2048, 4, 128}, ActivationType::kBFloat16, {5}, false, strip, rng, &grouped);
  CheckGroupsEqualOneGroup({9600, 1024, 2, 64}, ActivationType::kFloat16, {3}, false, strip, rng, &grouped);
  EXPECT_GE(grouped, 6);
}

TEST(LutGemmGpuTest, StripPlanTakesGroupsWhereTheyKeepXResident) {
  REQUIRE_GPU();
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  if (sms != 132) GTEST_SKIP() << "the plans asserted here are the H100's (132 SMs); this GPU has " << sms;
  StripLaunch plain, early, fused;
  early.early_weights = true;
  fused.fusion.residual_epilogue = true;
  const LutShape big{57344, 8192, 4, 128}, wide{10240, 8192, 4, 128};
  for (int64_t m : {3, 4}) {
    for (const LutShape& s : {big, wide}) {
      SCOPED_TRACE(::testing::Message() << "n=" << s.n << " m=" << m);
      const StripPlan grouped = MakeStripPlan(s, ActivationType::kFloat16, m, plain, sms);
      EXPECT_GE(grouped.groups, 2);
      EXPECT_TRUE(grouped.copy_x);
      EXPECT_EQ(MakeStripPlan(s, ActivationType::kFloat16, m, early, sms).groups, 1);
      EXPECT_EQ(MakeStripPlan(s, ActivationType::kFloat16, m, fused, sms).groups, 1);
      ScopedEnv env("FLUTE_LUT_STRIP_GROUPS", "1");
      const StripPlan one = MakeStripPlan(s, ActivationType::kFloat16, m, plain, sms);
      EXPECT_EQ(one.groups, 1);
      EXPECT_FALSE(one.copy_x && one.blocks_per_sm >= 2);
    }
  }
  EXPECT_EQ(MakeStripPlan(big, ActivationType::kFloat16, 1, plain, sms).groups, 1);
  EXPECT_EQ(MakeStripPlan({57344, 8192, 2, 128}, ActivationType::kFloat16, 2, plain, sms).groups, 1);
  // The norm prologue (the engine's qkv and gate/up): groups where one group has one block per SM
  // (70B at 4 rows), not where it has two (8B).
  StripLaunch norm;
  norm.fusion.norm_prologue = true;
  norm.early_weights = true;
  EXPECT_GE(MakeStripPlan({10240, 8192, 4, 128}, ActivationType::kBFloat16, 4, norm, sms).groups, 2);
  EXPECT_GE(MakeStripPlan(big, ActivationType::kBFloat16, 4, norm, sms).groups, 2);
  EXPECT_EQ(MakeStripPlan({28672, 4096, 4, 128}, ActivationType::kBFloat16, 4, norm, sms).groups, 1);
  EXPECT_EQ(MakeStripPlan({10240, 8192, 4, 128}, ActivationType::kBFloat16, 2, norm, sms).groups, 1);

  LutGemmParams auto_call;
  auto_call.dtype = ActivationType::kFloat16;
  auto_call.m = 8;
  auto_call.shape = {28672, 4096, 4, 128};
  EXPECT_TRUE(UsesStripKernel(auto_call)) << "4096x28672, 8 rows";
  auto_call.shape = big;  // (one tile per warp keeps X resident: StripPlanTakesOneTilePerWarpWhereXFillsSharedMemory)
  EXPECT_TRUE(UsesStripKernel(auto_call)) << "8192x57344 4-bit, 8 rows";
  auto_call.shape = {8192, 8192, 4, 128};
  auto_call.m = 6;
  EXPECT_FALSE(UsesStripKernel(auto_call)) << "8192x8192, 6 rows";

  std::mt19937 rng(std::random_device{}());
  Problem p = MakeProblem(wide, rng);
  LaunchChoice how;  // auto
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    const std::vector<float> x = RandomX(dtype, 4, wide.k, rng);
    std::vector<uint16_t> grouped, one;
    ASSERT_TRUE(RunGpu(p, dtype, x, 4, how, &grouped));
    {
      ScopedEnv env("FLUTE_LUT_STRIP_GROUPS", "1");
      ASSERT_TRUE(RunGpu(p, dtype, x, 4, how, &one));
    }
    EXPECT_EQ(grouped, one) << ActivationName(dtype);
    double err = 0;
    EXPECT_TRUE(Compare(dtype, grouped, Reference(p, x, 4), &err)) << ActivationName(dtype);
  }
}

// Groups that take every strip in one round (OneRoundGroupedPlan, lut_gemm_strip.cu): on the H100
// the plain calls of 2-4 rows on 4096x6144 (384 strips) run 128 blocks of 3 groups with X resident,
// 4096x4096 and 14336x4096 (256 strips) 128 blocks of 2; not the engine's qkv (norm prologue, early
// weights), not 8192x8192 (512 strips: two rounds), not one row. From
// M = 5 the strip kernel takes the plain 3-group calls (4096x6144 at 6 rows), not 4096x4096. The
// launches are bitwise one group's and right against the CPU reference.
TEST(LutGemmGpuTest, StripPlanTakesOneRoundGroups) {
  REQUIRE_GPU();
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  if (sms != 132) GTEST_SKIP() << "the plans asserted here are the H100's (132 SMs); this GPU has " << sms;
  StripLaunch plain, norm;
  norm.fusion.norm_prologue = true;
  norm.early_weights = true;
  const LutShape qkv{6144, 4096, 4, 128}, square{4096, 4096, 4, 128}, down{4096, 14336, 4, 128};
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int64_t m : {2, 3, 4}) {
      SCOPED_TRACE(::testing::Message() << ActivationName(dtype) << " m=" << m);
      for (const auto& [shape, groups] : {std::pair{qkv, 3}, std::pair{square, 2}, std::pair{down, 2}}) {
        const StripPlan p = MakeStripPlan(shape, dtype, m, plain, sms);
        EXPECT_EQ(p.groups, groups) << "n=" << shape.n << " k=" << shape.k;
        EXPECT_TRUE(p.copy_x) << "n=" << shape.n << " k=" << shape.k;
        EXPECT_GE(static_cast<int64_t>(p.grid) * p.groups, shape.n / 16) << "n=" << shape.n << " k=" << shape.k;
      }
    }
    EXPECT_EQ(MakeStripPlan(qkv, dtype, 4, norm, sms).groups, 1);
    EXPECT_EQ(MakeStripPlan(qkv, dtype, 1, plain, sms).groups, 1);
    EXPECT_LT(MakeStripPlan({8192, 8192, 4, 128}, dtype, 2, plain, sms).groups, 3);
  }
  LutGemmParams auto_call;
  auto_call.dtype = ActivationType::kFloat16;
  auto_call.m = 6;
  auto_call.shape = qkv;
  EXPECT_TRUE(UsesStripKernel(auto_call)) << "4096x6144, 6 rows";
  auto_call.shape = square;
  EXPECT_FALSE(UsesStripKernel(auto_call)) << "4096x4096, 6 rows";

  std::mt19937 rng(std::random_device{}());
  LaunchChoice how;  // auto
  for (const LutShape& s : {qkv, square}) {
    Problem p = MakeProblem(s, rng);
    for (int64_t m : {3, 6}) {
      if (m == 6 && s.n != qkv.n) continue;
      for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
        SCOPED_TRACE(::testing::Message() << "n=" << s.n << " m=" << m << " " << ActivationName(dtype));
        const std::vector<float> x = RandomX(dtype, m, s.k, rng);
        std::vector<uint16_t> grouped, one;
        ASSERT_TRUE(RunGpu(p, dtype, x, m, how, &grouped));
        {
          LaunchChoice strip;
          strip.kernel = LutKernel::kStrip;
          ScopedEnv env("FLUTE_LUT_STRIP_GROUPS", "1");
          ASSERT_TRUE(RunGpu(p, dtype, x, m, strip, &one));
        }
        EXPECT_EQ(grouped, one);
        double err = 0;
        EXPECT_TRUE(Compare(dtype, grouped, Reference(p, x, m), &err));
      }
    }
  }
}

// The 16-row kernel (lut_gemm_rows16.cu, X in registers) takes the plain calls of 9-16 rows at
// k = 2048 and 4096 with 2 or 4 bits. Right against the CPU reference for every G and dtype; each
// row's bits the same at m = 9 and 12 as at 16 (the summation order depends on n and k only);
// bitwise run to run, with and without PDL; the SwiGLU epilogue bitwise the plain call followed by
// SwiGLU. Not 3 bits, other k, fused norms or forced splits (the tensor-core kernel keeps those).
void CheckRows16(const LutShape& s, ActivationType dtype, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size << " "
                                    << ActivationName(dtype));
  Problem p = MakeProblem(s, rng);
  LaunchChoice automatic, pdl;
  pdl.pdl = true;
  const std::vector<float> x = RandomX(dtype, 16, s.k, rng);
  std::vector<uint16_t> y16, again;
  ASSERT_TRUE(RunGpu(p, dtype, x, 16, automatic, &y16));
  double err = 0;
  EXPECT_TRUE(Compare(dtype, y16, Reference(p, x, 16), &err));
  ASSERT_TRUE(RunGpu(p, dtype, x, 16, pdl, &again));
  EXPECT_EQ(again, y16);
  for (int64_t m : {9, 12}) {
    const std::vector<float> xm(x.begin(), x.begin() + m * s.k);
    std::vector<uint16_t> ym;
    ASSERT_TRUE(RunGpu(p, dtype, xm, m, automatic, &ym));
    EXPECT_TRUE(std::equal(ym.begin(), ym.end(), y16.begin())) << "m=" << m;
  }
}

void CheckSwiGluEpilogue(const LutShape& s, ActivationType dtype, const std::vector<int64_t>& ms,
                         const LaunchChoice& how, std::mt19937& rng);  // (below)

TEST(LutGemmGpuTest, Rows16KernelMatchesTheReference) {
  REQUIRE_GPU();
  LutGemmParams call;
  call.m = 16;
  call.shape = {4096, 4096, 4, 128};
  EXPECT_TRUE(Rows16KernelApplies(call));
  call.m = 8;
  EXPECT_FALSE(Rows16KernelApplies(call)) << "8 rows: the strip kernel";
  call.m = 17;
  EXPECT_FALSE(Rows16KernelApplies(call)) << "17 rows";
  call.m = 16;
  call.shape = {4096, 8192, 4, 128};
  EXPECT_FALSE(Rows16KernelApplies(call)) << "k = 8192";
  call.shape = {4096, 4096, 3, 128};
  EXPECT_FALSE(Rows16KernelApplies(call)) << "3 bits";
  call.shape = {4096, 4096, 4, 128};
  call.split_k = 2;
  EXPECT_FALSE(Rows16KernelApplies(call)) << "forced splits";
  call.split_k = 0;
  call.pdl = call.early_weights = true;
  EXPECT_FALSE(Rows16KernelApplies(call)) << "early weights (the engine's launches)";

  std::mt19937 rng(std::random_device{}());
  LaunchChoice automatic;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int bits : {2, 4}) {
      for (int g : {32, 64, 128, 256}) {
        CheckRows16({272, 2048, bits, g}, dtype, rng);  // 17 strips: blocks of one strip
        CheckRows16({4240, 4096, bits, g}, dtype, rng);  // 265 strips: blocks looping over 2-3
      }
      CheckSwiGluEpilogue({1040, 2048, bits, 32}, dtype, {9, 16}, automatic, rng);
      CheckSwiGluEpilogue({272, 4096, bits, 128}, dtype, {13}, automatic, rng);
    }
  }
}

// A few 16-row launches for compute-sanitizer (memcheck, racecheck).
TEST(LutGemmGpuTest, SanitizerSubsetRows16) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  CheckRows16({272, 2048, 4, 128}, ActivationType::kBFloat16, rng);
  CheckRows16({4240, 4096, 2, 32}, ActivationType::kFloat16, rng);
}

// 3 bits has two strip instances, 128 and 80 registers per thread (2 or 3 blocks per SM), that
// the plan picks per call (FLUTE_LUT_STRIP_LOWREGS=on|off forces either). They compile the same
// code: right against the reference and bitwise equal to each other, over both dtypes, G = 32
// and 128, one and two tiles per warp, plain launches and early weights, blocks looping over strips.
TEST(LutGemmGpuTest, StripKernelThreeBitInstancesAreBitwiseEqual) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  LaunchChoice strip, early;
  strip.kernel = early.kernel = LutKernel::kStrip;
  early.pdl = early.early_weights = true;
  const std::vector<LutShape> shapes = {{6144, 4096, 3, 128}, {400, 2048, 3, 32}, {9600, 1024, 3, 128}};
  for (const LutShape& s : shapes) {
    {
      ScopedEnv env("FLUTE_LUT_STRIP_LOWREGS", "on");
      CheckShapeAllM(s, {1, 3, 8}, strip, rng);
      CheckShapeAllM(s, {1, 8}, early, rng);
    }
    Problem p = MakeProblem(s, rng);
    for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
      for (int64_t m : {1, 4}) {
        const std::vector<float> x = RandomX(dtype, m, s.k, rng);
        std::vector<uint16_t> y[2];
        for (int low = 0; low < 2; ++low) {
          ScopedEnv env("FLUTE_LUT_STRIP_LOWREGS", low ? "on" : "off");
          ASSERT_TRUE(RunGpu(p, dtype, x, m, strip, &y[low]));
        }
        ASSERT_TRUE(y[0] == y[1]) << "n=" << s.n << " k=" << s.k << " G=" << s.group_size << " "
                                  << ActivationName(dtype) << " m=" << m
                                  << ": the 80- and 128-register instances differ";
      }
    }
  }
}

// The engine's batch-invariant mode forces one split count per matrix
// (LutGemmPlannedSplits(shape, 1)) at every M, so that each output row has the same bits
// whether it is computed alone (M = 1), in a decode batch or in a prefill chunk. The split-K
// kernel then runs m tiles of 8, 16, 32 or 64 rows by M: all of them must do the same
// arithmetic per output element (the scales folded into fp32 tile sums at G >= 128, applied to
// A at G < 128), or a row's bits change at the tile-size boundaries (M = 16 / 17 and 32 / 33).
TEST(LutGemmGpuTest, ForcedSplitsRowsDoNotDependOnM) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  const std::vector<LutShape> shapes = {{1024, 4096, 4, 128}, {1024, 4096, 4, 64}, {1024, 4096, 3, 128},
                                        {1024, 4096, 2, 256}, {1024, 2048, 4, 32}};
  for (const LutShape& s : shapes) {
    Problem p = MakeProblem(s, rng);
    const int splits = LutGemmPlannedSplits(s, 1);
    for (ActivationType dtype : {ActivationType::kBFloat16, ActivationType::kFloat16}) {
      constexpr int64_t kMaxM = 100;
      std::vector<float> x = RandomX(dtype, kMaxM, s.k, rng);
      std::vector<uint16_t> y_all, y;
      ASSERT_TRUE(RunGpu(p, dtype, x, kMaxM, splits, &y_all));
      for (int64_t m : {1, 5, 8, 9, 16, 17, 32, 33, 64, 65}) {
        std::vector<float> xm(x.begin(), x.begin() + m * s.k);
        ASSERT_TRUE(RunGpu(p, dtype, xm, m, splits, &y));
        EXPECT_TRUE(std::equal(y.begin(), y.end(), y_all.begin()))
            << "rows 0.." << m - 1 << " of an m = " << m << " call differ from the same rows at m = " << kMaxM
            << " (n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size << " " << ActivationName(dtype)
            << " split_k=" << splits << ")";
      }
    }
  }
}

// With programmatic dependent launch the second GEMM of a chain (strip or split-K kernel)
// loads its weights early but must read X (the first GEMM's output, poisoned with NaN before
// it runs) only once the first has finished.
TEST(LutGemmGpuTest, PdlLaunchWaitsForThePreviousKernel) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  Problem p1 = MakeProblem({2048, 1024, 4, 128}, rng);
  Problem p2 = MakeProblem({4096, 2048, 3, 64}, rng);
  const int64_t m = 4;
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  DeviceBuffer d_x(m * 1024 * 2), d_y1(m * 2048 * 2), d_y2(m * 4096 * 2);
  const size_t ws_bytes = LutGemmWorkspaceBytes(p2.shape, m);  // split-K partials and counters
  DeviceBuffer d_ws(std::max<size_t>(ws_bytes, 256));
  ASSERT_EQ(cudaMemset(d_ws.ptr, 0, std::max<size_t>(ws_bytes, 256)), cudaSuccess);
  for (int rep = 0; rep < 20; ++rep) {
    std::vector<float> x = RandomX(ActivationType::kFloat16, m, 1024, rng);
    std::vector<uint16_t> xb(x.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = FloatToHalf(x[i]);
    ASSERT_EQ(cudaMemcpy(d_x.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(d_y1.ptr, 0xFF, m * 2048 * 2, stream), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(d_y2.ptr, 0xFF, m * 4096 * 2, stream), cudaSuccess);
    LaunchChoice first, second;  // the second GEMM on either kernel, alternately
    first.kernel = LutKernel::kStrip;
    second.kernel = rep % 2 == 0 ? LutKernel::kStrip : LutKernel::kSplitK;
    second.pdl = true;
    second.early_weights = rep % 4 >= 2;  // all prologue weight stages before the wait, or one
    LutGemmParams g1 = MakeParams(p1, ActivationType::kFloat16, m, first);
    g1.x = d_x.ptr;
    g1.y = d_y1.ptr;
    LutGemmParams g2 = MakeParams(p2, ActivationType::kFloat16, m, second);
    g2.x = d_y1.ptr;
    g2.y = d_y2.ptr;
    g2.workspace = d_ws.ptr;
    g2.workspace_bytes = std::max<size_t>(ws_bytes, 256);
    ASSERT_TRUE(LaunchLutGemm(g1, stream).ok());
    ASSERT_TRUE(LaunchLutGemm(g2, stream).ok());
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<uint16_t> y1(m * 2048), y2(m * 4096);
    cudaMemcpy(y1.data(), d_y1.ptr, y1.size() * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(y2.data(), d_y2.ptr, y2.size() * 2, cudaMemcpyDeviceToHost);
    std::vector<float> y1f(y1.size());
    for (size_t i = 0; i < y1.size(); ++i) y1f[i] = HalfToFloat(y1[i]);
    double err = 0;
    ASSERT_TRUE(Compare(ActivationType::kFloat16, y1, Reference(p1, x, m), &err)) << "first GEMM, rep " << rep;
    ASSERT_TRUE(Compare(ActivationType::kFloat16, y2, Reference(p2, y1f, m), &err)) << "second GEMM, rep " << rep;
  }
  cudaStreamDestroy(stream);
}

// The SwiGLU epilogue (rows of W: gate and up interleaved by 8) gives bitwise what the same
// kernel's plain GEMM followed by gpu::LaunchSwiGlu(interleave 8) gives, and is close to
// silu(gate) * up of the CPU reference.
void CheckSwiGluEpilogue(const LutShape& s, ActivationType dtype, const std::vector<int64_t>& ms,
                         const LaunchChoice& how, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size
                                    << " " << ActivationName(dtype) << " kernel=" << static_cast<int>(how.kernel)
                                    << " split_k=" << how.split_k);
  Problem p = MakeProblem(s, rng);
  const int64_t inter = s.n / 2;
  for (int64_t m : ms) {
    std::vector<float> x = RandomX(dtype, m, s.k, rng);
    std::vector<uint16_t> xb(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      xb[i] = ToActivationBits(dtype, x[i]);
    }
    DeviceBuffer d_x(xb.size() * 2), d_gate_up(m * s.n * 2), d_unfused(m * inter * 2), d_fused(m * inter * 2);
    const size_t ws_bytes = std::max({LutGemmWorkspaceBytes(s, m), size_t{256},
                                      how.split_k > 0 ? LutGemmWorkspaceBytesForSplits(s, m, how.split_k) : 0});
    DeviceBuffer d_ws(ws_bytes);
    cudaMemset(d_ws.ptr, 0, ws_bytes);
    cudaMemcpy(d_x.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
    cudaMemset(d_unfused.ptr, 0xFF, m * inter * 2);
    cudaMemset(d_fused.ptr, 0xFF, m * inter * 2);
    LutGemmParams plain = MakeParams(p, dtype, m, how);
    plain.x = d_x.ptr;
    plain.y = d_gate_up.ptr;
    plain.workspace = d_ws.ptr;
    plain.workspace_bytes = ws_bytes;
    ASSERT_TRUE(LaunchLutGemm(plain, nullptr).ok());
    ASSERT_TRUE(gpu::LaunchSwiGlu(dtype, d_gate_up.ptr, static_cast<int>(m), static_cast<int>(inter),
                                  d_unfused.ptr, nullptr, 8).ok());
    LutGemmParams fused = plain;
    fused.y = d_fused.ptr;
    fused.swiglu = true;
    const absl::Status st = LaunchLutGemm(fused, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint16_t> unfused(m * inter), got(m * inter);
    cudaMemcpy(unfused.data(), d_unfused.ptr, unfused.size() * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(got.data(), d_fused.ptr, got.size() * 2, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], unfused[i]) << "m=" << m << " element " << i << " (row " << i / inter << ")";
    }
    const std::vector<float> y = Reference(p, x, m);
    std::vector<float> ref(m * inter);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t c = 0; c < inter; ++c) {
        const float g = y[r * s.n + 16 * (c / 8) + c % 8], u = y[r * s.n + 16 * (c / 8) + c % 8 + 8];
        ref[r * inter + c] = g / (1.0f + std::exp(-g)) * u;
      }
    }
    // silu(gate) * up from gate and up rounded to dtype (as the unfused engine path does),
    // against fp32 sums: three roundings instead of one, and only 8 outputs on the smallest
    // shape, so twice the GEMM's tolerance (seen: 2.4e-3 in fp16 on n = 16).
    double err = 0;
    EXPECT_TRUE(Compare(dtype, got, ref, &err, 2.0)) << "m=" << m;
  }
}

TEST(LutGemmGpuTest, SwiGluEpilogueEqualsGemmThenSwiGlu) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  LaunchChoice automatic, strip, splitk, split3;
  strip.kernel = LutKernel::kStrip;
  splitk.kernel = LutKernel::kSplitK;
  split3.split_k = 3;  // several splits: the last block's reduction applies SwiGLU
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 128}) {
        CheckSwiGluEpilogue({16, 1024, bits, g}, dtype, {1, 3, 8}, strip, rng);  // one strip, one stage
        CheckSwiGluEpilogue({1040, 3072, bits, g}, dtype, {1, 5, 8}, strip, rng);
        CheckSwiGluEpilogue({1040, 3072, bits, g}, dtype, {1, 8, 17, 64}, splitk, rng);
        CheckSwiGluEpilogue({400, 2048, bits, g}, dtype, {2, 16, 33}, split3, rng);
      }
      // LLaMA-3 8B gate/up, as the engine calls it: strip kernel, then split-K from m = 5.
      CheckSwiGluEpilogue({28672, 4096, bits, 128}, dtype, {1, 4, 5, 16, 100}, automatic, rng);
    }
  }
  for (const char* config : {"1,2", "2,2", "2,4"}) {
    ScopedEnv env("FLUTE_LUT_STRIP", config);
    CheckSwiGluEpilogue({2048, 4096, 4, 128}, ActivationType::kBFloat16, {1, 8}, strip, rng);
  }
}

// Residual add + RMSNorm fused into the projections around it (residual epilogue of the
// producer P [h, kp], norm prologue of the consumer C [nc, h]) against the separate kernels:
// plain P, gpu::LaunchAddRmsNorm, plain C. The residual must be bitwise equal (the same
// rounded products added in the same way), the partial sums of squares equal to a CPU sum,
// and C's output equal up to the order in which the sum of squares is added; C is also
// checked against the CPU reference on the CPU-normalized residual.
void CheckFusedNorm(int64_t h, int64_t kp, int64_t nc, int bits, int group, bool swiglu, ActivationType dtype,
                    const std::vector<int64_t>& ms, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << "h=" << h << " kp=" << kp << " nc=" << nc << " b=" << bits << " G=" << group
                                    << " swiglu=" << swiglu << " " << ActivationName(dtype));
  std::normal_distribution<float> normal;
  const auto& [prod, cons, weight, d_weight] =
      flute::testing::MakeFusedNormInputs(h, kp, nc, bits, group, normal, rng);
  const float eps = 1e-5f;
  const int64_t nc_out = swiglu ? nc / 2 : nc;
  // The separate plain strip calls with the fused launches' tiles per warp (a plain call of 7-8 rows
  // at K = 8192 would take one tile per warp, and so another summation order: OneTilePerWarpForResidentX).
  ScopedEnv same_tiles("FLUTE_LUT_STRIP_TPW1", "off");
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  for (int64_t m : ms) {
    SCOPED_TRACE(::testing::Message() << "m=" << m);
    std::vector<float> x = RandomX(dtype, m, kp, rng), residual(m * h);
    for (float& r : residual) r = 3.0f * normal(rng);
    std::vector<uint16_t> xb(x.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = ToActivationBits(dtype, x[i]);
    DeviceBuffer d_x(xb.size() * 2), d_proj(m * h * 2), d_normed(m * h * 2), d_res_a(m * h * 4), d_res_b(m * h * 4),
        d_sumsq(m * (h / 16) * 4), d_y_ref(m * nc_out * 2), d_y(m * nc_out * 2);
    cudaMemcpy(d_x.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(d_res_a.ptr, residual.data(), m * h * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(d_res_b.ptr, residual.data(), m * h * 4, cudaMemcpyHostToDevice);
    cudaMemset(d_y.ptr, 0xFF, m * nc_out * 2);
    cudaMemset(d_sumsq.ptr, 0xFF, m * (h / 16) * 4);
    LaunchChoice strip;
    strip.kernel = LutKernel::kStrip;
    // Separate kernels.
    LutGemmParams p_plain = MakeParams(prod, dtype, m, strip);
    p_plain.x = d_x.ptr;
    p_plain.y = d_proj.ptr;
    ASSERT_TRUE(LaunchLutGemm(p_plain, stream).ok());
    ASSERT_TRUE(gpu::LaunchAddRmsNorm(dtype, static_cast<int>(m), static_cast<int>(h), eps, d_proj.ptr,
                                      static_cast<float*>(d_res_a.ptr), static_cast<const float*>(d_weight->ptr),
                                      d_normed.ptr, stream).ok());
    LutGemmParams c_plain = MakeParams(cons, dtype, m, strip);
    c_plain.x = d_normed.ptr;
    c_plain.y = d_y_ref.ptr;
    c_plain.swiglu = swiglu;
    ASSERT_TRUE(LaunchLutGemm(c_plain, stream).ok());
    // Fused, launched as the engine does (the consumer with PDL and early weights).
    LutGemmParams p_fused = p_plain;
    p_fused.y = nullptr;
    p_fused.residual_out = static_cast<float*>(d_res_b.ptr);
    p_fused.sumsq_out = static_cast<float*>(d_sumsq.ptr);
    ASSERT_TRUE(LaunchLutGemm(p_fused, stream).ok());
    LutGemmParams c_fused = c_plain;
    c_fused.x = nullptr;
    c_fused.y = d_y.ptr;
    c_fused.pdl = c_fused.early_weights = true;
    c_fused.residual_in = static_cast<const float*>(d_res_b.ptr);
    c_fused.sumsq_in = static_cast<const float*>(d_sumsq.ptr);
    c_fused.norm_weight = static_cast<const float*>(d_weight->ptr);
    c_fused.norm_eps = eps;
    const absl::Status st = LaunchLutGemm(c_fused, stream);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

    std::vector<float> res_a(m * h), res_b(m * h), sumsq(m * (h / 16));
    std::vector<uint16_t> y_ref(m * nc_out), y(m * nc_out);
    cudaMemcpy(res_a.data(), d_res_a.ptr, m * h * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(res_b.data(), d_res_b.ptr, m * h * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(sumsq.data(), d_sumsq.ptr, sumsq.size() * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(y_ref.data(), d_y_ref.ptr, y_ref.size() * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(y.data(), d_y.ptr, y.size() * 2, cudaMemcpyDeviceToHost);
    ASSERT_EQ(std::memcmp(res_a.data(), res_b.data(), res_a.size() * 4), 0) << "residual differs";
    std::vector<float> normed(m * h);
    for (int64_t r = 0; r < m; ++r) {
      double total = 0;
      for (int64_t s = 0; s < h / 16; ++s) {
        double part = 0;
        for (int64_t c = 16 * s; c < 16 * s + 16; ++c) part += static_cast<double>(res_a[r * h + c]) * res_a[r * h + c];
        ASSERT_NEAR(sumsq[r * (h / 16) + s], part, 1e-5 * part + 1e-30) << "row " << r << " strip " << s;
        total += part;
      }
      const float inv = static_cast<float>(1.0 / std::sqrt(total / h + eps));
      for (int64_t c = 0; c < h; ++c) {
        const float v = weight[c] * (res_a[r * h + c] * inv);
        normed[r * h + c] = FromActivationBits(dtype, ToActivationBits(dtype, v));
      }
    }
    std::vector<float> y_ref_f(y_ref.size());
    for (size_t i = 0; i < y_ref.size(); ++i) {
      y_ref_f[i] = FromActivationBits(dtype, y_ref[i]);
    }
    double err = 0;
    // Only the order in which the sums of squares are added differs (16-column partials, then
    // strips, against one block reduction): inv moves by a few fp32 ulps, which flips the
    // rounding of a few X elements and then of some outputs (seen: 1.5e-4 fp16, 1.5e-3 bf16
    // with SwiGLU). A quarter of the GEMM tolerance; each path is also checked on its own.
    EXPECT_TRUE(Compare(dtype, y, y_ref_f, &err, 0.25)) << "fused vs separate kernels";
    if (!swiglu) {
      EXPECT_TRUE(Compare(dtype, y, Reference(cons, normed, m), &err)) << "fused vs CPU reference";
    }
  }
  cudaStreamDestroy(stream);
}

TEST(LutGemmGpuTest, FusedResidualEpilogueAndNormPrologueEqualTheSeparateKernels) {
  REQUIRE_GPU();
  const unsigned seed = std::random_device{}();  // fresh data each run; printed to reproduce
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 128}) {
        CheckFusedNorm(1024, 2048, 1040, bits, g, false, dtype, {1, 3, 8}, rng);
        CheckFusedNorm(1024, 1024, 2080, bits, g, true, dtype, {1, 2, 5}, rng);
      }
    }
    // LLaMA-3 8B o -> gate/up and down -> qkv, at the decode batch sizes the engine fuses.
    CheckFusedNorm(4096, 4096, 28672, 4, 128, true, dtype, {1, 4}, rng);
    CheckFusedNorm(4096, 14336, 6144, 4, 128, false, dtype, {1, 2, 4}, rng);
    // 70B o -> qkv; m = 8 (strip kernel forced) fills the largest resident X, 8 x 8192.
    CheckFusedNorm(8192, 8192, 10240, 4, 128, false, dtype, {1, 8}, rng);
  }
}

// The fused residual epilogue and norm prologue with 2 and 3 strip groups per block (forced;
// the norm prologue's X is built once per block and shared, its sum of squares added by group 0
// in the one-group order): the residual, its sums of squares and the consumer's output bitwise
// those of one group, launched as the engine does (the consumer with PDL and early weights).
void CheckFusedNormGroups(int64_t h, int64_t kp, int64_t nc, int bits, int group, bool swiglu, ActivationType dtype,
                          const std::vector<int64_t>& ms, std::mt19937& rng, int* grouped_launches) {
  SCOPED_TRACE(::testing::Message() << "h=" << h << " kp=" << kp << " nc=" << nc << " b=" << bits << " G=" << group
                                    << " swiglu=" << swiglu << " " << ActivationName(dtype));
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  std::normal_distribution<float> normal;
  const auto& [prod, cons, weight, d_weight] =
      flute::testing::MakeFusedNormInputs(h, kp, nc, bits, group, normal, rng);
  const int64_t nc_out = swiglu ? nc / 2 : nc;
  LaunchChoice strip;
  strip.kernel = LutKernel::kStrip;
  for (int64_t m : ms) {
    const std::vector<float> x = RandomX(dtype, m, kp, rng);
    std::vector<float> residual(m * h);
    for (float& r : residual) r = 3.0f * normal(rng);
    DeviceBuffer d_x(x.size() * 2), d_res(m * h * 4), d_sumsq(m * (h / 16) * 4), d_y(m * nc_out * 2);
    UploadX(dtype, x, d_x.ptr);
    std::vector<float> res[4], sumsq[4];
    std::vector<uint16_t> y[4];  // [groups]
    for (int groups = 1; groups <= 3; ++groups) {
      SCOPED_TRACE(::testing::Message() << "m=" << m << " groups=" << groups);
      ScopedEnv env("FLUTE_LUT_STRIP_GROUPS", std::to_string(groups).c_str());
      cudaMemcpy(d_res.ptr, residual.data(), m * h * 4, cudaMemcpyHostToDevice);
      cudaMemset(d_sumsq.ptr, 0xFF, m * (h / 16) * 4);
      cudaMemset(d_y.ptr, 0xFF, m * nc_out * 2);
      LutGemmParams producer = MakeParams(prod, dtype, m, strip);
      producer.x = d_x.ptr;
      producer.y = nullptr;
      producer.residual_out = static_cast<float*>(d_res.ptr);
      producer.sumsq_out = static_cast<float*>(d_sumsq.ptr);
      ASSERT_TRUE(LaunchLutGemm(producer, nullptr).ok());
      LutGemmParams consumer = MakeParams(cons, dtype, m, strip);
      consumer.y = d_y.ptr;
      consumer.swiglu = swiglu;
      consumer.pdl = consumer.early_weights = true;
      consumer.residual_in = static_cast<const float*>(d_res.ptr);
      consumer.sumsq_in = static_cast<const float*>(d_sumsq.ptr);
      consumer.norm_weight = static_cast<const float*>(d_weight->ptr);
      consumer.norm_eps = 1e-5f;
      StripLaunch launch;
      launch.fusion.norm_prologue = true;
      launch.early_weights = true;
      if (MakeStripPlan(cons.shape, dtype, m, launch, sms).groups > 1) ++*grouped_launches;
      const absl::Status st = LaunchLutGemm(consumer, nullptr);
      ASSERT_TRUE(st.ok()) << st;
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      res[groups].resize(m * h);
      sumsq[groups].resize(m * (h / 16));
      y[groups].resize(m * nc_out);
      cudaMemcpy(res[groups].data(), d_res.ptr, m * h * 4, cudaMemcpyDeviceToHost);
      cudaMemcpy(sumsq[groups].data(), d_sumsq.ptr, sumsq[groups].size() * 4, cudaMemcpyDeviceToHost);
      cudaMemcpy(y[groups].data(), d_y.ptr, y[groups].size() * 2, cudaMemcpyDeviceToHost);
      if (groups > 1) {
        ASSERT_EQ(std::memcmp(res[groups].data(), res[1].data(), res[1].size() * 4), 0) << "residual";
        ASSERT_EQ(std::memcmp(sumsq[groups].data(), sumsq[1].data(), sumsq[1].size() * 4), 0) << "sums of squares";
        ASSERT_EQ(y[groups], y[1]) << "consumer output";
      }
    }
  }
}

TEST(LutGemmGpuTest, FusedNormWithStripGroupsIsBitwiseOneGroup) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  int grouped = 0;  // consumer launches with 2-3 groups per block
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 128}) {
        CheckFusedNormGroups(1024, 2048, 1040, bits, g, false, dtype, {2, 3, 8}, rng, &grouped);
        CheckFusedNormGroups(1024, 1024, 2080, bits, g, true, dtype, {2, 5}, rng, &grouped);
      }
    }
    // 70B o -> qkv at 4 rows (the engine's batch 4; the automatic plan takes groups there).
    CheckFusedNormGroups(8192, 8192, 10240, 4, 128, false, dtype, {4}, rng, &grouped);
  }
  // Of the 124 consumer launches with 2 or 3 groups forced, most fit.
  EXPECT_GT(grouped, 62);
  std::printf("fused-norm consumer launches with 2-3 groups per block: %d of 124\n", grouped);
}

// The fused residual epilogue and norm prologue, small, for compute-sanitizer (scripts/gpu).
TEST(LutGemmGpuTest, SanitizerSubsetFusedNorm) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int bits : {2, 3, 4}) {
    CheckFusedNorm(1024, 1024, 1040, bits, 128, false, ActivationType::kFloat16, {1, 3}, rng);
    CheckFusedNorm(1024, 2048, 2080, bits, 32, true, ActivationType::kBFloat16, {2, 8}, rng);
  }
}

TEST(LutGemmGpuTest, FusedNormNeedsTheStripKernel) {
  REQUIRE_GPU();
  DeviceBuffer buf(1 << 20);
  LutGemmParams params;
  params.shape = {4096, 4096, 4, 128};
  params.m = 1;
  params.x = buf.ptr;
  params.packed = static_cast<const uint8_t*>(buf.ptr);
  params.scales = static_cast<const uint16_t*>(buf.ptr);
  params.table = static_cast<const float*>(buf.ptr);
  params.residual_out = params.sumsq_out = static_cast<float*>(buf.ptr);
  params.kernel = LutKernel::kSplitK;
  absl::Status st = LaunchLutGemm(params, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("strip kernel"), std::string::npos) << st;
  params.kernel = LutKernel::kAuto;
  params.swiglu = true;
  st = LaunchLutGemm(params, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("swiglu"), std::string::npos) << st;
  params.swiglu = false;
  params.sumsq_out = nullptr;  // incomplete
  st = LaunchLutGemm(params, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("sumsq_out"), std::string::npos) << st;
  params.residual_out = nullptr;
  params.y = buf.ptr;
  params.residual_in = params.sumsq_in = params.norm_weight = static_cast<const float*>(buf.ptr);
  for (LutKernel kernel : {LutKernel::kSplitK, LutKernel::kTensorCore}) {  // the norm prologue
    params.kernel = kernel;
    st = LaunchLutGemm(params, nullptr);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find("strip kernel"), std::string::npos) << st;
  }
  params.kernel = LutKernel::kAuto;
  params.shape = {4096, 16384, 4, 128};  // resident X of 8 x 16384: over the shared memory limit
  params.m = 8;
  st = LaunchLutGemm(params, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  params.shape = {4096, 4096, 4, 128};
  params.m = 1;
  params.residual_out = static_cast<float*>(buf.ptr);  // both in one call
  params.sumsq_out = static_cast<float*>(buf.ptr);
  st = LaunchLutGemm(params, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("cannot be combined"), std::string::npos) << st;
}

TEST(LutGemmGpuTest, RejectsBadCallsWithAClearError) {
  REQUIRE_GPU();
  LutGemmParams params;
  params.shape = {4096, 4000, 4, 128};
  params.m = 1;
  absl::Status st = LaunchLutGemm(params, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("4000"), std::string::npos) << st;
  params.shape = {4096, 4096, 4, 128};
  st = LaunchLutGemm(params, nullptr);  // null pointers
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  DeviceBuffer buf(1 << 20);
  params.x = params.y = buf.ptr;
  params.packed = static_cast<const uint8_t*>(buf.ptr);
  params.scales = static_cast<const uint16_t*>(buf.ptr);
  params.table = static_cast<const float*>(buf.ptr);
  params.split_k = 4;  // needs a workspace
  st = LaunchLutGemm(params, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("workspace"), std::string::npos) << st;
  params.split_k = 0;
  params.kernel = LutKernel::kStrip;
  params.m = 9;  // the strip kernel takes m <= 8
  st = LaunchLutGemm(params, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("strip"), std::string::npos) << st;
}

#endif  // FLUTE_HAVE_CUDA

}  // namespace
}  // namespace flute::lut
