// The tensor-core (wgmma) LUT-GEMM (lut_gemm_tc.cu). Internal to kernels/: LaunchLutGemm
// (lut_gemm.cu) calls it for LutKernel::kTensorCore, and for kAuto from m = 5 where the strip
// kernel does not take the call.
//
// Block = 2 warpgroups (256 threads) = 128 output features × MT rows of X (MT = 16, 32 or 64,
// the smallest holding m, else 128 with more m tiles beyond) × a range of 128-wide k-tiles.
// Each warp dequantizes its 16-row strip tile with the pair table into the A registers of
// wgmma.mma_async.m64nMTk16 (scaled by the group scale in the activation type, every G),
// B = the X tile from shared memory (128-byte swizzled, K-major), fp32 accumulators in
// registers. Split-K (deterministic: the last split sums the partials in split order) only when
// the grid is under one wave, and only as far as the caller's workspace allows
// (LutGemmWorkspaceBytes is enough for the automatic choice; counters at its start, fp32
// partials at its end), or at MT = 128 in thread-block clusters summed through distributed
// shared memory (no workspace); Stream-K at MT = 128 (kernels/README.md).
#pragma once

#include "absl/status/status.h"
#include "kernels/lut_gemm.h"

struct CUstream_st;

namespace flute::lut {

// Rows from which LaunchLutGemm (kAuto) picks this kernel where the strip kernel does not take
// the call (kTensorCore forces it at any m).
constexpr int kTensorCoreMinM = 5;

// Launches (asynchronously) after LaunchLutGemm's common checks. Handles every shape the
// format accepts (N a multiple of 16, K of max(128, G)), bits 2/3/4, G 32..256, fp16 and
// bf16, swiglu, pdl, any m >= 1 (MT = 16 / 32 / 64 rows for m up to 16 / 32 / 64, else 128);
// split_k > 0 forces that many splits (InvalidArgument when the workspace is too small for
// them). Unimplemented for the strip-only fused residual epilogue / norm prologue.
absl::Status LaunchTensorCoreLutGemm(const LutGemmParams& params, CUstream_st* stream);

// The split count of the call's split-K in thread-block clusters (the splits of a tile summed
// through distributed shared memory, bitwise as the workspace reduction would: plain calls of
// 128-row tiles whose clusters all fit at once; FLUTE_LUT_TC_CLUSTER=off disables it), or 1 where
// the call does not use it. Only the plan: nothing is launched.
int TensorCoreClusterSplits(const LutGemmParams& params);

// The split count of the call's reduction spread over each tile's split blocks (each sums a
// slice of the tile after a bounded wait for the others, bitwise as the last block alone would:
// plain calls of 128-row tiles in a classic plan of 2-8 splits whose grid is resident at once;
// FLUTE_LUT_TC_SPREAD=off disables it), or 1 where the call does not use it. Only the plan.
int TensorCoreSpreadSplits(const LutGemmParams& params);

// Workspace bytes this kernel's Stream-K plan needs for (shape, m) wherever Stream-K applies
// (FLUTE_LUT_TC_STREAMK=on), else 0: LutGemmWorkspaceBytes includes it, so that a workspace of
// that size never keeps the automatic choice from Stream-K.
size_t TensorCoreStreamKWorkspaceBytes(const LutShape& shape, int64_t m);

}  // namespace flute::lut
