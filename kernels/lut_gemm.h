// The fused LUT-GEMM on the GPU: Y[M, N] = X[M, K] · Ŵᵀ, with Ŵ[n, k] = table[code[n, k]] ·
// scale[n, k / G] read straight from the packed format of kernels/lut_format.h.
// X, Y fp16 or bf16 (same type), fp32 accumulation, b ∈ {2, 3, 4}, G ∈ {32, 64, 128, 256},
// any M ≥ 1. Declared without CUDA headers so that CPU-only code can include it; without
// CUDA the launcher returns Unimplemented.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/lut_format.h"

struct CUstream_st;  // = cudaStream_t

namespace flute::lut {

enum class ActivationType { kFloat16, kBFloat16 };

// Which kernel runs a call. kAuto: the persistent-strip kernel when it takes the call (m <= 8,
// k % 1024 == 0, split_k = 0, 16-byte aligned scales, ...: UsesStripKernel, kernels/README.md),
// else the wgmma tensor-core kernel from m = 5 (split_k = 0), else the tiled split-K kernel;
// calls with prenorm_out or the deferred norm, and residual epilogues the strip kernel does not
// take, always run on the tensor-core kernel. The others force one (tests and benchmarks); kStrip fails with InvalidArgument where it does
// not apply. kTensorCore: the Hopper wgmma kernel (kernels/lut_gemm_tc.h), any m.
enum class LutKernel { kAuto, kSplitK, kStrip, kTensorCore };

struct LutGemmParams {
  LutShape shape;                                // n, k, bits, group_size
  ActivationType dtype = ActivationType::kFloat16;
  int64_t m = 0;                                 // rows of X and Y (any m >= 1)
  const void* x = nullptr;                       // device [m, k], dtype, row-major, 16-B aligned
  const uint8_t* packed = nullptr;               // device, PackedCodeBytes(shape) bytes
  const uint16_t* scales = nullptr;              // device fp16 [n, k / group_size]
  const float* table = nullptr;                  // device fp32 [2^bits]
  void* y = nullptr;                             // device [m, n], dtype
  // fp32 split-K partial sums and per-tile counters. At least LutGemmWorkspaceBytes(shape, m)
  // bytes; ZEROED ONCE when allocated (the kernel leaves its counters at zero again).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  int split_k = 0;  // 0: chosen from the SM count of the current device; else forced (tests)
  LutKernel kernel = LutKernel::kAuto;
  // Programmatic dependent launch (kernels/pdl.cuh): the kernel is scheduled while the
  // previous kernel on the stream finishes. The strip kernel then loads its codes, scales and
  // pair table early and reads X only once that kernel has completed (the split-K kernel
  // waits at its top). Only for callers whose previous kernel does not write the weights.
  bool pdl = false;
  // With pdl: load the weights of every prologue stage (up to 3) before waiting for the
  // previous kernel, instead of the first one only. Worth it when that kernel is short and
  // leaves the SMs free, e.g. a chain of small kernels in a decode step (the engine sets it:
  // 8B W4 batch 1 -0.07 ms, batch 16 -0.17 ms on the H100); behind another GEMM the window
  // is short and the first stage's compute then waits for the whole early group (4096x4096
  // M = 1 back to back: 5.3 -> 6.3 us).
  bool early_weights = false;
  // With pdl, strip kernel: shared memory per SM that the previous kernel's blocks still hold
  // while this one starts (e.g. the decode attention before the O projection). The plan then
  // only counts the blocks that fit beside them, so that every block is resident at once and
  // streams its prologue weights during that kernel (fewer pipeline stages if need be).
  int coresident_smem = 0;
  // SwiGLU epilogue (the decode path of a fused gate/up projection). The rows of W are gate
  // and up features interleaved by 8 (lut::InterleaveRowHalves): rows [16j, 16j + 8) are gate
  // features [8j, 8j + 8) and rows [16j + 8, 16j + 16) the matching up features. y is then
  // [m, n / 2] = silu(gate) * up, gate and up rounded to dtype first: bitwise what the plain
  // GEMM into [m, n] followed by gpu::LaunchSwiGlu with interleave 8 gives. Both kernels, any m.
  bool swiglu = false;
  // Residual add + RMSNorm of a decode step, fused into the projections around them.
  // Residual epilogue (the projection before the norm; not with swiglu; the strip kernel, or
  // the tensor-core kernel, bf16 only, where the strip kernel does not take the call): instead of storing
  // Y, residual_out[m, n] (fp32, in place) += Y rounded to dtype, exactly as
  // gpu::LaunchAddRmsNorm adds a projection, and sumsq_out[m, n / 16] = the sum of squares of
  // the new residual over each 16 consecutive columns, in a fixed order. y is not used.
  float* residual_out = nullptr;
  float* sumsq_out = nullptr;
  // With the residual epilogue, tensor-core kernel only: also prenorm_out[m, n] (dtype) =
  // prenorm_weight[n] * (new residual[m, n]) rounded to dtype: the next RMSNorm's output before
  // its per-row factor 1 / rms, for a consumer with the deferred norm below; sumsq_out then
  // holds the sums over each 128 consecutive columns instead, [m, ceil(n / 128)] (8x fewer
  // for the consumer to read). (In fp16 the product could overflow where the normalized value
  // would not: compiled for bf16 only.)
  void* prenorm_out = nullptr;             // [m, n], 16-byte aligned
  const float* prenorm_weight = nullptr;  // fp32 [n]
  // Not both in one call (InvalidArgument).
  // Norm prologue (the projection after the norm; strip kernel only): X is not read from x but
  // computed in the kernel as X[r, c] = norm_weight[c] * (residual_in[r, c] * inv[r]) rounded
  // to dtype, with inv[r] = 1 / sqrt(sum of sumsq_in[r, 0 .. k / 16) / k + norm_eps) summed in
  // a fixed order (sumsq_in from a residual epilogue). x is not used.
  const float* residual_in = nullptr;  // fp32 [m, k], 16-byte aligned
  const float* sumsq_in = nullptr;     // fp32 [m, k / 16]
  const float* norm_weight = nullptr;  // fp32 [k], 16-byte aligned
  float norm_eps = 0.0f;
  // Deferred norm (the projection after the norm, tensor-core kernel and bf16 only, not with the
  // residual epilogue or the norm prologue): x is a prenorm_out, and the fp32 sums of row r
  // (before rounding, before SwiGLU) are multiplied by inv[r] = 1 / sqrt(sum of
  // deferred_sumsq[r, 0 .. k / 128) / k + norm_eps), the sums of that producer's sumsq_out
  // [m, k / 128] in a fixed order. Linear algebra makes this the norm
  // prologue's result up to where the rounding to dtype happens: sum_c round(w_c res_c) W_nc
  // inv against sum_c round(w_c res_c inv) W_nc, the same relative error per element.
  const float* deferred_sumsq = nullptr;  // 16-byte aligned

  bool residual_epilogue() const { return residual_out != nullptr; }
  bool norm_prologue() const { return residual_in != nullptr; }
  bool deferred_norm() const { return deferred_sumsq != nullptr; }
  // Fusions only the tensor-core kernel has.
  bool tensor_core_fusion() const { return prenorm_out != nullptr || deferred_norm(); }
};

// Whether LaunchLutGemm runs `params` on the persistent-strip kernel (the only one with the
// norm prologue; never with a tensor_core_fusion()).
bool UsesStripKernel(const LutGemmParams& params);

// OK when the CUDA kernel handles `shape` (today: every shape CheckShape accepts), else
// InvalidArgument naming the rule. Callers with an unsupported shape must use the CPU path.
absl::Status IsSupportedByCuda(const LutShape& shape);

// Workspace bytes a call with this shape and m needs on the current device (enough for the
// split-K kernel and the tensor-core kernel's automatic plans; the strip kernel needs none).
size_t LutGemmWorkspaceBytes(const LutShape& shape, int64_t m);

// The split-K count a call with this shape and m makes when split_k = 0, on the current
// device. The engine's batch-invariant mode forces LutGemmPlannedSplits(shape, 1) for every
// m, so that a row's summation order never depends on how many rows share the call.
int LutGemmPlannedSplits(const LutShape& shape, int64_t m);

// The most rows a call with a forced split_k > 1 may have: its output tiles must fit the
// workspace's fixed counter prefix (16384 tiles of up to 128 columns x 64 rows). Callers with
// more rows run them in pieces (rows are independent: each row's sums are the same).
int64_t LutGemmMaxRowsForForcedSplits(const LutShape& shape);

// Workspace bytes for a call with this shape and m and a forced split_k (> 0).
size_t LutGemmWorkspaceBytesForSplits(const LutShape& shape, int64_t m, int split_k);

// Launches on `stream` (asynchronous). Checks shape, pointers and workspace first and returns
// InvalidArgument with the reason, or Internal with the CUDA error after the launch.
// The split-K reduction always sums partials in split order, so the result is bitwise
// identical run to run (deterministic) whatever the block scheduling.
absl::Status LaunchLutGemm(const LutGemmParams& params, CUstream_st* stream);

}  // namespace flute::lut
