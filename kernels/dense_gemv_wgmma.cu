// The dense 16-bit product Y[m, n] = X[m, k] · W[n, k]ᵀ for decode batches of 9-32 rows on the
// H100's wgmma (sm_90a), with the decode step's fused epilogues. See dense_gemv.h for the
// contract and dense_gemv_wgmma.h for the launcher.
//
// Why: at 17-32 rows the cluster kernel's mma.sync layout needs 4 B fragments per A fragment
// and runs out of registers (0.69-0.92x cuBLAS, bench/results/dense-gemv-m32-2026-11-26-h100.md),
// and cuBLAS (86-93 % of the copy bandwidth on the 8B shapes at m = 32) needs separate SwiGLU and
// add + RMSNorm kernels. wgmma reads both operands from shared memory, so a k16 step of 64
// features x 32 rows is one instruction per warpgroup and no register holds W. H100, 8B bf16
// decode at batch 32: 7.23-7.29 ms per step with cuBLAS and the norm kernels, 6.94-6.97 with
// this kernel (bench/results/ab-2026-11-26-h100/session25/).
//
// - Work: tiles of tile_n features (rows of W; 128, or 64-112 where that fills the device
//   better) x 32 rows of X (rows >= m zero-filled), one cluster of `splits` CTAs per tile; CTA
//   `rank` sums the k-tiles [rank·T/s, (rank+1)·T/s) (T = ceil(k / 64) k-tiles of 64), so the
//   split depends on n, k and the device's residency only (never on m).
//   ChooseDenseWgmmaSplits: the most pieces (of >= 8 k-tiles) with which all clusters are
//   resident at once with an eighth of the cluster slots to spare (4096x4096 alone: 7 beat 2, 4
//   and 8 forced, 14.7 against 19.6, 16.3 and 18.3 µs at m = 32; in the decode step 6 beats 7,
//   whose last clusters start late). ChooseDenseWgmmaPlan: where 128-feature tiles need no split, the tile size whose
//   CTAs best fill the slots of their waves. The 8B gate/up projection has 224 tiles of 128 for
//   the H100's 264 slots (40 SMs streaming with one CTA), 256 of 112: 87.2-88.2 -> 84.1-84.2 µs
//   at m = 24-32 (cuBLAS 83-84); the bf16 step at batch 32 -0.06 to +0.02 ms (the free slots had
//   let the down projection's first CTAs start early), no batch of 17-32 slower. A tile of
//   112 loads 112 rows per stage (the box of its tensor map); the stage's other rows go through
//   the wgmmas unloaded, into accumulator rows that are never stored. Not kept: smaller tiles for
//   the split products too (qkv 96 x 4, O and down 96 x 6: 258-259 CTAs instead of 224-240),
//   slower alone (qkv 20.5 -> 21.3 µs) and in the step (+0.05-0.1 ms); Stream-K over all 264
//   slots (bench/results/ab-2026-11-26-h100/session26/).
// - A CTA = 2 warpgroups; warpgroup h owns features 64h .. 64h + 63 of the tile (wgmma
//   m64n32k16, D in 16 fp32 registers per thread). Per k-tile a stage holds W [128 rows][128 B]
//   (tile_n of them loaded)
//   and X [32 rows][128 B], both K-major with the 128-byte swizzle (16-byte chunk c of row r at
//   r·128 + (c ^ (r % 8))·16). W arrives by TMA: one bulk tensor copy per stage (box [128 rows]
//   [64 k] of a tensor map with the 128-byte swizzle and 256-byte L2 promotion; rows past n and
//   k past the end read as zeros), issued by thread 0 and completing on the stage's mbarrier.
//   X by cp.async (each thread one 16-byte chunk; chunks past m or k zero-filled).
//   FLUTE_DENSE_WGMMA_TMA=0 copies W by cp.async too (each thread 4 chunks, with a 256-byte L2
//   prefetch: FLUTE_DENSE_WGMMA_L2=0 or 128 for A/B runs), bitwise the same. H100, 8B bf16 step
//   at batch 32: 6.90-6.93 ms with TMA, 6.95-6.98 with cp.async; cp.async without the L2
//   prefetch had taken the gate/up projection 88.3 instead of 84.2 µs.
// - 5 stages (100 KB) and 2 CTAs per SM: up to 8 k-tiles of W (128 KB) in flight per SM.
//   Calls of m <= 16 (W by TMA) run a 16-row instance (wgmma m64n16k16, X stages of
//   2 KB, 6 stages of 18 KB): same bits (an output's k16 products are summed the same way
//   whatever the wgmma's N). H100, 8B bf16 decode step with every dense product of <= 16 rows on
//   this kernel (bench/results/ab-2026-11-26-h100/session27/): batch 16 6.31-6.36 ms with the
//   32-row instance, 6.00-6.01 with the 16-row one (the cluster kernel: 6.28-6.30), batch 8
//   5.96-6.02 / 5.73-5.76 (the strip kernel: 5.82-5.87). The stage count is not what matters
//   (the 16-row instance with 5 stages: 6.01-6.05 at batch 16); the cause of the 32-row
//   instance's extra ~1.7 µs per call at these m was not isolated. Tried at 17-32 rows and not
//   kept: W stages of 112 rows with X right after them (6 stages, or 5), +0.2 ms at batch 32;
//   each k16 step as two n16 wgmmas, +0.05 ms. (Not kept before: 10 stages with one CTA per
//   SM, the 8B step 0.6 ms slower; an L2 bulk prefetch of W 2-8 k-tiles ahead of the copies,
//   10-40 % slower.)
// - One barrier per k-tile: wait for the stage's copies, fence them to the async proxy, barrier,
//   refill the stage of the previous k-tile (whose wgmmas every thread retired before the
//   barrier), then 4 wgmmas on this stage and wait for them. The tensor cores are idle between
//   k-tiles, but a k-tile's 4 wgmmas take well under the time its 20 KB take to arrive.
// - PDL: the CTA lets the next kernel be scheduled, requests W of its first 4 (16 rows: 5) stages, and only
//   then waits for the previous kernel (which writes X, the residual and the deferred norm's
//   sums). Nothing that waits on a load of its own stands between the copies and the main loop:
//   the residual epilogue's operands are loaded there but used only at the end, and the deferred
//   norm's factors are computed during the first k-tile.
// - End: each CTA leaves its [32 x 128] fp32 sums in its shared memory, one cluster barrier,
//   then CTA r finishes the 16-feature groups r, r + s, ...: each output the s pieces' sums in
//   rank (= k) order from 0.0f (all pieces loaded before the first add), then the epilogue
//   (dense_gemv_common.cuh: the cluster kernel's, so the same bits as the unfused kernels), a
//   half-warp per 16 consecutive features of a row. A last cluster barrier keeps the CTAs
//   resident until the others have read them.
// - Determinism: an output's summation order depends on k and the split count alone, so calls are
//   bitwise reproducible and row r has the same bits for every m (and for any X rows beside it).
//   It is not the order of the other dense kernels: rows of a 17-32-row call differ in their
//   last bits from the same rows at m <= 16 (the engine's batch-invariant mode runs cuBLAS).
#include "kernels/dense_gemv_wgmma.h"

#include <cuda.h>  // CUtensorMap and its enums (types only: no driver library is linked)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/cluster.cuh"
#include "kernels/dense_gemv_common.cuh"
#include "kernels/kernel_trace.cuh"
#include "kernels/pdl.cuh"

namespace flute::gpu {
namespace {

constexpr int kThreads = 256;                  // 2 warpgroups
constexpr int kTileN = 128;                    // features (rows of W) per tile
constexpr int kTileM = 32;                     // rows of X (the wgmma N) of the general instances
constexpr int kTileK = 64;                     // k per stage: one 128-byte swizzle row
constexpr int kWStageBytes = kTileN * 128;     // 16 KB
constexpr int kRedPitch = kTileN + 4;          // floats per X row of the sums (conflict-free writes)
constexpr int kGroups = kTileN / 16;           // the epilogue's 16-feature groups of a tile
constexpr int kMaxSplits = 8;
constexpr int kMinKTilesPerSplit = 8;
static_assert(kTileM == kDenseGemvMaxM, "one tile of X rows covers every call");

// The pipeline of an instance for kRows rows of X (the wgmma N: 32, or 16 for calls of m <= 16
// with W by TMA): stages of W [128 rows][128 B] followed by X [kRows][128 B], as many as
// keep 2 CTAs per SM (228 KB of shared memory): 5 of 20 KB, or 6 of 18 KB.
template <int kRowsX>
struct Pipe {
  static constexpr int kRows = kRowsX;
  static_assert(kRows == 16 || kRows == 32, "16 or 32 rows of X");
  static constexpr int kXOffset = kWStageBytes;  // X's place in a stage (1024-aligned: swizzle)
  static constexpr int kXStageBytes = kRows * 128;
  static constexpr int kStageBytes = kXOffset + kXStageBytes;
  static constexpr int kStages = kRows == 16 ? 6 : 5;
  static constexpr int kSmemBytes = 1024 + kStages * kStageBytes;  // + 1024: the stages 1024-aligned
  static constexpr int kAcc = kRows / 2;      // accumulators per thread (wgmma m64nRk16)
  static constexpr int kRowGroups = kRows / 16;  // the epilogue's rows per thread: tid / 16 + 16u
  static_assert(kRows * kRedPitch * 4 <= kStages * kStageBytes, "the sums reuse the stages");
};

struct WgmmaArgs {
  const void* x;  // [m, k]
  const void* w;  // [n, k]
  void* y;        // [m, n] (swiglu: [m, n / 2]; residual epilogue: unused)
  int m, n, k;
  int ktiles;  // ceil(k / 64)
  int tile_n;  // features per tile: 64, 80, 96, 112 or 128 (ChooseDenseWgmmaTile)
  int groups;  // tile_n / 16: the epilogue's 16-feature groups of a tile
  int splits;  // CTAs per cluster (the launch's cluster dimension)
  int l2_prefetch;  // W copies' L2 prefetch size: 0, 128 or 256 bytes
  bool swiglu;
  float* residual;
  float* sumsq_out;
  void* prenorm_out;
  const float* prenorm_weight;
  const float* deferred_sumsq;
  float norm_eps;
};

// CpAsync16 with an L2 prefetch of the 256 (or 128) bytes around it (W on the cp.async path: a
// k-tile reads 128 bytes of each row, the prefetch brings the next k-tile's into L2 with it).
__device__ __forceinline__ void CpAsync16Prefetch(uint32_t dst, const void* src, bool valid, int l2_prefetch) {
  if (l2_prefetch == 256) {
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
  } else if (l2_prefetch == 128) {
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
  } else {
    CpAsync16(dst, src, valid);
  }
}
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void FenceProxyAsyncShared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaWaitAll() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

// ---- The TMA path (kTma): W's k-tiles as bulk tensor copies, one per stage, completing on the
// stage's mbarrier (X stays on cp.async). The tensor map's box is [128 rows][64 k] with the
// 128-byte swizzle, which is the layout CopyW writes; rows past n and k past the end read zeros.
__device__ __forceinline__ void MbarInit(uint32_t bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void MbarWait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n"
      "  .reg .pred done;\n"
      "WAIT_%=:\n"
      "  mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "  @!done bra.uni WAIT_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// Thread 0: k-tile kt of the tile's W rows (the first tile_n of the stage's 128) into the stage
// at `dst`, completing on `bar`.
__device__ __forceinline__ void TmaW(const CUtensorMap* map, uint32_t dst, uint32_t bar, int n0, int kt, int tile_n) {
  MbarArriveExpectTx(bar, tile_n * 128);
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
          "r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(kt * kTileK), "r"(n0), "r"(bar)
      : "memory");
}

// Shared-memory matrix descriptor of a K-major operand with the 128-byte swizzle: start address
// >> 4 (bits 0-13), leading byte offset 1 (unused: a k16 slice lies in one 128-byte row), stride
// byte offset 1024 >> 4 (8-row groups), swizzle mode 1 (bits 62-63). k16 step kk of a stage
// starts 32·kk bytes into the rows (the swizzle applies to the address bits).
__device__ __forceinline__ uint64_t SwizzledKMajorDesc(uint32_t smem_addr) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// D[64 features x kRows rows] += A[64 x 16] (W, shared) · B[16 x kRows] (Xᵀ, shared). d[4i + c]:
// feature 16·(warp % 4) + g + 8·(c >> 1) of the warpgroup, X row 8i + 2q + (c & 1).
// (AB: the PTX type of both operands, "f16" or "bf16".)
#define FLUTE_WGMMA_M64N16K16(AB)                                                                        \
  asm volatile("wgmma.mma_async.sync.aligned.m64n16k16.f32." AB "." AB "\n"                              \
               "{%0, %1, %2, %3, %4, %5, %6, %7},\n"                                                      \
               "%8, %9, 1, 1, 1, 0, 0;\n"                                                                \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),     \
                 "+f"(d[7])                                                                              \
               : "l"(desc_a), "l"(desc_b))
#define FLUTE_WGMMA_M64N32K16(AB)                                                                        \
  asm volatile("wgmma.mma_async.sync.aligned.m64n32k16.f32." AB "." AB "\n"                              \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15},\n"                \
               "%16, %17, 1, 1, 1, 0, 0;\n"                                                              \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),     \
                 "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), \
                 "+f"(d[14]), "+f"(d[15])                                                                \
               : "l"(desc_a), "l"(desc_b))
template <typename T, int kRows>
__device__ __forceinline__ void WgmmaSS(float* d, uint64_t desc_a, uint64_t desc_b) {
  constexpr bool kHalf = std::is_same_v<T, __half>;
  if constexpr (kRows == 16) {
    if constexpr (kHalf) {
      FLUTE_WGMMA_M64N16K16("f16");
    } else {
      FLUTE_WGMMA_M64N16K16("bf16");
    }
  } else if constexpr (kHalf) {
    FLUTE_WGMMA_M64N32K16("f16");
  } else {
    FLUTE_WGMMA_M64N32K16("bf16");
  }
}
#undef FLUTE_WGMMA_M64N16K16
#undef FLUTE_WGMMA_M64N32K16

// This thread's copies of k-tile kt into the stage at `stage` (a shared address): chunk
// c = tid % 8 of rows tid / 8 + 32j of W (j < 4), and of X row tid / 8.
__device__ __forceinline__ void CopyW(const WgmmaArgs& a, uint32_t stage, int n0, int kt) {
  const int tid = threadIdx.x, c = tid & 7, k = kt * kTileK + 8 * c;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int row = (tid >> 3) + 32 * j, n = n0 + row;
    const bool valid = row < a.tile_n && n < a.n && k < a.k;
    const char* src = static_cast<const char*>(a.w) + (valid ? (static_cast<int64_t>(n) * a.k + k) * 2 : 0);
    CpAsync16Prefetch(stage + row * 128 + ((c ^ (row & 7)) << 4), src, valid, a.l2_prefetch);
  }
}
template <typename P>
__device__ __forceinline__ void CopyX(const WgmmaArgs& a, uint32_t stage, int kt) {
  const int tid = threadIdx.x, c = tid & 7, k = kt * kTileK + 8 * c, row = tid >> 3;
  if (row >= P::kRows) return;  // (16-row instances: threads 128-255 copy nothing)
  const bool valid = row < a.m && k < a.k;
  const char* src = static_cast<const char*>(a.x) + (valid ? (static_cast<int64_t>(row) * a.k + k) * 2 : 0);
  CpAsync16(stage + P::kXOffset + row * 128 + ((c ^ (row & 7)) << 4), src, valid);
}

// Copies the first stages of the CTA's k-tiles [kt0, kt1): W before the grid dependency wait
// (weights are never written by the previous kernel), X after it. cp.async group s holds X of
// stage s (group 0 also all the early W), so in MainLoop wait_group kStages - 2 at k-tile it
// means "stage it has landed".
template <bool kTma, typename P>
__device__ __forceinline__ void Prologue(const WgmmaArgs& a, const CUtensorMap* w_map, uint32_t stages, uint32_t bars,
                                         int n0, int kt0, int kt1) {
  constexpr int kStages = P::kStages, kStageBytes = P::kStageBytes;
  const int nk = kt1 - kt0;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s >= nk) continue;
    if constexpr (kTma) {
      if (threadIdx.x == 0) TmaW(w_map, stages + s * kStageBytes, bars + 8 * s, n0, kt0 + s, a.tile_n);
    } else {
      CopyW(a, stages + s * kStageBytes, n0, kt0 + s);
    }
  }
  GridDependencyWait();
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nk) CopyX<P>(a, stages + s * kStageBytes, kt0 + s);
    CpAsyncCommit();
  }
}

// The CTA's piece of its tile after the Prologue: acc = the sums over k-tiles [kt0, kt1).
// at_first_tile() runs once, with the first k-tile's wgmmas and the next stages' copies in flight
// (work that waits on loads of its own without holding up the copies).
template <typename T, bool kTma, typename P, typename AtFirstTile>
__device__ __forceinline__ void MainLoop(const WgmmaArgs& a, const CUtensorMap* w_map, uint32_t stages, uint32_t bars,
                                         int n0, int kt0, int kt1, float (&acc)[P::kAcc], AtFirstTile&& at_first_tile) {
  constexpr int kStages = P::kStages, kStageBytes = P::kStageBytes;
  const int nk = kt1 - kt0, wg = threadIdx.x >> 7;
#pragma unroll
  for (int i = 0; i < P::kAcc; ++i) acc[i] = 0.0f;
  for (int it = 0; it < nk; ++it) {
    CpAsyncWait<kStages - 2>();
    if constexpr (kTma) MbarWait(bars + 8 * (it % kStages), (it / kStages) & 1);
    FenceProxyAsyncShared();  // this thread's landed copies -> the wgmmas' async-proxy reads
    __syncthreads();          // every copy of stage it landed; every wgmma of k-tile it - 1 retired
    const int refill = it + kStages - 1;
    if (refill < nk) {
      const uint32_t stage = stages + (refill % kStages) * kStageBytes;
      if constexpr (kTma) {
        if (threadIdx.x == 0) TmaW(w_map, stage, bars + 8 * (refill % kStages), n0, kt0 + refill, a.tile_n);
      } else {
        CopyW(a, stage, n0, kt0 + refill);
      }
      CopyX<P>(a, stage, kt0 + refill);
    }
    CpAsyncCommit();  // (possibly empty: the group count stays one per k-tile)
    const uint32_t stage = stages + (it % kStages) * kStageBytes;
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kTileK / 16; ++kk) {
      WgmmaSS<T, P::kRows>(acc, SwizzledKMajorDesc(stage + wg * 64 * 128 + 32 * kk),
                           SwizzledKMajorDesc(stage + P::kXOffset + 32 * kk));
    }
    WgmmaCommit();
    if (it == 0) at_first_tile();
    WgmmaWaitAll();
  }
  CpAsyncWait<0>();
}

template <typename T, typename TY, bool kTma, typename P>
__global__ void __launch_bounds__(kThreads, 2)
    DenseGemvWgmmaKernel(const WgmmaArgs a, const __grid_constant__ CUtensorMap w_map) {
  const trace::Scope trace_scope(trace::kDenseGemv, a.n, a.k);
  constexpr int kStages = P::kStages;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ float s_inv[P::kRows];
  __shared__ uint64_t s_full[kStages];  // kTma: the stages' W arrivals
  unsigned char* const smem =
      smem_raw + ((1024 - (SharedAddress(smem_raw) & 1023)) & 1023);  // the stages 1024-aligned
  const uint32_t stages = SharedAddress(smem);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int rank = static_cast<int>(blockIdx.x) % a.splits, tile = static_cast<int>(blockIdx.x) / a.splits;
  const int n0 = tile * a.tile_n;
  const int kt0 = static_cast<int>(static_cast<int64_t>(rank) * a.ktiles / a.splits);
  const int kt1 = static_cast<int>(static_cast<int64_t>(rank + 1) * a.ktiles / a.splits);

  const uint32_t bars = SharedAddress(s_full);
  if (kTma) {
    if (tid == 0) {
#pragma unroll
      for (int s = 0; s < kStages; ++s) MbarInit(bars + 8 * s);
      asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
  }
  LaunchDependents();
  Prologue<kTma, P>(a, &w_map, stages, bars, n0, kt0, kt1);  // (waits for the previous kernel)
  constexpr bool kEpilogues = !std::is_same<TY, float>::value;
  // The epilogue's outputs: groups of 16 features, CTA `rank` finishing groups rank, rank +
  // splits, ...; a half-warp per row and group: lane16 = tid % 16 is the feature, rows tid / 16
  // and tid / 16 + 16. The residual epilogue's operands are loaded here, before the main loop
  // (after the grid dependency wait: the residual is a previous kernel's output), so that no
  // round trip is left for the end.
  const int lane16 = tid & 15;
  float old[kGroups][P::kRowGroups], prenorm_weight[kGroups];
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int out = n0 + 16 * (rank + j * a.splits) + lane16;
    prenorm_weight[j] = 0.0f;
#pragma unroll
    for (int u = 0; u < P::kRowGroups; ++u) {
      const int mm = (tid >> 4) + 16 * u;
      const bool load = kEpilogues && a.residual != nullptr && rank + j * a.splits < a.groups && mm < a.m && out < a.n;
      old[j][u] = load ? __ldcg(a.residual + static_cast<int64_t>(mm) * a.n + out) : 0.0f;
    }
    if (kEpilogues && a.prenorm_out != nullptr && rank + j * a.splits < a.groups && out < a.n) {
      prenorm_weight[j] = __ldg(a.prenorm_weight + out);
    }
  }
  float acc[P::kAcc];
  MainLoop<T, kTma, P>(a, &w_map, stages, bars, n0, kt0, kt1, acc, [&] {
    // The deferred norm's factors of rows tid / 16 and tid / 16 + 16 (read after the loop's
    // barriers). Computed before the loop, their L2 round trips stalled every CTA with the first
    // stages' copies landed: the 8B bf16 step at batch 32 took 7.06-7.07 ms instead of 6.94-6.97.
    if (kEpilogues && a.deferred_sumsq != nullptr) {
#pragma unroll
      for (int u = 0; u < P::kRowGroups; ++u) {
        const float inv = DeferredNormFactor(a, (tid >> 4) + 16 * u, tid & 15);
        if ((tid & 15) == 0) s_inv[(tid >> 4) + 16 * u] = inv;
      }
    }
  });
  __syncthreads();  // every warp is done with the stages: they hold the sums now
  float* const red = reinterpret_cast<float*>(smem);  // [P::kRows][kRedPitch]
  const int feature0 = 64 * (warp >> 2) + 16 * (warp & 3) + g;
#pragma unroll
  for (int i = 0; i < P::kAcc; ++i) {
    const int row = 8 * (i >> 2) + 2 * q + (i & 1), feature = feature0 + 8 * ((i >> 1) & 1);
    red[row * kRedPitch + feature] = acc[i];
  }
  if (a.splits > 1) {
    ClusterSync();
  } else {
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int group = rank + j * a.splits;
    if (group >= a.groups) break;  // (uniform over the CTA)
    const int feature = 16 * group + lane16, out = n0 + feature;
    // The pieces' sums of rows tid / 16 + 16u, all loads issued before the first add.
    float piece[P::kRowGroups][kMaxSplits];
#pragma unroll
    for (int u = 0; u < P::kRowGroups; ++u) {
      const int mm = (tid >> 4) + 16 * u;
      const uint32_t addr = SharedAddress(red + mm * kRedPitch + feature);
#pragma unroll
      for (int r = 0; r < kMaxSplits; ++r) {
        piece[u][r] = r >= a.splits ? 0.0f
                      : a.splits == 1 ? red[mm * kRedPitch + feature]
                                      : LoadSharedCluster(MapShared(addr, r));
      }
    }
#pragma unroll
    for (int u = 0; u < P::kRowGroups; ++u) {
      const int mm = (tid >> 4) + 16 * u;
      const bool valid = mm < a.m && out < a.n;  // (uniform over each half-warp where n % 16 == 0)
      float sum = 0.0f;
#pragma unroll
      for (int r = 0; r < kMaxSplits; ++r) {
        if (r < a.splits) sum += piece[u][r];  // rank (= k) order from 0.0f
      }
      if constexpr (kEpilogues) {
        if (a.deferred_sumsq != nullptr) sum *= s_inv[mm];
        if (StoreFusedOutput<T>(a, sum, mm, out, lane16, valid, old[j][u], prenorm_weight[j])) continue;
      }
      if (valid) static_cast<TY*>(a.y)[static_cast<int64_t>(mm) * a.n + out] = OutCvt<TY>::FromFloat(sum);
    }
  }
  if (a.splits > 1) ClusterSyncRelaxed();  // no CTA exits while another may still read its sums
}

// ---- Host side ------------------------------------------------------------------------------

using KernelFn = void (*)(const WgmmaArgs, const CUtensorMap);

// A kernel instance and its dynamic shared memory.
struct KernelChoice {
  KernelFn fn;
  int smem;
};
// The instance for a call: `rows16` (m <= 16) picks the 16-row one, which exists with W by TMA
// only (the engine's calls; W by cp.async runs Pipe<32>, with the same bits).
template <typename T, typename TY>
KernelChoice ChooseForType(bool tma, bool rows16) {
  using Wide = Pipe<kTileM>;
  using Rows16 = Pipe<16>;
  if (tma && rows16) return KernelChoice{DenseGemvWgmmaKernel<T, TY, true, Rows16>, Rows16::kSmemBytes};
  return tma ? KernelChoice{DenseGemvWgmmaKernel<T, TY, true, Wide>, Wide::kSmemBytes}
             : KernelChoice{DenseGemvWgmmaKernel<T, TY, false, Wide>, Wide::kSmemBytes};
}
KernelChoice SelectKernel(ActivationType dtype, bool y_fp32, bool tma, bool rows16) {
  if (dtype == ActivationType::kBFloat16) {
    return y_fp32 ? ChooseForType<__nv_bfloat16, float>(tma, rows16)
                  : ChooseForType<__nv_bfloat16, __nv_bfloat16>(tma, rows16);
  }
  return y_fp32 ? ChooseForType<__half, float>(tma, rows16) : ChooseForType<__half, __half>(tma, rows16);
}

// The tensor map of a 16-bit [rows, k] matrix for the TMA path (box [box_rows][64 k], 128-byte
// swizzle, 256-byte L2 promotion; rows past `rows` read as zeros): W [n, k] with box_rows =
// tile_n, X [m, k] with 32. Encoded through the driver's cuTensorMapEncodeTiled (found at run
// time: the library links only the runtime). Cached per (address, rows, k, dtype, box): the
// engine's weights and activation buffers never move, and encoding costs microseconds of host
// time per call.
absl::StatusOr<CUtensorMap> TensorMap(const void* ptr, int64_t rows, int64_t k, ActivationType dtype, int box_rows) {
  static std::mutex mu;
  static PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
  using Key = std::tuple<const void*, int64_t, int64_t, int, int>;
  static auto* cache = new std::map<Key, CUtensorMap>();
  const Key key{ptr, rows, k, static_cast<int>(dtype), box_rows};
  std::lock_guard<std::mutex> lock(mu);
  const auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  if (encode == nullptr) {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
    if (err != cudaSuccess || found != cudaDriverEntryPointSuccess || fn == nullptr) {
      return absl::InternalError(absl::StrCat("dense wgmma: cuTensorMapEncodeTiled not found: ", cudaGetErrorString(err)));
    }
    encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }
  CUtensorMap map;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(k), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(k) * 2};  // bytes between rows
  const cuuint32_t box[2] = {kTileK, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = encode(&map, dtype == ActivationType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                                      : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                            2, const_cast<void*>(ptr), dims, strides, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("dense wgmma: cuTensorMapEncodeTiled failed (rows=", rows, " k=", k,
                                            " box rows=", box_rows, "): CUresult ", static_cast<int>(r)));
  }
  cache->emplace(key, map);
  return map;
}

// What fits the current device at once for `fn` (which gets its shared-memory attribute here):
// CTAs, and clusters of 1..8 CTAs. Cached per (device, kernel).
struct Residency {
  int ctas = 0;
  int clusters[kMaxSplits] = {};
};
absl::StatusOr<Residency> ResidencyOf(const KernelChoice& k) {
  const KernelFn fn = k.fn;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("dense wgmma: cudaGetDevice: ", cudaGetErrorString(err)));
  static std::mutex mu;
  static auto* cache = new std::map<std::pair<int, KernelFn>, Residency>();
  const std::pair<int, KernelFn> key{device, fn};
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto it = cache->find(key);
    if (it != cache->end()) return it->second;
  }
  Residency r;
  int sms = 0, per_sm = 0;
  err = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, k.smem);
  if (err == cudaSuccess) err = cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kThreads, k.smem);
  r.ctas = sms * per_sm;
  for (int s = 1; s <= kMaxSplits && err == cudaSuccess; ++s) {
    err = MaxActiveClusters(fn, s, kThreads, k.smem, &r.clusters[s - 1]);
  }
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("dense wgmma: occupancy query failed: ", cudaGetErrorString(err)));
  }
  if (r.ctas < 1) return absl::InternalError("dense wgmma: the kernel does not fit this device");
  std::lock_guard<std::mutex> lock(mu);
  cache->emplace(key, r);
  return r;
}

}  // namespace

int ChooseDenseWgmmaSplits(int64_t n, int64_t k, int resident_ctas, const int* resident_clusters, int tile_n) {
  // The most pieces of k (each >= 8 k-tiles: the pipeline's fill is paid per piece) with which
  // every tile's cluster is resident at once with an eighth of the device's clusters of that size
  // to spare; 1 where the tiles alone fill the device. The spare: a cluster starts only when all
  // its CTAs fit one GPC, and while the previous kernel's CTAs drain, the last clusters of a
  // launch that needs every cluster slot start late (8B O and down projections at batch 32, 32
  // clusters of 7 on the H100's 32: their CTAs' exits spread over 12 and 18 µs; clusters of 6
  // took the step from 6.88-6.91 to 6.67-6.71 ms, bench/results/ab-2026-11-26-h100/session26/).
  // FLUTE_DENSE_WGMMA_CLUSTER_SPARE=0: no spare, the previous rule (A/B runs).
  static const bool spare = [] {
    const char* env = std::getenv("FLUTE_DENSE_WGMMA_CLUSTER_SPARE");
    return env == nullptr || std::string(env) != "0";
  }();
  const int64_t tiles = (n + tile_n - 1) / tile_n, ktiles = (k + kTileK - 1) / kTileK;
  int best = 1;
  for (int s = 2; s <= kMaxSplits; ++s) {
    if (ktiles < int64_t{s} * kMinKTilesPerSplit) break;
    const int64_t cluster_slots = spare ? int64_t{resident_clusters[s - 1]} * 7 / 8 : resident_clusters[s - 1];
    if (tiles * s <= resident_ctas && tiles <= cluster_slots) best = s;
  }
  return best;
}

DenseWgmmaPlan ChooseDenseWgmmaPlan(int64_t n, int64_t k, int resident_ctas, const int* resident_clusters) {
  // How well a plan fills the slots of its waves: CTAs / (waves · resident CTAs).
  const auto fill = [&](const DenseWgmmaPlan& plan) {
    const int64_t ctas = (n + plan.tile_n - 1) / plan.tile_n * plan.splits;
    const int64_t waves = (ctas + resident_ctas - 1) / resident_ctas;
    return static_cast<double>(ctas) / static_cast<double>(waves * resident_ctas);
  };
  DenseWgmmaPlan best{kTileN, ChooseDenseWgmmaSplits(n, k, resident_ctas, resident_clusters, kTileN)};
  if (best.splits > 1) return best;  // (smaller tiles with other cluster sizes were slower)
  for (int tile_n = kTileN - 16; tile_n >= 64; tile_n -= 16) {
    const DenseWgmmaPlan plan{tile_n, ChooseDenseWgmmaSplits(n, k, resident_ctas, resident_clusters, tile_n)};
    if (plan.splits == 1 && fill(plan) > fill(best) + 0.02) best = plan;
  }
  return best;
}

absl::Status LaunchDenseGemvWgmma(const DenseGemvParams& p, int splits, CUstream_st* stream) {
  const char* tma_env = std::getenv("FLUTE_DENSE_WGMMA_TMA");
  const bool tma = tma_env == nullptr || std::string(tma_env) != "0";
  // FLUTE_DENSE_WGMMA_ROWS16=0: calls of m <= 16 on the 32-row instance too (A/B runs; the bits
  // are the same).
  static const bool rows16_allowed = [] {
    const char* env = std::getenv("FLUTE_DENSE_WGMMA_ROWS16");
    return env == nullptr || std::string(env) != "0";
  }();
  const KernelChoice kernel = SelectKernel(p.dtype, p.y_fp32, tma, rows16_allowed && p.m <= 16);
  const absl::StatusOr<Residency> resident = ResidencyOf(kernel);
  if (!resident.ok()) return resident.status();
  // The plan: the call's tile_n and splits where set, else the environment's (A/B runs), else
  // the launcher's (a forced tile gets the split rule for that tile).
  int tile_n = p.tile_n;
  if (tile_n == 0) {
    const char* env = std::getenv("FLUTE_DENSE_WGMMA_TILE");
    const int forced = env != nullptr ? std::atoi(env) : 0;
    if (forced >= 64 && forced <= kTileN && forced % 16 == 0) tile_n = forced;
  }
  if (splits == 0) {
    const char* env = std::getenv("FLUTE_DENSE_WGMMA_SPLITS");
    splits = env != nullptr ? std::atoi(env) : 0;
  }
  if (tile_n == 0) {
    const DenseWgmmaPlan plan = ChooseDenseWgmmaPlan(p.n, p.k, resident->ctas, resident->clusters);
    tile_n = plan.tile_n;
    if (splits < 1 || splits > kMaxSplits) splits = plan.splits;
  }
  if (splits < 1 || splits > kMaxSplits) {
    splits = ChooseDenseWgmmaSplits(p.n, p.k, resident->ctas, resident->clusters, tile_n);
  }
  CUtensorMap w_map = {};
  if (tma) {
    absl::StatusOr<CUtensorMap> map = TensorMap(p.w, p.n, p.k, p.dtype, tile_n);
    if (!map.ok()) return map.status();
    w_map = *map;
  }
  WgmmaArgs a;
  CopyCallArgs(p, &a);
  a.ktiles = static_cast<int>((p.k + kTileK - 1) / kTileK);
  a.tile_n = tile_n;
  a.groups = tile_n / 16;
  a.splits = std::min(splits, a.ktiles);
  const char* l2_env = std::getenv("FLUTE_DENSE_WGMMA_L2");
  a.l2_prefetch = l2_env != nullptr ? std::atoi(l2_env) : 256;
  const int64_t tiles = (p.n + tile_n - 1) / tile_n;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(tiles * a.splits));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = static_cast<size_t>(kernel.smem);
  cfg.stream = stream;
  LaunchAttributes attributes;
  if (p.pdl) attributes.Pdl();
  if (a.splits > 1) attributes.Cluster(a.splits);
  attributes.ApplyTo(&cfg);
  return LaunchOutcome(cudaLaunchKernelEx(&cfg, kernel.fn, a, w_map), "dense wgmma", p, "splits", a.splits);
}

}  // namespace flute::gpu

namespace flute::trace {
FLUTE_TRACE_SETTER(SetBufferDenseGemvWgmma)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
