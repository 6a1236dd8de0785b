// The wgmma tensor-core LUT-GEMM (LutKernel::kTensorCore, kernels/lut_gemm_tc.cu) against the
// CPU ReferenceMatmul on fresh random inputs every run: bits x G x dtype x M (full and partial
// 64/128-row tiles of X), partial column blocks, forced and automatic split-K, the SwiGLU
// epilogue, PDL, run-to-run determinism, and the errors where it does not apply. Outputs
// are poisoned (NaN) before each call. Skips with a message without CUDA or a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/llama_ops.h"
#include "kernels/lut_format.h"
#include "kernels/lut_gemm.h"
#include "kernels/lut_gemm_tc.h"
#include "tests/kernels/gpu_test_util.h"
#include "tests/kernels/lut_problem_util.h"

namespace flute::lut {
namespace {

#ifndef FLUTE_HAVE_CUDA
TEST(LutGemmTcGpuTest, SkippedWithoutCuda) {
  LutGemmParams params;
  params.kernel = LutKernel::kTensorCore;
  EXPECT_FALSE(LaunchLutGemm(params, nullptr).ok());
  GTEST_SKIP() << "built without CUDA: the tensor-core LUT-GEMM tests need nvcc at build time";
}
#else

#define REQUIRE_GPU() REQUIRE_GPU_FOR("tensor-core LUT-GEMM")
using flute::testing::ActivationName;
using flute::testing::DeviceBuffer;
using flute::testing::ScopedEnv;
using flute::testing::LutProblem;
using flute::testing::MakeLutProblem;
using flute::testing::MatchesReference;
using flute::testing::RandomActivations;
using flute::testing::ReferenceY;
using flute::testing::SwiGluOfInterleaved;
using flute::testing::FromActivationBits;
using flute::testing::ToActivationBits;

struct TcCall {
  int split_k = 0;  // 0: the kernel's own choice
  bool swiglu = false;
  bool pdl = false;
  bool early_weights = false;  // (with pdl) every prologue stage's codes before the PDL wait
  LutKernel kernel = LutKernel::kTensorCore;
  const uint16_t* scales = nullptr;  // device scales in place of the problem's (nullptr: those)
};

// What an engine allocates (LutGemmWorkspaceBytes), plus room for a forced split (partials
// padded to 8-row groups and 128-column blocks, as the kernel stores them).
size_t TcWorkspaceBytes(const LutShape& s, int64_t m, int split_k) {
  const int64_t padded = ((m + 7) / 8 * 8) * ((s.n + 127) / 128 * 128);
  return LutGemmWorkspaceBytes(s, m) + 64 * 1024 + (split_k > 0 ? static_cast<size_t>(split_k * padded) * 4 : 0);
}

// One call of the tensor-core kernel on x (exactly representable in dtype), y poisoned first.
// y_bits: [m, n] ([m, n / 2] with swiglu).
::testing::AssertionResult RunTc(const LutProblem& p, ActivationType dtype, const std::vector<float>& x, int64_t m,
                                 const TcCall& call, std::vector<uint16_t>* y_bits,
                                 std::vector<uint8_t>* ws_prefix = nullptr) {
  const LutShape& s = p.shape;
  const int64_t y_cols = call.swiglu ? s.n / 2 : s.n;
  std::vector<uint16_t> xb(x.size());
  for (size_t i = 0; i < x.size(); ++i) xb[i] = ToActivationBits(dtype, x[i]);
  DeviceBuffer d_x(xb.size() * 2), d_y(static_cast<size_t>(m * y_cols) * 2);
  const size_t ws_bytes = TcWorkspaceBytes(s, m, call.split_k);
  DeviceBuffer d_ws(ws_bytes);
  if (!d_x.ptr || !d_y.ptr || !d_ws.ptr) return ::testing::AssertionFailure() << "cudaMalloc failed";
  cudaMemset(d_ws.ptr, 0, ws_bytes);
  cudaMemcpy(d_x.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
  cudaMemset(d_y.ptr, 0xFF, static_cast<size_t>(m * y_cols) * 2);  // NaN in fp16 and bf16
  LutGemmParams params;
  params.shape = s;
  params.dtype = dtype;
  params.m = m;
  params.x = d_x.ptr;
  params.packed = static_cast<const uint8_t*>(p.d_packed->ptr);
  params.scales = call.scales != nullptr ? call.scales : static_cast<const uint16_t*>(p.d_scales->ptr);
  params.table = static_cast<const float*>(p.d_table->ptr);
  params.y = d_y.ptr;
  params.workspace = d_ws.ptr;
  params.workspace_bytes = ws_bytes;
  params.split_k = call.split_k;
  params.kernel = call.kernel;
  params.swiglu = call.swiglu;
  params.pdl = call.pdl;
  params.early_weights = call.early_weights;
  const absl::Status st = LaunchLutGemm(params, nullptr);
  if (!st.ok()) return ::testing::AssertionFailure() << st;
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) return ::testing::AssertionFailure() << cudaGetErrorString(err);
  y_bits->resize(static_cast<size_t>(m * y_cols));
  cudaMemcpy(y_bits->data(), d_y.ptr, y_bits->size() * 2, cudaMemcpyDeviceToHost);
  if (ws_prefix) {
    ws_prefix->resize(std::min<size_t>(ws_bytes, 4096));
    cudaMemcpy(ws_prefix->data(), d_ws.ptr, ws_prefix->size(), cudaMemcpyDeviceToHost);
  }
  return ::testing::AssertionSuccess();
}

// Every m in ms, both dtypes, one random matrix of shape s: the kernel against the reference.
void CheckShape(const LutShape& s, const std::vector<int64_t>& ms, const TcCall& call, std::mt19937& rng) {
  const LutProblem p = MakeLutProblem(s, rng);
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    double worst = 0;
    for (int64_t m : ms) {
      SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size
                                        << " " << ActivationName(dtype) << " m=" << m << " split_k=" << call.split_k
                                        << " pdl=" << call.pdl << " early=" << call.early_weights);
      const std::vector<float> x = RandomActivations(dtype, m, s.k, rng);
      std::vector<uint16_t> y;
      ASSERT_TRUE(RunTc(p, dtype, x, m, call, &y));
      double err = 0;
      EXPECT_TRUE(MatchesReference(dtype, y, ReferenceY(p, x, m), &err));
      worst = std::max(worst, err);
    }
    std::printf("tc n=%lld k=%lld b=%d G=%d %s split_k=%d: worst normalized error %.2e over %zu M values\n",
                static_cast<long long>(s.n), static_cast<long long>(s.k), s.bits, s.group_size, ActivationName(dtype),
                call.split_k, worst, ms.size());
  }
}

// 1, 7: partial 16-row tiles (MT = 16); 16, 32: full tiles of MT = 16 / 32; 17: a partial
// 32-row tile; 33: a partial 64-row tile; 64, 128: full tiles of MT = 64 / 128; 100: a partial
// 128-row tile; 256: two 128-row tiles.
const std::vector<int64_t> kTcM = {1, 7, 16, 17, 32, 33, 64, 100, 128, 256};

TEST(LutGemmTcGpuTest, EveryBitsGroupDtypeAndM) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (int bits : {2, 3, 4}) {
    for (int g : {32, 64, 128, 256}) {
      CheckShape({256, 1024, bits, g}, kTcM, TcCall{}, rng);
      // 80 rows: one block whose second warpgroup has one live strip and three idle warps;
      // K = max(128, G): a single k-tile (or two at G = 256).
      CheckShape({80, std::max(128, g), bits, g}, {3, 20, 33, 100}, TcCall{}, rng);
    }
  }
}

TEST(LutGemmTcGpuTest, ManyTilesOfXUpTo512Rows) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  CheckShape({384, 1536, 4, 128}, {65, 127, 129, 300, 512}, TcCall{}, rng);
  CheckShape({128, 512, 3, 64}, {512}, TcCall{}, rng);
}

TEST(LutGemmTcGpuTest, LlamaShape4096x4096) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  CheckShape({4096, 4096, 4, 128}, {64, 128}, TcCall{}, rng);  // split-K chosen (32 column blocks)
  CheckShape({1024, 4096, 2, 256}, {100}, TcCall{}, rng);
}

TEST(LutGemmTcGpuTest, ForcedSplitKIncludingUnevenSplits) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (int split : {1, 2, 3, 5, 12}) {
    TcCall call;
    call.split_k = split;
    CheckShape({256, 1536, 4, 128}, {9, 31, 33, 100}, call, rng);
    CheckShape({96, 1536, 3, 32}, {16, 64}, call, rng);
  }
}

TEST(LutGemmTcGpuTest, PdlLaunchComputesTheSame) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TcCall call;
  call.pdl = true;
  CheckShape({512, 2048, 4, 64}, {16, 32, 64, 128}, call, rng);
  // Early weights (all prologue codes in one cp.async group before the wait): blocks with fewer
  // k-tiles than prologue stages (K = 256: 2 k-tiles, forced 2 splits: 1 each) and with more.
  call.early_weights = true;
  for (int bits : {2, 3, 4}) {
    CheckShape({512, 2048, bits, 128}, {5, 16, 32, 64, 128}, call, rng);
    CheckShape({256, 256, bits, 64}, {16, 100}, call, rng);
  }
  call.split_k = 2;
  CheckShape({256, 256, 4, 128}, {16, 100}, call, rng);
}

// At MT = 16 (m <= 16) and G = 64 the group scales multiply fp32 sums of unscaled weights
// (kFold in lut_gemm_tc_kernel.cuh); FLUTE_LUT_TC_FOLD=off scales the dequantized weights instead
// (HMUL2, as for every other G). Both against the reference, automatic and forced splits, a
// partial column block, SwiGLU, and each k-tile count from 1 (the fold after the last k-tile).
TEST(LutGemmTcGpuTest, ScalesAfterTheSumsAndOnTheWeightsBothMatchTheReference) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (const char* fold : {static_cast<const char*>(nullptr), "off"}) {
    SCOPED_TRACE(::testing::Message() << "FLUTE_LUT_TC_FOLD=" << (fold ? fold : "(unset)"));
    ScopedEnv env("FLUTE_LUT_TC_FOLD", fold);
    for (int bits : {2, 3, 4}) CheckShape({208, 4096, bits, 64}, {1, 7, 16}, TcCall{}, rng);
    CheckShape({256, 128, 4, 64}, {9, 16}, TcCall{}, rng);
    TcCall split;
    split.split_k = 3;
    CheckShape({256, 1536, 4, 64}, {5, 16}, split, rng);
    const LutShape s{256, 2048, 4, 64};
    const LutProblem p = MakeLutProblem(s, rng);
    for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
      const std::vector<float> x = RandomActivations(dtype, 16, s.k, rng);
      TcCall swiglu;
      swiglu.swiglu = true;
      std::vector<uint16_t> y;
      ASSERT_TRUE(RunTc(p, dtype, x, 16, swiglu, &y));
      EXPECT_TRUE(MatchesReference(dtype, y, SwiGluOfInterleaved(ReferenceY(p, x, 16), 16, s.n), nullptr, 2.0));
    }
  }
}

// At MT = 32 (m = 17-32) and G >= 128 the kernel runs kTileGroupLoop, which converts each row's
// scale once per k-tile; FLUTE_LUT_TC_TILEGROUP=off runs the general loop (a scale per 32-wide
// quarter). The same products in the same order: bitwise equal, and both against the reference.
// Every bits x G >= 128 x dtype, partial and full 32-row tiles (and 16-row ones, which the switch
// must not change), automatic and forced splits, SwiGLU.
TEST(LutGemmTcGpuTest, TileGroupLoopIsBitwiseTheGeneralLoop) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (int bits : {2, 3, 4}) {
    for (int g : {128, 256}) {
      const LutShape s{512, 1536, bits, g};
      const LutProblem p = MakeLutProblem(s, rng);
      for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
        for (int64_t m : {5, 16, 17, 32}) {
          for (int split : {0, 3}) {
            for (bool swiglu : {false, true}) {
              SCOPED_TRACE(::testing::Message() << "b=" << bits << " G=" << g << " " << ActivationName(dtype)
                                                << " m=" << m << " split_k=" << split << " swiglu=" << swiglu);
              const std::vector<float> x = RandomActivations(dtype, m, s.k, rng);
              TcCall call;
              call.split_k = split;
              call.swiglu = swiglu;
              std::vector<uint16_t> tile_group, general;
              ASSERT_TRUE(RunTc(p, dtype, x, m, call, &tile_group));
              {
                ScopedEnv env("FLUTE_LUT_TC_TILEGROUP", "off");
                ASSERT_TRUE(RunTc(p, dtype, x, m, call, &general));
              }
              ASSERT_EQ(tile_group, general);
              const std::vector<float> want = ReferenceY(p, x, m);
              EXPECT_TRUE(MatchesReference(dtype, tile_group, swiglu ? SwiGluOfInterleaved(want, m, s.n) : want,
                                           nullptr, swiglu ? 2.0 : 1.0));
            }
          }
        }
      }
    }
  }
}

// At m = 65-128 (one 128-row tile) the kernel runs kRawScaleLoop, which keeps the next k-tile's
// scales as the loaded words until the iteration that uses them; FLUTE_LUT_TC_RAWSCALES=off runs
// the general loop. The same scales and products in the same order: bitwise equal, and both
// against the reference. Every bits x G x dtype, partial and full tiles, automatic plans
// (6144 x 4096 at m = 128: split-K in clusters of 2; 4096 x 4096 at m = 100: the spread
// reduction), Stream-K (FLUTE_LUT_TC_STREAMK=on) and forced splits, SwiGLU; m = 200 (two tiles)
// stays on the general loop.
TEST(LutGemmTcGpuTest, RawScaleLoopIsBitwiseTheGeneralLoop) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  struct Case {
    LutShape shape;
    std::vector<int64_t> ms;
    std::vector<int> splits;  // 0: automatic
    const char* streamk = nullptr;  // FLUTE_LUT_TC_STREAMK
  };
  std::vector<Case> cases = {{{6144, 4096, 4, 128}, {128}, {0}},
                             {{6144, 4096, 2, 64}, {100}, {0}, "on"},
                             {{4096, 4096, 3, 128}, {100}, {0}}};
  for (int bits : {2, 3, 4}) {
    for (int g : {32, 64, 128, 256}) cases.push_back({{1536, 512, bits, g}, {65, 128, 200}, {0, 3}});
  }
  for (const Case& c : cases) {
    const ScopedEnv streamk("FLUTE_LUT_TC_STREAMK", c.streamk);
    const LutProblem p = MakeLutProblem(c.shape, rng);
    for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
      for (int64_t m : c.ms) {
        for (int split : c.splits) {
          for (bool swiglu : {false, true}) {
            SCOPED_TRACE(::testing::Message() << c.shape.n << "x" << c.shape.k << " b=" << c.shape.bits << " G="
                                              << c.shape.group_size << " " << ActivationName(dtype) << " m=" << m
                                              << " split_k=" << split << " swiglu=" << swiglu);
            const std::vector<float> x = RandomActivations(dtype, m, c.shape.k, rng);
            TcCall call;
            call.split_k = split;
            call.swiglu = swiglu;
            std::vector<uint16_t> raw, general;
            ASSERT_TRUE(RunTc(p, dtype, x, m, call, &raw));
            {
              ScopedEnv env("FLUTE_LUT_TC_RAWSCALES", "off");
              ASSERT_TRUE(RunTc(p, dtype, x, m, call, &general));
            }
            ASSERT_EQ(raw, general);
            const std::vector<float> want = ReferenceY(p, x, m);
            EXPECT_TRUE(MatchesReference(dtype, raw, swiglu ? SwiGluOfInterleaved(want, m, c.shape.n) : want, nullptr,
                                         swiglu ? 2.0 : 1.0));
          }
        }
      }
    }
  }
}

// The fused SwiGLU epilogue is bitwise the tensor-core GEMM followed by gpu::LaunchSwiGlu
// (interleave 8), with and without split-K, and close to silu(gate) * up of the reference.
TEST(LutGemmTcGpuTest, SwiGluEpilogueEqualsGemmThenSwiGlu) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (int bits : {2, 3, 4}) {
    for (int g : {32, 128}) {
      const LutShape s{400, 2048, bits, g};  // 25 strips: a partial column block
      const LutProblem p = MakeLutProblem(s, rng);
      const int64_t inter = s.n / 2;
      for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
        for (int split : {0, 3}) {
          for (int64_t m : {5, 16, 33, 100}) {
            SCOPED_TRACE(::testing::Message() << "b=" << bits << " G=" << g << " " << ActivationName(dtype)
                                              << " m=" << m << " split_k=" << split);
            const std::vector<float> x = RandomActivations(dtype, m, s.k, rng);
            TcCall plain_call, fused_call;
            plain_call.split_k = fused_call.split_k = split;
            fused_call.swiglu = true;
            std::vector<uint16_t> plain, fused;
            ASSERT_TRUE(RunTc(p, dtype, x, m, plain_call, &plain));
            ASSERT_TRUE(RunTc(p, dtype, x, m, fused_call, &fused));
            DeviceBuffer d_plain(plain.size() * 2), d_unfused(static_cast<size_t>(m * inter) * 2);
            cudaMemcpy(d_plain.ptr, plain.data(), plain.size() * 2, cudaMemcpyHostToDevice);
            ASSERT_TRUE(gpu::LaunchSwiGlu(dtype, d_plain.ptr, static_cast<int>(m), static_cast<int>(inter),
                                          d_unfused.ptr, nullptr, 8)
                            .ok());
            std::vector<uint16_t> unfused(static_cast<size_t>(m * inter));
            ASSERT_EQ(cudaMemcpy(unfused.data(), d_unfused.ptr, unfused.size() * 2, cudaMemcpyDeviceToHost),
                      cudaSuccess);
            ASSERT_EQ(fused, unfused);
            const std::vector<float> ref = SwiGluOfInterleaved(ReferenceY(p, x, m), m, s.n);
            // Three roundings (gate, up, product) against fp32 sums: twice the GEMM's tolerance.
            EXPECT_TRUE(MatchesReference(dtype, fused, ref, nullptr, 2.0));
          }
        }
      }
    }
  }
}

TEST(LutGemmTcGpuTest, DeterministicBitwiseRunToRun) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  const LutProblem p = MakeLutProblem({4096, 4096, 4, 128}, rng);
  for (int split : {0, 4}) {
    for (int64_t m : {64, 128}) {
      const std::vector<float> x = RandomActivations(ActivationType::kBFloat16, m, 4096, rng);
      TcCall call;
      call.split_k = split;
      std::vector<uint16_t> first, again;
      ASSERT_TRUE(RunTc(p, ActivationType::kBFloat16, x, m, call, &first));
      for (int rep = 0; rep < 3; ++rep) {
        ASSERT_TRUE(RunTc(p, ActivationType::kBFloat16, x, m, call, &again));
        ASSERT_EQ(first, again) << "m=" << m << " split_k=" << split << " rep " << rep;
      }
    }
  }
}

// A split call leaves its counters (the workspace's fixed counter prefix, shared with the
// split-K kernel: lut_gemm_device.cuh) at zero, so that a later call with other (n, m) starts
// from zero counts. (The first 4 KB are checked.)
TEST(LutGemmTcGpuTest, LeavesTheWorkspaceCounterPrefixZero) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  const LutProblem p = MakeLutProblem({4096, 4096, 4, 128}, rng);
  for (int split : {0, 3}) {
    for (int64_t m : {64, 128}) {
      const std::vector<float> x = RandomActivations(ActivationType::kFloat16, m, 4096, rng);
      TcCall call;
      call.split_k = split;
      std::vector<uint16_t> y;
      std::vector<uint8_t> prefix;
      ASSERT_TRUE(RunTc(p, ActivationType::kFloat16, x, m, call, &y, &prefix));
      for (size_t i = 0; i < prefix.size(); ++i) {
        ASSERT_EQ(prefix[i], 0) << "workspace byte " << i << " m=" << m << " split_k=" << split;
      }
    }
  }
}

// FLUTE_LUT_TC (lut_gemm_tc.cu): the default (per-thread split reduction, workspace-aware split
// choice), "old" (the element-loop reduction) and "mt16" / "mt32" / "mt64" (16-, 32- or 64-row
// tiles for every m: several m tiles above that) all match the reference, automatic and forced
// splits, plain and SwiGLU; with the same forced split the default and "old" are bitwise equal
// (both reductions add in split order from 0.0f).
TEST(LutGemmTcGpuTest, EveryFluteLutTcConfigMatchesAndReductionsAreBitwiseEqual) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (const LutShape& s : {LutShape{4096, 4096, 4, 128}, LutShape{400, 2048, 3, 32}}) {
    const LutProblem p = MakeLutProblem(s, rng);
    for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
      for (int64_t m : {16, 32, 33, 64, 100, 128}) {
        const std::vector<float> x = RandomActivations(dtype, m, s.k, rng);
        const std::vector<float> ref = ReferenceY(p, x, m);
        for (int split : {0, 3}) {
          for (bool swiglu : {false, true}) {
            TcCall call;
            call.split_k = split;
            call.swiglu = swiglu;
            constexpr int kConfigs = 5;
            std::vector<uint16_t> by_config[kConfigs];
            const char* configs[kConfigs] = {nullptr, "old", "mt16", "mt32", "mt64"};
            for (int c = 0; c < kConfigs; ++c) {
              SCOPED_TRACE(::testing::Message() << "FLUTE_LUT_TC=" << (configs[c] ? configs[c] : "(unset)") << " n="
                                                << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size
                                                << " " << ActivationName(dtype) << " m=" << m << " split_k=" << split
                                                << " swiglu=" << swiglu);
              ScopedEnv env("FLUTE_LUT_TC", configs[c]);
              ASSERT_TRUE(RunTc(p, dtype, x, m, call, &by_config[c]));
              if (!swiglu) {
                EXPECT_TRUE(MatchesReference(dtype, by_config[c], ref, nullptr));
              }
            }
            if (split > 0) {
              EXPECT_EQ(by_config[0], by_config[1]) << "default vs old, m=" << m << " swiglu=" << swiglu;
            }
            if (swiglu) {  // the fused output against silu(gate) * up of the reference
              const std::vector<float> sw = SwiGluOfInterleaved(ref, m, s.n);
              for (int c = 0; c < kConfigs; ++c) {
                EXPECT_TRUE(MatchesReference(dtype, by_config[c], sw, nullptr, 2.0)) << c;
              }
            }
          }
        }
      }
    }
  }
}

// The split count LaunchLutGemm's plan (`plan`: TensorCoreClusterSplits or
// TensorCoreSpreadSplits; 1 = none) gives the call, with RunTc's workspace.
int PlannedSplits(const LutShape& s, ActivationType dtype, int64_t m, const TcCall& call,
                  int (*plan)(const LutGemmParams&)) {
  LutGemmParams params;
  params.shape = s;
  params.dtype = dtype;
  params.m = m;
  params.workspace = &params;  // (only the size is planned)
  params.workspace_bytes = TcWorkspaceBytes(s, m, call.split_k);
  params.split_k = call.split_k;
  params.kernel = LutKernel::kTensorCore;
  params.swiglu = call.swiglu;
  return plan(params);
}

// The reference of a call: y [m, n], or silu(gate) * up [m, n / 2] with SwiGLU.
std::vector<float> ReferenceOut(const LutProblem& p, const std::vector<float>& x, int64_t m, bool swiglu) {
  std::vector<float> ref = ReferenceY(p, x, m);
  if (swiglu) ref = SwiGluOfInterleaved(ref, m, p.shape.n);
  return ref;
}

// Split-K cases: one random matrix of `shape` each, every m and split count (0: automatic).
struct SplitCase {
  LutShape shape;
  bool swiglu;
  std::vector<int64_t> ms;
  std::vector<int> splits;  // 0: automatic
};

// One call of a SplitCase: x exactly representable in dtype, the reference of the call and the
// tolerance scale to match it with (2 with SwiGLU: three roundings).
struct SplitRun {
  const LutProblem& p;
  ActivationType dtype;
  int64_t m;
  const std::vector<float>& x;
  const std::vector<float>& ref;
  double tol;
  TcCall call;
};

// "n=... k=... b=... G=... fp16 m=... split_k=... swiglu=...", for a SCOPED_TRACE.
::testing::Message Describe(const SplitRun& r) {
  const LutShape& s = r.p.shape;
  return ::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size << " "
                              << ActivationName(r.dtype) << " m=" << r.m << " split_k=" << r.call.split_k
                              << " swiglu=" << r.call.swiglu;
}

int PlannedSplits(const SplitRun& r, int (*plan)(const LutGemmParams&)) {
  return PlannedSplits(r.p.shape, r.dtype, r.m, r.call, plan);
}

// Calls body(SplitRun) for every case x dtype x m x split count, with fresh x per (dtype, m);
// stops at the first fatal failure (a body's ASSERT), as the loops written out in a test would.
template <typename Body>
void ForEachSplitRun(const std::vector<SplitCase>& cases, std::mt19937& rng, Body body) {
  for (const SplitCase& c : cases) {
    const LutProblem p = MakeLutProblem(c.shape, rng);
    for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
      for (int64_t m : c.ms) {
        const std::vector<float> x = RandomActivations(dtype, m, c.shape.k, rng);
        const std::vector<float> ref = ReferenceOut(p, x, m, c.swiglu);
        for (int split : c.splits) {
          TcCall call;
          call.split_k = split;
          call.swiglu = c.swiglu;
          body(SplitRun{p, dtype, m, x, ref, c.swiglu ? 2.0 : 1.0, call});
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  }
}

// How many calls a reduction plan took (more than one split), of how many.
struct PlanTally {
  int planned = 0, calls = 0;
  // `splits`: the plan's count for `call`, which must be a forced split count wherever it plans.
  void Add(const TcCall& call, int splits) {
    if (call.split_k > 0 && splits > 1) {
      EXPECT_EQ(splits, call.split_k);
    }
    planned += splits > 1;
    ++calls;
  }
  // Prints "<what>: <planned> of <calls> calls <how>"; most calls must have been planned.
  void ExpectMostPlanned(const char* what, const char* how) const {
    std::printf("%s: %d of %d calls %s\n", what, planned, calls, how);
    EXPECT_GT(planned, calls / 2);
  }
};

// The call with its plan switched off (the caller's ScopedEnv): the plan gives 1 split, and the
// output matches the reference and is bitwise `planned_y`, the output with the plan (`what` says
// which two reductions).
void ExpectUnplannedIsBitwise(const SplitRun& r, int (*plan)(const LutGemmParams&),
                              const std::vector<uint16_t>& planned_y, const char* what) {
  std::vector<uint16_t> y;
  EXPECT_EQ(PlannedSplits(r, plan), 1);
  ASSERT_TRUE(RunTc(r.p, r.dtype, r.x, r.m, r.call, &y));
  EXPECT_TRUE(MatchesReference(r.dtype, y, r.ref, nullptr, r.tol));
  EXPECT_EQ(planned_y, y) << what;
}

// The sanitizer subsets' bf16 calls on p (fresh x each): forced split-K 2 and 4, which `plan`
// must take, a partial and a full 128-row tile, plain and SwiGLU, against the reference.
// `trace` starts each call's SCOPED_TRACE.
void CheckSanitizerCalls(const LutProblem& p, int (*plan)(const LutGemmParams&), const std::string& trace,
                         std::mt19937& rng) {
  for (int split : {2, 4}) {
    for (int64_t m : {70, 128}) {
      for (bool swiglu : {false, true}) {
        TcCall call;
        call.split_k = split;
        call.swiglu = swiglu;
        SCOPED_TRACE(::testing::Message() << trace << "m=" << m << " split_k=" << split << " swiglu=" << swiglu);
        ASSERT_EQ(PlannedSplits(p.shape, ActivationType::kBFloat16, m, call, plan), split);
        const std::vector<float> x = RandomActivations(ActivationType::kBFloat16, m, p.shape.k, rng);
        const std::vector<float> ref = ReferenceOut(p, x, m, swiglu);
        std::vector<uint16_t> y;
        ASSERT_TRUE(RunTc(p, ActivationType::kBFloat16, x, m, call, &y));
        EXPECT_TRUE(MatchesReference(ActivationType::kBFloat16, y, ref, nullptr, swiglu ? 2.0 : 1.0));
      }
    }
  }
}

// Split-K in thread-block clusters (128-row tiles, plain calls and SwiGLU, where every tile's
// cluster of splits fits on the GPU at once: the partials summed through distributed shared
// memory) against the reference, bitwise run to run, and bitwise equal to the workspace
// reduction of the same split count (FLUTE_LUT_TC_CLUSTER=off with FLUTE_LUT_TC_STREAMK=off: the
// classic plan), which adds in the same order. Automatic splits (6144 x 4096 at m = 100 / 128:
// 48 tiles of 2 splits, where the classic plan would take Stream-K) and forced 2-8, uneven
// k-tiles per split, a partial column block (2064 features), a partial and two m tiles, 2/3/4
// bits, G 32-128, both dtypes.
TEST(LutGemmTcGpuTest, ClusterSplitsMatchAndAreBitwiseTheWorkspaceReduction) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  PlanTally tally;
  const std::vector<SplitCase> cases = {SplitCase{{6144, 4096, 4, 128}, false, {100, 128}, {0}},
                                        SplitCase{{512, 4096, 4, 64}, false, {65, 128, 256}, {2, 3, 5, 8}},
                                        SplitCase{{2064, 2048, 3, 32}, false, {100}, {0, 2, 3}},
                                        SplitCase{{1024, 2048, 2, 128}, true, {128, 200}, {0, 4}}};
  ASSERT_NO_FATAL_FAILURE(ForEachSplitRun(cases, rng, [&](const SplitRun& r) {
    const int cluster = PlannedSplits(r, TensorCoreClusterSplits);
    SCOPED_TRACE(Describe(r) << " cluster=" << cluster);
    tally.Add(r.call, cluster);
    std::vector<uint16_t> y, again;
    ASSERT_TRUE(RunTc(r.p, r.dtype, r.x, r.m, r.call, &y));
    ASSERT_TRUE(RunTc(r.p, r.dtype, r.x, r.m, r.call, &again));
    EXPECT_EQ(y, again) << "not bitwise run to run";
    EXPECT_TRUE(MatchesReference(r.dtype, y, r.ref, nullptr, r.tol));
    ScopedEnv env("FLUTE_LUT_TC_CLUSTER", "off"), classic("FLUTE_LUT_TC_STREAMK", "off");
    ExpectUnplannedIsBitwise(r, TensorCoreClusterSplits, y, "cluster vs workspace reduction, same split count");
  }));
  // An H100 runs all but the forced splits whose clusters do not fit (none here) in clusters.
  tally.ExpectMostPlanned("tc cluster splits", "ran in clusters");
}

// Small enough for compute-sanitizer memcheck / racecheck (--gtest_filter=*SanitizerSubset*):
// split-K in clusters of 2 and 4 (the partials in shared memory, read by the cluster's other
// blocks after the cluster barrier), a partial and a full 128-row tile, SwiGLU.
TEST(LutGemmTcGpuTest, ClusterSanitizerSubset) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  const LutProblem p = MakeLutProblem({256, 1024, 4, 128}, rng);
  CheckSanitizerCalls(p, TensorCoreClusterSplits, "", rng);
}

// The reduction spread over each tile's split blocks (64- and 128-row tiles, plain calls and
// SwiGLU, a classic plan whose grid is resident at once: each block sums a slice after a bounded
// wait for the others) against the reference, bitwise run to run, bitwise the last block's
// reduction of the same split count (FLUTE_LUT_TC_SPREAD=off), bitwise with no wait at all
// ("nowait": blocks that find a split missing give their slice up to the last one), and the
// counters left at zero. Automatic splits (4096 x 4096 at m = 100 / 128: 32 tiles x 4 splits,
// whose clusters of 4 do not all fit on an H100; at m = 40: 64-row tiles, 8 splits) and forced
// 2-8 with clusters off, uneven k-tiles per split, a partial column block (2064 features), a
// partial and two m tiles, 2/3/4 bits, G 32-128, both dtypes.
TEST(LutGemmTcGpuTest, SpreadReductionMatchesAndIsBitwiseTheLastBlockReduction) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  PlanTally tally;
  const std::vector<SplitCase> cases = {SplitCase{{4096, 4096, 4, 128}, false, {40, 100, 128}, {0}},
                                        SplitCase{{512, 4096, 4, 64}, false, {40, 64, 65, 128, 256}, {2, 3, 5, 8}},
                                        SplitCase{{2064, 2048, 3, 32}, false, {50, 100}, {2, 3}},
                                        SplitCase{{1024, 2048, 2, 128}, true, {33, 128, 200}, {4}}};
  ASSERT_NO_FATAL_FAILURE(ForEachSplitRun(cases, rng, [&](const SplitRun& r) {
    ScopedEnv no_clusters("FLUTE_LUT_TC_CLUSTER", r.call.split_k > 0 ? "off" : nullptr);
    const int planned = PlannedSplits(r, TensorCoreSpreadSplits);
    SCOPED_TRACE(Describe(r) << " spread=" << planned);
    tally.Add(r.call, planned);
    std::vector<uint16_t> y, again, no_wait;
    std::vector<uint8_t> counters;
    ASSERT_TRUE(RunTc(r.p, r.dtype, r.x, r.m, r.call, &y, &counters));
    EXPECT_EQ(std::count(counters.begin(), counters.end(), 0), static_cast<long>(counters.size()))
        << "split counters not reset";
    ASSERT_TRUE(RunTc(r.p, r.dtype, r.x, r.m, r.call, &again));
    EXPECT_EQ(y, again) << "not bitwise run to run";
    EXPECT_TRUE(MatchesReference(r.dtype, y, r.ref, nullptr, r.tol));
    {
      ScopedEnv env("FLUTE_LUT_TC_SPREAD", "nowait");
      ASSERT_TRUE(RunTc(r.p, r.dtype, r.x, r.m, r.call, &no_wait, &counters));
      EXPECT_EQ(std::count(counters.begin(), counters.end(), 0), static_cast<long>(counters.size()))
          << "split counters not reset (nowait)";
    }
    EXPECT_EQ(y, no_wait) << "spread with and without the wait";
    ScopedEnv env("FLUTE_LUT_TC_SPREAD", "off");
    ExpectUnplannedIsBitwise(r, TensorCoreSpreadSplits, y, "spread vs the last block's reduction, same split count");
  }));
  // On an H100 (132 SMs) every call here has a resident grid of 2-8 splits.
  tally.ExpectMostPlanned("tc spread reduction", "spread");
}

// Small enough for compute-sanitizer memcheck / racecheck (--gtest_filter=*SanitizerSubset*):
// the spread reduction with 2 and 4 splits, with and without the wait, a partial and a full
// 128-row tile, SwiGLU.
TEST(LutGemmTcGpuTest, SpreadSanitizerSubset) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  ScopedEnv no_clusters("FLUTE_LUT_TC_CLUSTER", "off");
  const LutProblem p = MakeLutProblem({256, 1024, 4, 128}, rng);
  for (const char* wait : {"bounded", "nowait"}) {
    ScopedEnv env("FLUTE_LUT_TC_SPREAD", wait);
    ASSERT_NO_FATAL_FAILURE(CheckSanitizerCalls(p, TensorCoreSpreadSplits, std::string(wait) + " ", rng));
  }
}

// Stream-K (FLUTE_LUT_TC_STREAMK=on: wherever it applies, i.e. 128-row tiles (m > 64) and at
// least 4 k-tiles per block): against the reference, bitwise equal run to run (each tile's
// pieces are summed in piece order by whichever arrives last), close to the classic plan (off),
// with SwiGLU, and the counters left at zero. m <= 64 checks that "on" leaves those alone.
// Shapes: 4096 features x 8192 (32 tiles x 64 k-tiles: pieces inside tiles), 2064 features (a
// partial last column block) x 8192, 3-bit G32, and the LLaMA-3 8B gate/up (224 tiles on 132
// blocks: pieces that cross tile boundaries); m = 100: a partial 128-row tile; 256: two m tiles.
TEST(LutGemmTcGpuTest, StreamKMatchesTheReferenceAndIsBitwiseRunToRun) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  struct Case {
    LutShape shape;
    bool swiglu;
    std::vector<int64_t> ms;
  };
  for (const Case& c : {Case{{4096, 8192, 4, 128}, false, {16, 100, 128, 256}},
                        Case{{2064, 8192, 3, 32}, false, {33, 100, 256}}, Case{{28672, 4096, 4, 128}, true, {64, 128}}}) {
    const LutShape& s = c.shape;
    const LutProblem p = MakeLutProblem(s, rng);
    for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
      for (int64_t m : c.ms) {
        SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size
                                          << " " << ActivationName(dtype) << " m=" << m << " swiglu=" << c.swiglu);
        const std::vector<float> x = RandomActivations(dtype, m, s.k, rng);
        TcCall call;
        call.swiglu = c.swiglu;
        std::vector<uint16_t> classic, stream_k, again;
        std::vector<uint8_t> prefix;
        {
          ScopedEnv env("FLUTE_LUT_TC_STREAMK", "off");
          ASSERT_TRUE(RunTc(p, dtype, x, m, call, &classic));
        }
        {
          ScopedEnv env("FLUTE_LUT_TC_STREAMK", "on");
          ASSERT_TRUE(RunTc(p, dtype, x, m, call, &stream_k, &prefix));
          ASSERT_TRUE(RunTc(p, dtype, x, m, call, &again));
        }
        EXPECT_EQ(stream_k, again) << "Stream-K not bitwise run to run";
        for (size_t i = 0; i < prefix.size(); ++i) ASSERT_EQ(prefix[i], 0) << "workspace byte " << i;
        const std::vector<float> ref = ReferenceOut(p, x, m, c.swiglu);
        double err_sk = 0, err_classic = 0;
        EXPECT_TRUE(MatchesReference(dtype, stream_k, ref, &err_sk, c.swiglu ? 2.0 : 1.0)) << "Stream-K";
        EXPECT_TRUE(MatchesReference(dtype, classic, ref, &err_classic, c.swiglu ? 2.0 : 1.0)) << "classic";
        std::vector<float> classic_f(classic.size());
        for (size_t i = 0; i < classic.size(); ++i) classic_f[i] = FromActivationBits(dtype, classic[i]);
        EXPECT_TRUE(MatchesReference(dtype, stream_k, classic_f, nullptr, c.swiglu ? 2.0 : 1.0)) << "vs classic";
      }
    }
  }
}

// At G < 128 the kernel loads a row's scales of a k-tile with one 4- or 8-byte load, so it
// needs 8-byte aligned scales: forced, a misaligned pointer is Unimplemented and says so; the
// automatic choice then runs the split-K kernel, which matches the reference.
TEST(LutGemmTcGpuTest, MisalignedScalesAtSmallGroupsFallBackToSplitK) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (int g : {32, 64}) {
    const LutShape s{256, 1024, 4, g};
    const LutProblem p = MakeLutProblem(s, rng);
    const size_t bytes = p.scales.size() * 2;
    DeviceBuffer shifted(bytes + 16);
    ASSERT_NE(shifted.ptr, nullptr);
    const auto* misaligned = reinterpret_cast<const uint16_t*>(static_cast<char*>(shifted.ptr) + 2);
    cudaMemcpy(const_cast<uint16_t*>(misaligned), p.scales.data(), bytes, cudaMemcpyHostToDevice);
    for (int64_t m : {16, 64}) {
      SCOPED_TRACE(::testing::Message() << "G=" << g << " m=" << m);
      const std::vector<float> x = RandomActivations(ActivationType::kFloat16, m, s.k, rng);
      TcCall forced;
      forced.scales = misaligned;
      std::vector<uint16_t> y;
      const ::testing::AssertionResult r = RunTc(p, ActivationType::kFloat16, x, m, forced, &y);
      EXPECT_FALSE(r);
      EXPECT_NE(std::string(r.message()).find("8-byte aligned scales"), std::string::npos) << r.message();
      TcCall automatic = forced;
      automatic.kernel = LutKernel::kAuto;
      ASSERT_TRUE(RunTc(p, ActivationType::kFloat16, x, m, automatic, &y));
      EXPECT_TRUE(MatchesReference(ActivationType::kFloat16, y, ReferenceY(p, x, m), nullptr));
    }
  }
}

// The norm prologue is the strip kernel's: forcing the tensor-core kernel with it is an error
// naming the strip kernel, for every m. (Its residual epilogue and deferred norm:
// lut_gemm_tc_fused_gpu_test.cc.)
TEST(LutGemmTcGpuTest, NormPrologueIsRejected) {
  REQUIRE_GPU();
  DeviceBuffer buf(1 << 20);
  for (int64_t m : {1, 16, 64}) {
    LutGemmParams params;
    params.shape = {256, 1024, 4, 128};
    params.m = m;
    params.kernel = LutKernel::kTensorCore;
    params.x = params.y = buf.ptr;
    params.packed = static_cast<const uint8_t*>(buf.ptr);
    params.scales = static_cast<const uint16_t*>(buf.ptr);
    params.table = static_cast<const float*>(buf.ptr);
    params.residual_in = params.sumsq_in = params.norm_weight = static_cast<const float*>(buf.ptr);
    const absl::Status st = LaunchLutGemm(params, nullptr);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find("strip kernel"), std::string::npos) << st;
  }
}

TEST(LutGemmTcGpuTest, ForcedSplitWithoutWorkspaceIsRejected) {
  REQUIRE_GPU();
  DeviceBuffer buf(1 << 20);
  LutGemmParams params;
  params.shape = {256, 1024, 4, 128};
  params.m = 64;
  params.kernel = LutKernel::kTensorCore;
  params.x = params.y = buf.ptr;
  params.packed = static_cast<const uint8_t*>(buf.ptr);
  params.scales = static_cast<const uint16_t*>(buf.ptr);
  params.table = static_cast<const float*>(buf.ptr);
  params.split_k = 4;
  const absl::Status st = LaunchLutGemm(params, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("workspace"), std::string::npos) << st;
}

#endif  // FLUTE_HAVE_CUDA

}  // namespace
}  // namespace flute::lut
