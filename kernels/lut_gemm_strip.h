// The persistent-strip LUT-GEMM (lut_gemm_strip.cu), the decode path for M <= 8. Internal to
// kernels/: LaunchLutGemm (lut_gemm.cu) chooses between it and the tiled split-K kernel.
#pragma once

#include <cstdint>

#include "kernels/lut_gemm.h"

struct CUstream_st;

namespace flute::lut {

// The launch this kernel would make: pipeline depth, k-tiles per warp per stage, grid.
struct StripPlan {
  int tiles_per_warp = 1;  // 1 or 2: a stage covers 8 * tiles_per_warp k-tiles of one strip
  int stages = 3;          // cp.async pipeline depth
  int smem_bytes = 0;
  int blocks_per_sm = 0;   // resident blocks (shared memory and registers), from the runtime
  int grid = 0;            // min(strips / groups, SMs * blocks_per_sm): each group loops over strips
  bool copy_x = false;     // X copied once per block into shared memory (StripFusion::copy_x)
  bool low_regs = false;   // 3 bits: the 80-register instance (3 blocks per SM) instead of 128
  int groups = 1;          // strip groups per block (8 warps each, sharing the pair table and a
                           // resident X): strip pipelines per SM = blocks_per_sm * groups
  bool one_row = false;    // a plain call of one row on the one-row instances (X in the one-row
                           // order, staged or resident; LDS.128 loads of the X fragments)
};

// Whether the strip kernel takes this call: m <= 8, k a multiple of 1024 and 16-byte aligned
// scales (shape rules in kernels/README.md). Without it the split-K kernel runs.
bool StripKernelApplies(const LutShape& shape, int64_t m, const void* scales);

// What a call fuses (LutGemmParams::norm_prologue / residual_epilogue). A fused call runs the
// instances compiled with the fused code paths (the plain ones stay exactly as fast as before
// them), and with the norm prologue X is built once per block in shared memory rather than
// staged with the weights. copy_x: X copied once per block into shared memory ([m][k + 8], the
// norm prologue's layout) instead of staged with every stage's weights; chosen by the plan
// (StripPlan::copy_x) for plain calls only, never by the caller. Runs on its own instances.
struct StripFusion {
  bool norm_prologue = false;
  bool residual_epilogue = false;
  bool copy_x = false;
  bool resident_x() const { return norm_prologue || copy_x; }
  bool any() const { return norm_prologue || residual_epilogue || copy_x; }
};

// How a call is launched, as far as the plan cares (LutGemmParams).
struct StripLaunch {
  StripFusion fusion;
  bool early_weights = false;  // pdl && early_weights
  int coresident_smem = 0;     // pdl ? coresident_smem : 0
};

// The plan for this shape, dtype, m and launch on the current device. The environment variable
// FLUTE_LUT_STRIP="tiles_per_warp,stages" forces a configuration for every call, and
// "tiles_per_warp,stages@KxN" for the calls of one shape (tuning runs only);
// FLUTE_LUT_STRIP_LOWREGS=on|off forces the 3-bit instance (StripPlan::low_regs);
// FLUTE_LUT_STRIP_SHALLOW=off keeps 2- and 3-bit calls off their 2-stage first choice;
// FLUTE_LUT_STRIP_GROUPS=1..3 forces the strip groups of plain calls of 2-8 rows;
// FLUTE_LUT_STRIP_ONEROUND=off leaves out the groups that take every strip in one round;
// FLUTE_LUT_STRIP_TPW1=off keeps grouped plans with X resident at the shape's tiles per warp;
// FLUTE_LUT_STRIP_PLAN_LOG=1 prints each new plan to stderr.
StripPlan MakeStripPlan(const LutShape& shape, ActivationType dtype, int64_t m, const StripLaunch& launch,
                        int sm_count);

// Launches (asynchronously). pdl: launch with programmatic stream serialization, so that the
// pair table and the first weight tiles load while the previous kernel on the stream finishes.
// Returns the CUDA error of the launch.
int LaunchStripKernel(const LutGemmParams& params, const StripPlan& plan, bool pdl,
                      CUstream_st* stream);

}  // namespace flute::lut
