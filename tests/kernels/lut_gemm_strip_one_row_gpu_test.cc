// The strip kernel's plain one-row calls (kernels/lut_gemm_strip.cu, FLUTE_LUT_STRIP_ONE_ROW):
// X staged with every stage or resident in shared memory (copied once per block, in the one-row
// order or the ldmatrix layout, one group or strip groups) gives bitwise the same outputs, right
// against the CPU reference, on fresh random data every run; and the plan's default rule. Skips
// with a message without CUDA or a GPU.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/lut_format.h"
#include "kernels/lut_gemm.h"
#include "kernels/lut_gemm_strip.h"
#include "tests/kernels/gpu_test_util.h"
#include "tests/kernels/lut_problem_util.h"

#ifdef FLUTE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace flute::lut {
namespace {

#ifndef FLUTE_HAVE_CUDA
TEST(LutGemmStripOneRowGpuTest, SkippedWithoutCuda) {
  GTEST_SKIP() << "built without CUDA: the strip kernel's one-row tests need nvcc at build time";
}
#else

#define REQUIRE_GPU() REQUIRE_GPU_FOR("strip LUT-GEMM one-row calls")
using flute::testing::ActivationName;
using flute::testing::DeviceBuffer;
using flute::testing::LutProblem;
using flute::testing::MakeLutProblem;
using flute::testing::MatchesReference;
using flute::testing::RandomActivations;
using flute::testing::ReferenceY;
using flute::testing::ScopedEnv;
using flute::testing::ToActivationBits;

int SmCount() {
  int sms = 0;
  return cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) == cudaSuccess ? sms : 0;
}

// One call of one row on the strip kernel: y [n] as 16-bit bits, the output poisoned first.
void RunOneRow(const LutProblem& p, ActivationType dtype, const void* d_x, bool early, std::vector<uint16_t>* y) {
  DeviceBuffer d_y(p.shape.n * 2);
  cudaMemset(d_y.ptr, 0xFF, p.shape.n * 2);
  LutGemmParams params;
  params.shape = p.shape;
  params.dtype = dtype;
  params.m = 1;
  params.x = d_x;
  params.packed = static_cast<const uint8_t*>(p.d_packed->ptr);
  params.scales = static_cast<const uint16_t*>(p.d_scales->ptr);
  params.table = static_cast<const float*>(p.d_table->ptr);
  params.y = d_y.ptr;
  params.kernel = LutKernel::kStrip;
  params.pdl = params.early_weights = early;
  const absl::Status st = LaunchLutGemm(params, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  y->resize(p.shape.n);
  cudaMemcpy(y->data(), d_y.ptr, y->size() * 2, cudaMemcpyDeviceToHost);
}

// Every one-row rule (staged; the default; resident: one group on the one-row instances, or strip
// groups; ldmatrix: the layout of 2-8 rows), with the plan's X rule and with X resident wherever
// it fits: the same bits as X staged. Counts the launches that kept X resident in the one-row order.
void CheckOneRowRules(const LutShape& s, ActivationType dtype, bool early, std::mt19937& rng, int* resident_one_row) {
  SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k << " b=" << s.bits << " G=" << s.group_size
                                    << " " << ActivationName(dtype) << " early=" << early);
  const LutProblem p = MakeLutProblem(s, rng);
  const std::vector<float> x = RandomActivations(dtype, 1, s.k, rng);
  std::vector<uint16_t> x_bits(x.size());
  for (size_t i = 0; i < x.size(); ++i) x_bits[i] = ToActivationBits(dtype, x[i]);
  DeviceBuffer d_x(x.size() * 2);
  cudaMemcpy(d_x.ptr, x_bits.data(), x.size() * 2, cudaMemcpyHostToDevice);
  std::vector<uint16_t> staged;
  {
    ScopedEnv env("FLUTE_LUT_STRIP_ONE_ROW", "staged");
    RunOneRow(p, dtype, d_x.ptr, early, &staged);
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
  }
  EXPECT_TRUE(MatchesReference(dtype, staged, ReferenceY(p, x, 1)));
  StripLaunch launch;
  launch.early_weights = early;
  for (const char* x_rule : {"", "resident"}) {
    ScopedEnv env_x("FLUTE_LUT_STRIP_X", x_rule);
    for (const char* rule : {"", "resident", "ldmatrix"}) {
      ScopedEnv env("FLUTE_LUT_STRIP_ONE_ROW", rule);
      for (const char* groups : {"", "2", "3"}) {
        if (std::string(rule) != "resident" && *groups != '\0') continue;  // forced groups: the resident rule
        ScopedEnv env_g("FLUTE_LUT_STRIP_GROUPS", groups);
        SCOPED_TRACE(::testing::Message() << "X rule '" << x_rule << "' one-row rule '" << rule << "' groups '"
                                          << groups << "'");
        const StripPlan plan = MakeStripPlan(s, dtype, 1, launch, SmCount());
        ASSERT_GT(plan.grid, 0);
        if (plan.copy_x && plan.one_row) ++*resident_one_row;
        std::vector<uint16_t> y;
        RunOneRow(p, dtype, d_x.ptr, early, &y);
        ASSERT_FALSE(::testing::Test::HasFatalFailure());
        ASSERT_EQ(y, staged) << "plan: groups " << plan.groups << " copy_x " << plan.copy_x << " one_row "
                             << plan.one_row;
      }
    }
  }
}

// Every bits x G x dtype; one and two tiles per warp (k = 3072, 2048), strip counts that groups do
// not divide (17, 25), blocks looping over many strips (600), PDL with early weights, and a
// LLaMA-3 shape (8192 x 10240) whose default plan keeps X resident.
TEST(LutGemmStripOneRowGpuTest, ResidentXIsBitwiseStagedX) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  int resident_one_row = 0;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 64, 128, 256}) {
        CheckOneRowRules({400, 2048, bits, g}, dtype, false, rng, &resident_one_row);
        CheckOneRowRules({272, 3072, bits, g}, dtype, false, rng, &resident_one_row);
      }
      CheckOneRowRules({9600, 1024, bits, 128}, dtype, true, rng, &resident_one_row);
      CheckOneRowRules({10240, 8192, bits, 128}, dtype, false, rng, &resident_one_row);
    }
  }
  EXPECT_GT(resident_one_row, 0);
  std::printf("one-row launches with X resident in the one-row order: %d\n", resident_one_row);
}

// The subset that compute-sanitizer (memcheck, racecheck) runs in reasonable time: every bit width at
// G = 128 and 4 bits at G = 32, fp16 and bf16, one and two tiles per warp, and PDL with early weights.
TEST(LutGemmStripOneRowGpuTest, ResidentXSanitizerSubset) {
  REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  int resident_one_row = 0;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int bits : {2, 3, 4}) {
      CheckOneRowRules({400, 2048, bits, 128}, dtype, false, rng, &resident_one_row);
      CheckOneRowRules({272, 3072, bits, 128}, dtype, bits == 4, rng, &resident_one_row);
    }
    CheckOneRowRules({400, 2048, 4, 32}, dtype, false, rng, &resident_one_row);
  }
  EXPECT_GT(resident_one_row, 0);
}

// The default rule: X resident in the one-row order wherever one group per block keeps 2 blocks
// per SM (8192 x 57344 and 4096 x 4096 at 4 bits; 8192 x 28672 at 3 bits), staged where it would
// not (8192 x 28672 at 4 bits: a 56 KB X beside the 32 KB pair table); never with
// FLUTE_LUT_STRIP_ONE_ROW=staged; "ldmatrix" leaves the one-row instances.
TEST(LutGemmStripOneRowGpuTest, PlanKeepsXResidentWhereTwoBlocksFit) {
  REQUIRE_GPU();
  const int sms = SmCount();
  const StripLaunch plain;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    SCOPED_TRACE(ActivationName(dtype));
    for (const LutShape s : {LutShape{57344, 8192, 4, 128}, LutShape{4096, 4096, 4, 128}, LutShape{8192, 28672, 3, 128}}) {
      const StripPlan p = MakeStripPlan(s, dtype, 1, plain, sms);
      EXPECT_TRUE(p.copy_x && p.one_row) << "n=" << s.n << " k=" << s.k << " b=" << s.bits;
      EXPECT_EQ(p.groups, 1);
      EXPECT_GE(p.blocks_per_sm, 2);
    }
    const StripPlan wide_x = MakeStripPlan({8192, 28672, 4, 128}, dtype, 1, plain, sms);
    EXPECT_TRUE(!wide_x.copy_x && wide_x.one_row);
    {
      ScopedEnv env("FLUTE_LUT_STRIP_ONE_ROW", "staged");
      const StripPlan p = MakeStripPlan({57344, 8192, 4, 128}, dtype, 1, plain, sms);
      EXPECT_TRUE(!p.copy_x && p.one_row);
    }
    {
      ScopedEnv env("FLUTE_LUT_STRIP_ONE_ROW", "ldmatrix");
      const StripPlan p = MakeStripPlan({57344, 8192, 4, 128}, dtype, 1, plain, sms);
      EXPECT_TRUE(p.copy_x && !p.one_row);
    }
  }
}

#endif  // FLUTE_HAVE_CUDA

}  // namespace
}  // namespace flute::lut
