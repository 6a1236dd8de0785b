// Dense 16-bit products for decode-sized batches (1 <= m <= 32) on the GPU, without cuBLAS:
//
//   Y[m, n] = X[m, k] · W[n, k]ᵀ   (W in the nn.Linear layout; all row-major, like DenseGemm)
//
// X and W are both fp16 or both bf16, Y is that type or fp32 (y_fp32: the LM head's logits),
// fp32 accumulation. At these m the product only streams W (at most 32 flop per byte of W), so
// the kernels are built to read W exactly once at the memory's rate; cuBLAS reaches 58-70 % of
// the H100's copy bandwidth at m = 1 on the 4096-wide shapes and 73-76 % of the roofline at
// m = 16 and 32. The kernels (DenseGemvParams::variant):
// - m <= 8 (variant 0 without epilogues, or 1): one CTA per 32-row strip (dense_gemv.cu);
// - 9 <= m <= 32, variant 1: clusters of 2, 4 or 8 CTAs per strip of 32, 64 or 128 rows, X
//   staged in shared memory (dense_gemv.cu);
// - 9 <= m <= 16, variant 2: the m <= 8 kernel with two 8-row groups of X (faster alone where
//   its strips fit one round, slower in the engine);
// - any m, variant 3 (the launcher's choice at 9 <= m <= 32, and at m <= 8 for calls with an
//   epilogue): wgmma on 128-feature tiles, k split over the CTAs of a cluster
//   (dense_gemv_wgmma.cu; at m <= 16 its 16-row instance). H100, 8B bf16 decode step, against
//   the strip and cluster kernels: batch 16 6.29-6.33 -> 6.00-6.05 ms, batch 1 5.56 -> 5.46-5.49
//   (bench/results/ab-2026-11-26-h100/session27/). Alone, a plain call of m <= 8 is faster on
//   the strip kernel (4096 x 4096 at m = 1: 12.5 against 14.1 µs), hence the rule.
// The decode step's SwiGLU, residual add and deferred RMSNorm are optional epilogues of the
// cluster kernel at 9 <= m <= 16 and of the wgmma kernel.
//
// Each output element is summed in an order fixed by k (and, for the wgmma kernel, by n, k and
// the device's SM count) alone, never by m or the run, so results are bitwise reproducible. Row r
// of a call is bitwise the same for every m <= 32 that contains it across the first three
// kernels, and across every m for the wgmma kernel, but the wgmma kernel's bits differ from the
// others' (so the engine's batch-invariant mode uses none of them).
//
// Declared without CUDA headers so that CPU-only code can include it; a build without nvcc
// returns Unimplemented from LaunchDenseGemv (dense_gemv_stub.cc).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/lut_gemm.h"

struct CUstream_st;  // = cudaStream_t

namespace flute::gpu {

using lut::ActivationType;

struct DenseGemvParams {
  ActivationType dtype = ActivationType::kFloat16;  // of X and W (and of Y unless y_fp32)
  int64_t m = 0;            // rows of X and Y, 1..kDenseGemvMaxM
  int64_t n = 0;            // rows of W = columns of Y (out_features), >= 1
  int64_t k = 0;            // columns of X and W (in_features), >= 8 and a multiple of 8
  const void* x = nullptr;  // device [m, k], dtype, 16-byte aligned
  const void* w = nullptr;  // device [n, k], dtype, 16-byte aligned; never written while in use
  void* y = nullptr;        // device [m, n], dtype (2-byte aligned) or fp32 (4-byte aligned)
  bool y_fp32 = false;
  // Programmatic dependent launch (kernels/pdl.cuh): the kernel may start while the previous
  // kernel on the stream finishes; it streams its first W loads at once and reads X only after
  // that kernel has completed. Only for callers whose previous kernel does not write W.
  bool pdl = false;
  // 9 <= m <= 32 only (ignored below): the CTAs per cluster, 2 (strips of 32 rows of W; m <= 16
  // only), 4 (64 rows) or 8 (128 rows); 0 = the launcher's choice (2 at m <= 16 where strips of
  // 64 rows would leave the co-resident clusters about one each, else 4). For tests and A/B
  // runs: the results are bitwise the same either way.
  int cluster = 0;
  // Which kernel runs: 0 = the launcher's choice (m <= 8: the strip kernel, or the wgmma kernel
  // for a call with an epilogue; 9..32: the wgmma kernel); 1 = the cluster kernel at
  // 9 <= m <= 32 (the strip kernel below); 2 = the flat kernel,
  // 9 <= m <= 16 only (the m <= 8 kernel with two 8-row groups of X: one CTA per 32-row strip, no
  // clusters; `cluster` is ignored); 3 = the wgmma kernel at any m. Variants 1 and 2 give the
  // strip kernel's bits; the wgmma kernel's differ (its own summation order).
  int variant = 0;
  // The wgmma kernel only: the CTAs per cluster, each summing one piece of k (1..8; 0 = the
  // launcher's choice, see dense_gemv_wgmma.cu). Different counts give different bits.
  int splits = 0;
  // The wgmma kernel only: features per CTA tile, 64, 80, 96, 112 or 128 (0 = the launcher's
  // choice, ChooseDenseWgmmaPlan: the size whose CTAs best fill the device's slots). Different
  // sizes can give different split counts, hence different bits.
  int tile_n = 0;
  // A device counter, 0 before the first call, that hands out the strips after each block's
  // (cluster kernel: each cluster's) first two as blocks free up, instead of a fixed share per
  // block (the last ones to end no longer wait on the slowest SMs, or on clusters placed late). Every call leaves it 0 again; calls that share it must be ordered on one stream
  // (each reads it after its grid dependency wait). The results are bitwise the same either
  // way. null: fixed shares.
  unsigned int* strip_counter = nullptr;
  // This launch asks for the smallest shared-memory carveout that holds 2 of its blocks per SM
  // (cudaLaunchAttributePreferredSharedMemoryCarveout), the rest of the SM's 256 KB as L1, where
  // the in-flight loads of W land. For callers whose previous kernels leave the SMs at the
  // largest carveout (the decode attention's columns kernel): otherwise the driver keeps it and
  // the GEMV runs with 28 KB of L1 (the 8B bf16 decode step at batch 16: 7.9 ms instead of 6.9;
  // after the LUT kernels or the one-CTA-per-split attention, asking for it instead cost up to
  // 0.2 ms: each change of carveout keeps a kernel's CTAs off an SM until the previous
  // kernel's have left it). The m <= 8 kernel always asks for it. Bitwise the same results.
  bool prefer_l1 = false;

  // ---- Epilogues of the decode step's fusions (the cluster kernel at 9 <= m <= 16 or the wgmma
  // kernel; 16-bit y, n a multiple of 16). Each output element is still the same fp32 sum.
  // SwiGLU: W holds gate and up rows interleaved by 8 (rows [16j, 16j + 8) gate features
  // [8j, 8j + 8), the next 8 the matching up features); y is [m, n / 2] = silu(gate) * up, gate
  // and up rounded to dtype first: bitwise the plain call into [m, n] followed by
  // gpu::LaunchSwiGlu with interleave 8.
  bool swiglu = false;
  // Residual epilogue (not with swiglu): instead of storing y (unused, may be null),
  // residual[m, n] (fp32, in place) += Y rounded to dtype, exactly as gpu::LaunchAddRmsNorm adds
  // a projection, and sumsq_out[m, n / 16] = the sums of squares of the new residual over each 16
  // consecutive columns, in a fixed order (the layout of lut::LutGemmParams::sumsq_out). With
  // prenorm_out also prenorm_out[m, n] (dtype) = prenorm_weight[n] * new residual, rounded: the
  // next RMSNorm's output before its row factor (for a consumer with the deferred norm; in fp16
  // the product could overflow where the normalized value would not: the engine uses it in bf16).
  float* residual = nullptr;             // fp32 [m, n]
  float* sumsq_out = nullptr;            // fp32 [m, n / 16]
  void* prenorm_out = nullptr;           // dtype [m, n], 2-byte aligned; or null
  const float* prenorm_weight = nullptr;  // fp32 [n], with prenorm_out
  // Deferred norm: x is a prenorm_out, and the fp32 sums of row r (before the rounding, before
  // SwiGLU) are multiplied by inv[r] = 1 / sqrt(sum of deferred_sumsq[r, 0 .. k / 16) / k +
  // norm_eps), the producer's sumsq_out added in a fixed order (a function of k alone). Then the
  // result is the RMSNorm-then-GEMV one up to where the rounding to dtype happens (as
  // lut::LutGemmParams's deferred norm). k a multiple of 64; 16-byte aligned.
  const float* deferred_sumsq = nullptr;  // fp32 [m, k / 16]
  float norm_eps = 0.0f;

  bool residual_epilogue() const { return residual != nullptr; }
  bool deferred_norm() const { return deferred_sumsq != nullptr; }
  bool any_epilogue() const { return swiglu || residual_epilogue() || deferred_norm(); }
};

constexpr int64_t kDenseGemvMaxM = 32;
// n and k above this are refused (32-bit index arithmetic in the kernel).
constexpr int64_t kDenseGemvMaxDim = int64_t{1} << 30;

// The shape rules: 1 <= m <= 32; 1 <= n <= 2^30; 8 <= k <= 2^30 with k % 8 == 0 (every row of
// X and W is a whole number of 16-byte loads). Every LLaMA projection and LM head qualifies.
inline bool DenseGemvSupports(int64_t m, int64_t n, int64_t k) {
  return m >= 1 && m <= kDenseGemvMaxM && n >= 1 && n <= kDenseGemvMaxDim && k >= 8 &&
         k <= kDenseGemvMaxDim && k % 8 == 0;
}

// Whether LaunchDenseGemv runs `p` on the wgmma kernel.
inline bool DenseGemvRunsWgmma(const DenseGemvParams& p) {
  return p.variant == 3 || (p.variant == 0 && (p.m >= 9 || p.any_epilogue()));
}

// The epilogue fields of `p` (one of them set): OK or InvalidArgument naming the field.
inline absl::Status CheckDenseGemvEpilogue(const DenseGemvParams& p) {
  const auto fail = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("dense GEMV: ", parts...));
  };
  if (!p.residual_epilogue() && (p.prenorm_out != nullptr || p.sumsq_out != nullptr)) {
    return fail("prenorm_out and sumsq_out are outputs of the residual epilogue: residual must be set");
  }
  const char* which = p.swiglu ? "swiglu" : p.residual_epilogue() ? "the residual epilogue" : "the deferred norm";
  if (p.variant == 2) return fail(which, " runs on the cluster or wgmma kernel only: variant must be 0, 1 or 3, got 2");
  if (!DenseGemvRunsWgmma(p) && (p.m < 9 || p.m > 16)) {
    return fail(which, " runs on the cluster kernel with 2 groups of X rows or on the wgmma kernel (variant 3, or 0 "
                "at any m): with variant ", p.variant, " m must be in [9, 16], got ", p.m);
  }
  if (p.y_fp32) return fail(which, " writes 16-bit outputs: y_fp32 must be false");
  if ((p.swiglu || p.residual_epilogue()) && p.n % 16 != 0) {
    return fail(which, " needs n to be a multiple of 16, got ", p.n);
  }
  if (p.swiglu && p.residual_epilogue()) return fail("swiglu and the residual epilogue cannot be combined");
  const auto misaligned = [](const void* ptr, uintptr_t align) { return reinterpret_cast<uintptr_t>(ptr) % align != 0; };
  if (p.residual_epilogue()) {
    if (p.sumsq_out == nullptr) return fail("the residual epilogue needs sumsq_out");
    if ((p.prenorm_out == nullptr) != (p.prenorm_weight == nullptr)) {
      return fail("prenorm_out and prenorm_weight must be set together");
    }
    if (misaligned(p.residual, 4) || misaligned(p.sumsq_out, 4) || misaligned(p.prenorm_weight, 4) ||
        misaligned(p.prenorm_out, 2)) {
      return fail("residual, sumsq_out and prenorm_weight must be 4-byte aligned and prenorm_out 2-byte aligned");
    }
  }
  if (p.deferred_norm()) {
    if (p.k % 64 != 0) return fail("the deferred norm needs k to be a multiple of 64, got ", p.k);
    if (misaligned(p.deferred_sumsq, 16)) return fail("deferred_sumsq must be 16-byte aligned");
    if (!(p.norm_eps >= 0.0f)) return fail("norm_eps must be >= 0, got ", p.norm_eps);
  }
  return absl::OkStatus();
}

// OK when LaunchDenseGemv would launch `p`; else InvalidArgument naming the field, what it
// must be and what it was. Pure host code: no CUDA call.
inline absl::Status CheckDenseGemvParams(const DenseGemvParams& p) {
  const auto fail = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("dense GEMV: ", parts...));
  };
  if (p.m < 1 || p.m > kDenseGemvMaxM) return fail("m must be in [1, ", kDenseGemvMaxM, "], got ", p.m);
  if (p.n < 1 || p.n > kDenseGemvMaxDim) return fail("n must be in [1, 2^30], got ", p.n);
  if (p.k < 8 || p.k > kDenseGemvMaxDim || p.k % 8 != 0) {
    return fail("k must be a multiple of 8 in [8, 2^30] (16-byte rows), got ", p.k);
  }
  if (p.cluster != 0 && p.cluster != 2 && p.cluster != 4 && p.cluster != 8) {
    return fail("cluster must be 0 (the launcher's choice), 2, 4 or 8, got ", p.cluster);
  }
  if (p.cluster == 2 && p.m > 16) return fail("cluster 2 (strips of 32 rows) takes m <= 16, got m = ", p.m);
  if (p.variant < 0 || p.variant > 3) {
    return fail("variant must be 0 (the launcher's choice), 1 (cluster kernel), 2 (flat kernel) or 3 (wgmma kernel), got ",
                p.variant);
  }
  if (p.splits < 0 || p.splits > 8) return fail("splits must be in [0, 8] (0: the launcher's choice), got ", p.splits);
  if (p.tile_n != 0 && (p.tile_n < 64 || p.tile_n > 128 || p.tile_n % 16 != 0)) {
    return fail("tile_n must be 0 (the launcher's choice), 64, 80, 96, 112 or 128, got ", p.tile_n);
  }
  if (p.variant == 2 && p.m > 16) {
    return fail("variant 2 (the flat kernel) takes m <= 16, got m = ", p.m);
  }
  if (p.dtype != ActivationType::kFloat16 && p.dtype != ActivationType::kBFloat16) {
    return fail("dtype must be fp16 or bf16, got ", static_cast<int>(p.dtype));
  }
  const auto offset = [](const void* ptr, uintptr_t align) { return reinterpret_cast<uintptr_t>(ptr) % align; };
  if (p.x == nullptr) return fail("x must be set");
  if (p.w == nullptr) return fail("w must be set");
  if (p.y == nullptr && !p.residual_epilogue()) return fail("y must be set");
  if (offset(p.x, 16) != 0) return fail("x must be 16-byte aligned, got an address ", offset(p.x, 16), " bytes past");
  if (offset(p.w, 16) != 0) return fail("w must be 16-byte aligned, got an address ", offset(p.w, 16), " bytes past");
  if (p.any_epilogue() || p.prenorm_out != nullptr || p.sumsq_out != nullptr) {
    const absl::Status epilogue = CheckDenseGemvEpilogue(p);
    if (!epilogue.ok()) return epilogue;
  }
  if (p.residual_epilogue()) return absl::OkStatus();  // (y is not used)
  const uintptr_t y_align = p.y_fp32 ? 4 : 2;
  if (offset(p.y, y_align) != 0) {
    return fail("y must be ", y_align, "-byte aligned (", p.y_fp32 ? "fp32" : "16-bit", " output), got an address ",
                offset(p.y, y_align), " bytes past");
  }
  return absl::OkStatus();
}

// Launches on `stream` (asynchronous). CheckDenseGemvParams first (nothing is launched when it
// fails), then Internal with the CUDA error if the launch fails.
absl::Status LaunchDenseGemv(const DenseGemvParams& params, CUstream_st* stream);

}  // namespace flute::gpu
