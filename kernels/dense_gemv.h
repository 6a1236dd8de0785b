// Dense 16-bit products for decode-sized batches (1 <= m <= 32) on the GPU, without cuBLAS:
//
//   Y[m, n] = X[m, k] · W[n, k]ᵀ   (W in the nn.Linear layout; all row-major, like DenseGemm)
//
// X and W are both fp16 or both bf16, Y is that type or fp32 (y_fp32: the LM head's logits),
// fp32 accumulation. At these m the product only streams W (at most 32 flop per byte of W), so
// the kernels (dense_gemv.cu) are built to read W exactly once at the memory's rate; cuBLAS
// reaches 58-70 % of the H100's copy bandwidth at m = 1 on the 4096-wide shapes and 73-76 % of
// the roofline at m = 16 and 32. m <= 8 runs one kernel (one CTA per 32-row strip), 9 <= m <= 32
// another (clusters of 4 or 8 CTAs per strip of 64 or 128 rows, X staged in shared memory);
// 9 <= m <= 16 may also run a third (DenseGemvParams::variant = 2: the m <= 8 kernel with two
// 8-row groups of X; faster alone where its strips fit one round, slower in the engine).
//
// Each output element is summed in an order fixed by k alone (never by m, n, the grid, the
// kernel or the run), so results are bitwise reproducible and row r of a call is bitwise the
// same for every m <= 32 that contains it (usable in the engine's batch-invariant mode).
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
  // 9 <= m <= 32 only (ignored below): the CTAs per cluster, 4 (strips of 64 rows of W) or 8
  // (128 rows); 0 = the launcher's choice (4). For tests and A/B runs: the results are bitwise
  // the same either way.
  int cluster = 0;
  // Which kernel runs 9 <= m <= 32 (ignored at m <= 8, where there is one): 0 = the launcher's
  // choice (the cluster kernel); 1 = the cluster kernel; 2 = the flat kernel, 9 <= m <= 16 only
  // (the m <= 8 kernel with two 8-row groups of X: one CTA per 32-row strip, no clusters;
  // `cluster` is ignored). For tests and A/B runs: the results are bitwise the same.
  int variant = 0;
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
  if (p.cluster != 0 && p.cluster != 4 && p.cluster != 8) {
    return fail("cluster must be 0 (the launcher's choice), 4 or 8, got ", p.cluster);
  }
  if (p.variant < 0 || p.variant > 2) {
    return fail("variant must be 0 (the launcher's choice), 1 (cluster kernel) or 2 (flat kernel), got ", p.variant);
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
  if (p.y == nullptr) return fail("y must be set");
  if (offset(p.x, 16) != 0) return fail("x must be 16-byte aligned, got an address ", offset(p.x, 16), " bytes past");
  if (offset(p.w, 16) != 0) return fail("w must be 16-byte aligned, got an address ", offset(p.w, 16), " bytes past");
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
