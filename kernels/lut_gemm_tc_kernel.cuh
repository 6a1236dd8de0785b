// The tensor-core LUT-GEMM's kernels (sm_90a; lut_gemm_tc.cu lists the files): the main loop
// TcLutGemmSegment with its epilogue and the last block's split reduction (the block's segments and
// the other reductions, in clusters and spread over the split blocks, are in lut_gemm_tc_split.cuh),
// the kernels TcLutGemmKernel, TcLutGemmClusterKernel and TcLutGemmFusedKernel, and their
// launchers down to LaunchTcForBits (lut_gemm_tc_launch.h), which lut_gemm_tc_2bit.cu, _3bit.cu
// and _4bit.cu instantiate: each kernel instance is defined only in the file of its bit width (an
// anonymous namespace, as in lut_gemm_device.cuh). Included only by those three files.
//
// Block = 2 warpgroups = 8 warps = 128 output features (warp w: 16-row strip col_block * 8 + w;
// warpgroup h: rows 64h..64h+63 of the block) × MT rows of X (MT = 16, 32, 64 or 128 = the wgmma N) × a
// range of 128-wide k-tiles (split-K only when the grid is under one wave). Both warpgroups read
// the same X tile, so X goes through L2 once per 128 features (N / 128 · M · K · 2 bytes in all).
// Per k-tile stage, cp.async brings each warp's packed tile (256 · bits bytes) and the X tile
// [MT × 128] (rows ≥ M zero-filled by the copy itself). Per 16-wide k step each warp looks up its
// four A registers (one shared load per weight pair), multiplies them by the group scale (HMUL2:
// the product is rounded to the activation type, as the split-K kernel does for G < 128; at
// MT = 16 and G = 64 the scales are applied to fp32 sums instead, kFold), and the warpgroup
// issues one wgmma per k step. The 8 k steps of a tile go in groups
// of kGroup (4: TcGroupFor): a group's 4 · kGroup lookups are independent, its wgmmas
// are issued back to back as one commit group, and A is double-buffered by groups so that the
// lookups of group j + 1 run while the wgmmas of group j are in flight (wgmma.wait_group 1). The
// main loop has no branch (warps past the last strip dequantize the last strip again, into rows
// that are not stored): a branch per k step had kept the compiler from interleaving the lookups,
// and removing it took 4096x28672 at M = 16 from 37.8 to 30.3 µs (H100). Two barriers per
// k-tile: one publishes the stage, the other (after the tile's first wgmma group has retired the
// previous tile's last one) frees the previous stage for the next cp.async, so the tensor cores
// always have a wgmma queued.
//
// X tile in shared memory: K-major ("each X row contiguous in k"), 128-byte swizzle, the layout
// wgmma's descriptor mode 1 expects: two 64-wide k halves of [MT rows × 128 B] each; 16-byte chunk
// c (k = 8c..8c+7 of the half) of row r sits at r · 128 + ((c ^ (r % 8)) · 16). Rows are 128 B
// apart, 8-row groups 1024 B apart (SBO), every half 1024-aligned; the descriptor of k step kk
// starts at half kk / 4 plus 32 · (kk % 4) bytes (the swizzle is applied to the address bits, so
// advancing inside the 128-byte row is how a k16 slice of a swizzled atom is addressed). Writes of
// 8 consecutive threads (one row, 8 chunks) hit 8 distinct 16-byte bank groups: no conflicts.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/arrival.cuh"
#include "kernels/cluster.cuh"
#include "kernels/lut_gemm_device.cuh"
#include "kernels/lut_gemm_tc_common.cuh"
#include "kernels/lut_gemm_tc_launch.h"
#include "kernels/lut_gemm_tc_split.cuh"

namespace flute::lut::tc_detail {
namespace {

// Main-loop variants, a template argument of the kernels (each its own instances):
//   kPlainLoop: the group scale on the dequantized weights (HMUL2); at MT = 64 the scales of
//     G < 128 by 4 loads per row and k-tile (those instances serve G >= 128 calls);
//   kFoldLoop (MT = 16, G = 64): the scales applied to fp32 sums (kFold below);
//   kSmallGroupLoop (MT = 64, G < 128): kPlainLoop with one scale load per row and k-tile;
//   kTileGroupLoop (MT = 32, G >= 128): kPlainLoop knowing that a k-tile has one group, so each
//     row's scale is loaded and converted to T once per k-tile, not once per quarter;
//   kRawScaleLoop (MT = 128, M <= 128): kPlainLoop with the next k-tile's scales kept as the
//     loaded words until the iteration that uses them unpacks them (kRawScales below).
enum TcLoop : int { kPlainLoop = 0, kFoldLoop = 1, kSmallGroupLoop = 2, kTileGroupLoop = 3, kRawScaleLoop = 4 };

// One segment: the pipeline over its k-tiles, then its tile's store, or its partial and, for the
// last piece to arrive, the reduction and store. first: the block's first segment, which also
// signals PDL dependents, builds the pair table and waits for the previous kernel.
template <typename T, int kBits, int kMT, int kGroup, bool kFused, int kLoop, bool kCluster, typename Segment>
__device__ __forceinline__ void TcLutGemmSegment(const TcArgs& args, const TcNormArgs& norm, const Segment& seg,
                                                 bool first) {
  using C = TcConfig<kBits, kMT>;
  using T2 = typename Act<T>::T2;
  constexpr int kAcc = kMT / 2;  // fp32 accumulators per thread
  constexpr bool kFold = kLoop == kFoldLoop;
  static_assert(!kFold || (kMT == 16 && kGroup == 4), "kFold: MT = 16, two commit groups per k-tile");
  static_assert(kLoop != kSmallGroupLoop || kMT == 64, "kSmallGroupLoop: MT = 64 only");
  static_assert(kLoop != kTileGroupLoop || kMT == 32, "kTileGroupLoop: MT = 32 only");
  constexpr bool kTileGroup = kLoop == kTileGroupLoop;
  // The next k-tile's scales as the words their loads return (raw_next), unpacked into __half
  // (sc_cur) at the top of the iteration that uses them. Into __half arrays, ptxas packs each
  // loaded half into a register pair right after its load, and at MT = 128 (two warps per
  // scheduler) ncu put those PRMTs among the loop's most stalled instructions (long scoreboard:
  // the load's whole latency, every k-tile; bench/results/ab-2026-11-26-h100/session40/). At
  // MT = 16 and 64 (four warps per scheduler hide it) the same was no faster: RawScalesFromEnv.
  constexpr bool kRawScales = kLoop == kRawScaleLoop;
  static_assert(!kRawScales || kMT == 128, "kRawScaleLoop: MT = 128 only");
  // 4 scale loads per row and k-tile at G < 128 (kPlainLoop at MT = 64; see fetch_scales)
  constexpr bool kScalarScales = kMT == 64 && kLoop == kPlainLoop;
  // Stream-K (MT = 128 only) runs this body in a loop over segments. What the compiler hoists
  // out of that loop (addresses from the thread index and shared memory base, the segment's
  // fields) stays in registers through the main loop, so there the thread index and shared
  // memory base pass through an opaque zero (an asm volatile, never hoisted) and seg is
  // volatile, read where used. (The same loop at MT = 16 / 32 / 64 went past the 128 registers
  // of 2 blocks per SM even so: spills, and 4096x28672 at M = 16 29.9 -> 34.3 us on an H200.)
  const int opaque = kMT == 128 ? OpaqueZero() : 0;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* smem_base = smem_raw + opaque;
  unsigned char* smem = smem_base + ((1024 - (SmemAddr(smem_base) & 1023)) & 1023);
  unsigned char* s_x = smem;                                 // [stages][2 k halves][MT][128 B]
  unsigned char* s_after_x = s_x + C::kStages * C::kXStageBytes;
  // [stages][8 warps][tile bytes] of W, then the table; or (kStagesInTable: the wide table at 4
  // and 2 bits) the table's 256 entry rows, the W tiles in their second halves (kWTileStride, WOffset).
  unsigned char* s_w = C::kStagesInTable ? s_after_x + 128 : s_after_x;
  uint32_t* s_table =
      reinterpret_cast<uint32_t*>(C::kStagesInTable ? s_after_x : s_after_x + C::kStages * C::kWStageBytes);

  const int tid = threadIdx.x + opaque, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, q = lane & 3;
  const int num_ktiles = args.k / kTileK;
  const int kt_begin = seg.kt_begin, num_iters = seg.num_iters;
  const bool early_weights = args.early_weights && first;
  const int m0 = seg.m_tile * kMT;
  const int strip = seg.col_block * kWarps + warp;
  // Warps past the last strip (N not a multiple of 128) dequantize the last strip again (so the
  // main loop has no branch: a branch per k step keeps the compiler from interleaving the
  // lookups of a group) into accumulator rows that are never stored (row i of a wgmma's D
  // depends on row i of A only).
  const bool warp_active = strip < args.n / 16;
  const int load_strip = min(strip, args.n / 16 - 1);
  const T* x = static_cast<const T*>(args.x);
  const int valid_rows = min(kMT, args.m - m0);
  const int groups_per_row = args.k / args.group_size;
  const int log2_group = __ffs(args.group_size) - 1;

  auto load_w = [&](int kt, int buf) {
    const unsigned char* src = args.packed + (static_cast<int64_t>(load_strip) * num_ktiles + kt) * C::kTileBytes;
    unsigned char* dst = s_w + (buf * kWarps + warp) * C::kWTileStride;
    CpAsync16(dst + C::WOffset(16 * lane), src + 16 * lane);
    if (kBits == 4) CpAsync16(dst + C::WOffset(512 + 16 * lane), src + 512 + 16 * lane);
    if (kBits == 3) CpAsync8(dst + 512 + 8 * lane, src + 512 + 8 * lane);
  };
  // X rows m0 .. m0 + MT - 1, k = kt * 128 ..: 16 chunks of 16 B per row, 16 threads per row
  // (coalesced 256-byte reads); rows >= M are zero-filled (their outputs are not stored).
  auto load_x = [&](int kt, int buf) {
    unsigned char* dst = s_x + buf * C::kXStageBytes;
#pragma unroll
    for (int i = 0; i < kMT * 16 / kThreads; ++i) {
      const int c = tid + i * kThreads;
      const int r = c >> 4, chunk = c & 15;
      const bool valid = r < valid_rows;
      const T* src = x + static_cast<int64_t>(m0 + (valid ? r : 0)) * args.k + kt * kTileK + chunk * 8;
      const int offset = (chunk >> 3) * C::kXHalfBytes + r * 128 + (((chunk & 7) ^ (r & 7)) << 4);
      CpAsync16ZeroFill(dst + offset, src, valid ? 16 : 0);
    }
  };
  // This lane's scales for k-tile kt: s[h] of row g and s[4 + h] of row g + 8 for the 32-wide
  // quarter h of the tile (one group per quarter at G = 32; the same group repeated above).
  const __half* scale_lo = args.scales + static_cast<int64_t>(load_strip * 16 + g) * groups_per_row;
  const __half* scale_hi = scale_lo + 8 * groups_per_row;
  // At G = 64 and 32 a row's groups of one k-tile are 4 / 8 contiguous bytes at group
  // kt * 128 / G, aligned to their size (a row holds K / G groups, K a multiple of 128; the
  // launcher requires 8-byte aligned scales there): one load per row rather than 4. H100, same
  // run, against 4 loads: G = 64 and 32 at M = 16-128 5-26 % faster on the 8 LLaMA shapes, the
  // 8B W4 decode step 1 % faster at batches 8-32 (G = 128) and 3-13 % (G = 64)
  // (bench/results/ab-2026-11-26-h100/session18/). At MT = 64 the G >= 128 calls were 1-5 %
  // slower with it in the same instance (the code of the other branches changes its schedule;
  // M = 64 on 4096x4096 is only ~3 % ahead of cuBLAS), so there G < 128 calls run their own
  // instances (kSmallGroupLoop) and the others keep the 4 loads of before (kScalarScales).
  auto fetch_scales = [&](int kt, __half* s) {
    if (kTileGroup) {  // s[0] (row g) and s[4] (row g + 8) only: the body reads no others
      const int grp = (kt * kTileK) >> log2_group;
      s[0] = __ldg(scale_lo + grp);
      s[4] = __ldg(scale_hi + grp);
    } else if (args.group_size >= kTileK) {
      const int grp = (kt * kTileK) >> log2_group;
      s[0] = s[1] = s[2] = s[3] = __ldg(scale_lo + grp);
      s[4] = s[5] = s[6] = s[7] = __ldg(scale_hi + grp);
    } else if (kScalarScales) {
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const int grp = (kt * kTileK + 32 * h) >> log2_group;
        s[h] = __ldg(scale_lo + grp);
        s[4 + h] = __ldg(scale_hi + grp);
      }
    } else if (args.group_size == 64) {
      const __half2 lo = __ldg(reinterpret_cast<const __half2*>(scale_lo) + kt);
      const __half2 hi = __ldg(reinterpret_cast<const __half2*>(scale_hi) + kt);
      s[0] = s[1] = __low2half(lo);
      s[2] = s[3] = __high2half(lo);
      s[4] = s[5] = __low2half(hi);
      s[6] = s[7] = __high2half(hi);
    } else {  // G = 32: s[h] = group 4 kt + h of row g, s[4 + h] of row g + 8
      const uint2 lo = __ldg(reinterpret_cast<const uint2*>(scale_lo) + kt);
      const uint2 hi = __ldg(reinterpret_cast<const uint2*>(scale_hi) + kt);
      const uint32_t words[4] = {lo.x, lo.y, hi.x, hi.y};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const __half2 pair = *reinterpret_cast<const __half2*>(&words[w]);
        s[2 * w] = __low2half(pair);
        s[2 * w + 1] = __high2half(pair);
      }
    }
  };

  // kRawScales: k-tile kt's scale words for rows g (r[0], r[1]) and g + 8 (r[2], r[3]): G >= 128
  // the group's half zero-extended, G = 64 the tile's two groups as a half2, G = 32 its four as
  // a uint2 (fetch_scales' loads); unpack_scales fills s as fetch_scales does.
  [[maybe_unused]] auto fetch_raw = [&](int kt, uint32_t* r) {
    if (args.group_size >= kTileK) {
      const int grp = (kt * kTileK) >> log2_group;
      r[0] = __ldg(reinterpret_cast<const unsigned short*>(scale_lo + grp));
      r[2] = __ldg(reinterpret_cast<const unsigned short*>(scale_hi + grp));
    } else if (args.group_size == 64) {
      r[0] = __ldg(reinterpret_cast<const unsigned int*>(scale_lo) + kt);
      r[2] = __ldg(reinterpret_cast<const unsigned int*>(scale_hi) + kt);
    } else {
      const uint2 lo = __ldg(reinterpret_cast<const uint2*>(scale_lo) + kt);
      const uint2 hi = __ldg(reinterpret_cast<const uint2*>(scale_hi) + kt);
      r[0] = lo.x, r[1] = lo.y, r[2] = hi.x, r[3] = hi.y;
    }
  };
  [[maybe_unused]] auto unpack_scales = [&](const uint32_t* r, __half* s) {
    if (args.group_size >= kTileK) {
      s[0] = s[1] = s[2] = s[3] = __ushort_as_half(static_cast<unsigned short>(r[0]));
      s[4] = s[5] = s[6] = s[7] = __ushort_as_half(static_cast<unsigned short>(r[2]));
    } else if (args.group_size == 64) {
      const __half2 lo = *reinterpret_cast<const __half2*>(&r[0]);
      const __half2 hi = *reinterpret_cast<const __half2*>(&r[2]);
      s[0] = s[1] = __low2half(lo);
      s[2] = s[3] = __high2half(lo);
      s[4] = s[5] = __low2half(hi);
      s[6] = s[7] = __high2half(hi);
    } else {
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const __half2 pair = *reinterpret_cast<const __half2*>(&r[w]);
        s[2 * w] = __low2half(pair);
        s[2 * w + 1] = __high2half(pair);
      }
    }
  };

  // Prologue. With PDL the next kernel may be scheduled at once; the first stage's codes (with
  // early_weights: the codes of every prologue stage, in one cp.async group), the pair table and
  // the first scales load before the wait for the previous kernel, X after it. Either way the
  // main loop's CpAsyncWait<kStages - 2> finds stage it complete: without early weights the
  // prologue commits kStages - 1 groups, group s = stage s; with them one more group comes
  // first (all the codes), and group s + 1 = stage s's X.
  if (first) LaunchDependents();
  if (early_weights) {
#pragma unroll
    for (int s = 0; s < C::kStages - 1; ++s) {
      if (s < num_iters) load_w(kt_begin + s, s);
    }
    CpAsyncCommit();
  } else if (num_iters > 0) {
    load_w(kt_begin, 0);
  }
  if (first) BuildPairTable<T, kBits, C::kWideTable ? kWideRowBytes : 128>(args.table, s_table, tid);
  __half sc_cur[8], sc_next[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) sc_cur[i] = sc_next[i] = __float2half(0.0f);
  [[maybe_unused]] uint32_t raw_cur[4] = {0, 0, 0, 0}, raw_next[4] = {0, 0, 0, 0};  // (kRawScales)
  if constexpr (kRawScales) {
    fetch_raw(kt_begin, raw_cur);
  } else {
    fetch_scales(kt_begin, sc_cur);
  }
  if (first) GridDependencyWait();
  float* s_inv = reinterpret_cast<float*>(s_table) + C::kTableBytes / 4;  // [kMT]
  float* s_red = s_inv + kMT;                                              // [kWarps][kMT]
  // [kMT][k / 128] (MT <= 32); with the wide table in the rows' second halves after the W stages
  // (a 128-byte gap after every 128 bytes: kSumsqGap).
  constexpr int kSumsqGap = C::kSumsqInTable ? 128 : 0;
  float* s_sumsq = C::kSumsqInTable
                       ? reinterpret_cast<float*>(s_w + (C::kStages * C::kWStageBytes / 128) * kWideRowBytes)
                       : s_red + kWarps * kMT;
  // The deferred norm's sums of squares: at MT <= 32 (and k / 128 a multiple of 4, at most 64)
  // copied into shared memory with the first X stage and reduced after the main loop, so that
  // their round trip overlaps the pipeline's; else reduced here (one round trip before the loop).
  [[maybe_unused]] bool async_sumsq = false;
  if constexpr (kFused) {
    if (norm.deferred_sumsq != nullptr) {
      const int cols = args.k / kTileK;
      async_sumsq = kMT <= 32 && cols % 4 == 0 && cols <= 64;
      if (async_sumsq) {
        for (int c = tid; c < valid_rows * cols / 4; c += kThreads) {
          const int r = c / (cols / 4), j = 4 * (c % (cols / 4));
          CpAsync16(const_cast<float*>(GappedFloat<kSumsqGap>(s_sumsq, r * cols + j)),
                    norm.deferred_sumsq + static_cast<int64_t>(m0 + r) * cols + j);
        }
      }
    }
  }
  if (num_iters > 0) load_x(kt_begin, 0);
  CpAsyncCommit();
#pragma unroll
  for (int s = 1; s < C::kStages - 1; ++s) {
    if (s < num_iters) {
      if (!early_weights) load_w(kt_begin + s, s);
      load_x(kt_begin + s, s);
    }
    CpAsyncCommit();  // kStages - 1 groups (+1 with early weights), empty ones included
  }
  // The deferred norm's factors, while the prologue's copies are in flight (the sums of squares
  // come from the previous kernel: after the wait). Published by the main loop's first barrier.
  if constexpr (kFused) {
    if (norm.deferred_sumsq != nullptr && !async_sumsq) {
      DeferredNormFactors<kMT>(norm.deferred_sumsq, m0, valid_rows, args.k, norm.norm_eps, s_inv);
    }
  }

  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) {
    acc[i] = 0.0f;
    FenceOperand(acc[i]);
  }
  // Narrow: this lane's table copy as one address (LaneTable). Wide: the table base (uniform)
  // and the lane's copy bits, put together by each lookup's PRMT.
  [[maybe_unused]] uint32_t my_table = 0, table_base = 0, lane_bits = 0;
  if constexpr (C::kWideTable) {
    table_base = SmemAddr(s_table);
    lane_bits = WideLaneBits<kBits>(lane);
  } else {
    my_table = LaneTable<kBits>(s_table, lane);
  }
  const uint32_t s_x_addr = SmemAddr(s_x);
  // kFold: the unscaled sums of a k-tile's commit group grp go to part[grp] (its first wgmma
  // overwrites them) and are added to acc times their group scales once the group has retired:
  // the first after the second group's wgmma.wait_group 1, the second after a wait_group 0 at
  // the end of the k-tile. (Folding the second group in the next k-tile, after its first
  // group's wait_group 1, would keep the tensor cores fed through the k-tile boundary, but
  // ptxas cannot follow wgmma accumulators read across a loop's back edge and serializes every
  // wgmma then: C7514.)
  [[maybe_unused]] float part[2][kAcc];
  if constexpr (kFold) {
#pragma unroll
    for (int i = 0; i < kAcc; ++i) {
      part[0][i] = part[1][i] = 0.0f;
      FenceOperand(part[0][i]);
      FenceOperand(part[1][i]);
    }
  }

  uint32_t a[2][kGroup][4];
  // At MT = 32 and 64 the main loop refills a stage from running sources (this lane's codes and
  // its X chunks: load_w's and load_x's addresses and offsets, advanced by one k-tile per
  // iteration) and a rotating stage index, rather than from addresses recomputed from the k-tile
  // (64-bit products and a modulo by 3 per refill). H100, bf16, the 8 playbook shapes against the
  // recomputed addresses in the same call (bench/results/ab-2026-11-26-h100/session21/
  // kbench-m32.txt, kbench-m64*.txt): M = 17-32 a median 2.3 % faster (2-bit 5-8 %, 3-bit
  // 1-4 %, 4-bit G128 -1 to +2.5 %, 4-bit G64 2-4 % slower on 28672x8192 only); M = 33-64 a
  // median 1.3 % faster (3-bit up to 5 %, 4-bit G128 -3.5 to +1 %). 8B W4 decode step: batch
  // 24 3.78 / 3.79 -> 3.74 / 3.73 ms, batch 32 4.17 / 4.18 -> 4.14 / 4.11. At MT = 16 the same
  // was 2-5 % slower at 4 bits (W4 batch 16 3.19 -> 3.35 ms), so MT = 16 keeps the recomputed
  // addresses. MT = 128 (per Stream-K segment: the sources restart with each segment) since
  // session 32: its 8 X chunks per thread and stage had ~80 address instructions per refill,
  // where ncu put 23 % of the warp samples (4096x28672 at M = 512). H100, same call: kernel
  // alone at M = 128-512 even (new / old 0.97-1.03 outside noisy rows), the 8B W4 prefill of
  // 256 / 512 tokens (fused MT = 128 calls) 11.91 / 19.80 -> 11.44 / 18.90 ms; 194-202
  // registers plain, 243-252 fused, no spills.
  constexpr bool kRunning = kMT == 32 || kMT == 64 || kMT == 128;
  constexpr int kXChunks = kMT * 16 / kThreads;  // X chunks per thread and stage (2 or 4)
  [[maybe_unused]] const unsigned char* w_next = nullptr;
  [[maybe_unused]] const T* x_next[kXChunks];
  [[maybe_unused]] int x_off[kXChunks];
  [[maybe_unused]] bool x_valid[kXChunks];
  if constexpr (kRunning) {
    w_next = args.packed + (static_cast<int64_t>(load_strip) * num_ktiles + kt_begin + C::kStages - 1) * C::kTileBytes +
             16 * lane;
#pragma unroll
    for (int i = 0; i < kXChunks; ++i) {
      const int c = tid + i * kThreads;
      const int r = c >> 4, chunk = c & 15;
      x_valid[i] = r < valid_rows;
      x_next[i] = x + static_cast<int64_t>(m0 + (x_valid[i] ? r : 0)) * args.k + (kt_begin + C::kStages - 1) * kTileK +
                  chunk * 8;
      x_off[i] = (chunk >> 3) * C::kXHalfBytes + r * 128 + (((chunk & 7) ^ (r & 7)) << 4);
    }
  }
  [[maybe_unused]] int stage_next = C::kStages - 1, stage_cur = 0;  // (kRunning)
  for (int it = 0; it < num_iters; ++it) {
    // Stage it has landed (this thread's copies), is visible to the async proxy (wgmma), and
    // every thread's copies are done. The last wgmma of iteration it - 1 may still run.
    CpAsyncWait<C::kStages - 2>();
    FenceProxyAsyncShared();
    __syncthreads();
    if (it + 1 < num_iters) {  // used next iteration
      if constexpr (kRawScales) {
        fetch_raw(kt_begin + it + 1, raw_next);
      } else {
        fetch_scales(kt_begin + it + 1, sc_next);
      }
    }
    if constexpr (kRawScales) unpack_scales(raw_cur, sc_cur);

    const int buf = kRunning ? stage_cur : it % C::kStages;
    uint32_t w[8], hw[2];
    {
      const unsigned char* wt = s_w + (buf * kWarps + warp) * C::kWTileStride;
      *reinterpret_cast<uint4*>(w) = *reinterpret_cast<const uint4*>(wt + C::WOffset(16 * lane));
      if (kBits == 4) *reinterpret_cast<uint4*>(w + 4) = *reinterpret_cast<const uint4*>(wt + C::WOffset(512 + 16 * lane));
      if (kBits == 3) {
        *reinterpret_cast<uint2*>(hw) = *reinterpret_cast<const uint2*>(wt + 512 + 8 * lane);
        Pair3Indices(w, hw);
      }
    }
    T2 s_lo[4], s_hi[4];  // quarter h: row g, row g + 8 (not kFold)
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      if constexpr (kTileGroup) {  // one conversion per row (bf16: 2 HADD2.F32 + 1 F2FP, not 8 + 4-6)
        if (h == 0) {
          s_lo[0].x = s_lo[0].y = Act<T>::FromHalf(sc_cur[0]);
          s_hi[0].x = s_hi[0].y = Act<T>::FromHalf(sc_cur[4]);
        } else {
          s_lo[h] = s_lo[0];
          s_hi[h] = s_hi[0];
        }
      } else if constexpr (!kFold) {
        s_lo[h].x = s_lo[h].y = Act<T>::FromHalf(sc_cur[h]);
        s_hi[h].x = s_hi[h].y = Act<T>::FromHalf(sc_cur[4 + h]);
      }
    }
    const uint64_t desc0 = SwizzledKMajorDesc(s_x_addr + buf * C::kXStageBytes);

    // A double-buffered by groups of kGroup k16 steps: the lookups of group j + 1 (kGroup * 4
    // independent shared loads) run while the kGroup wgmmas of group j, issued back to back as
    // one commit group, are in flight.
    constexpr int kGroups = 8 / kGroup;
#pragma unroll
    for (int grp = 0; grp < kGroups; ++grp) {
      uint32_t(&ag)[kGroup][4] = a[grp & 1];
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        const int kk = grp * kGroup + j;
        if constexpr (C::kWideTable) {
          if constexpr (kBits == 3) {
            LookupPairsWide3(kk, w, lane_bits, table_base, ag[j]);
          } else {
            LookupPairsWide<kBits>(kk, w, lane_bits, table_base, ag[j]);
          }
        } else {
          LookupPairs<kBits>(kk, w, my_table, ag[j]);
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) {  // A register r: row g + 8 (r & 1), k quarter kk / 2
          if constexpr (!kFold) {
            T2 v = *reinterpret_cast<const T2*>(&ag[j][r]);
            v = __hmul2(v, (r & 1) ? s_hi[kk >> 1] : s_lo[kk >> 1]);
            ag[j][r] = *reinterpret_cast<uint32_t*>(&v);
          }
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) FenceOperand(ag[j][r]);
      }
      WgmmaFence();  // orders the A register writes above before the wgmmas read them
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        const int kk = grp * kGroup + j;
        // k step kk: k half kk / 4, 32 bytes per k16 step inside the 128-byte swizzled row
        // (descriptor addresses are in 16-byte units).
        const uint64_t desc = desc0 + static_cast<uint64_t>(((kk >> 2) * C::kXHalfBytes + (kk & 3) * 32) >> 4);
        if constexpr (kFold) {
          if (j == 0) {
            WgmmaN16<T, false>(part[grp], ag[j], desc);
          } else {
            WgmmaN16<T, true>(part[grp], ag[j], desc);
          }
        } else {
          Wgmma<T, kMT>(acc, ag[j], desc);
        }
      }
      WgmmaCommit();
      WgmmaWait<1>();  // group grp - 1 is done: its A buffer may be overwritten
      if constexpr (kFold) {
        if (grp == 1) FoldGroup<kAcc>(part[0], sc_cur[0], sc_cur[4], acc);
      }
      if (grp == 0) {
        // This warpgroup's wgmmas of iteration it - 1 are done; after the barrier both
        // warpgroups' are, so the stage they read, (it - 1) % kStages, is refilled, with
        // k-tile it + kStages - 1. Refilling here rather than at the top of the iteration keeps
        // a wgmma queued on the tensor cores through both barriers (no drain per k-tile).
        __syncthreads();
        const int next = it + C::kStages - 1;
        if (next < num_iters) {
          if constexpr (kRunning) {
            unsigned char* tile = s_w + (stage_next * kWarps + warp) * C::kWTileStride;
            CpAsync16(tile + C::WOffset(16 * lane), w_next);
            if (kBits == 4) CpAsync16(tile + C::WOffset(512 + 16 * lane), w_next + 512);
            if (kBits == 3) CpAsync8(tile + 512 + 8 * lane, w_next - 8 * lane + 512);
            unsigned char* xdst = s_x + stage_next * C::kXStageBytes;
#pragma unroll
            for (int i = 0; i < kXChunks; ++i) CpAsync16ZeroFill(xdst + x_off[i], x_next[i], x_valid[i] ? 16 : 0);
          } else {
            load_w(kt_begin + next, next % C::kStages);
            load_x(kt_begin + next, next % C::kStages);
          }
        }
        CpAsyncCommit();
      }
    }
    if constexpr (kFold) {
      WgmmaWait<0>();
      FoldGroup<kAcc>(part[1], sc_cur[2], sc_cur[6], acc);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) sc_cur[i] = sc_next[i];
    if constexpr (kRawScales) {
#pragma unroll
      for (int i = 0; i < 4; ++i) raw_cur[i] = raw_next[i];
    }
    if constexpr (kRunning) {
      w_next += C::kTileBytes;
#pragma unroll
      for (int i = 0; i < kXChunks; ++i) x_next[i] += kTileK;
      stage_next = stage_next + 1 == C::kStages ? 0 : stage_next + 1;
      stage_cur = stage_cur + 1 == C::kStages ? 0 : stage_cur + 1;
    }
  }
  WgmmaWait<0>();
  CpAsyncWait<0>();
#pragma unroll
  for (int i = 0; i < kAcc; ++i) FenceOperand(acc[i]);
  [[maybe_unused]] ResidualOperands<kMT> residual_ops;
  if constexpr (kFused) {
    if (norm.residual != nullptr) {
      LoadResidualOperands<kMT>(norm, args.m, args.n, m0, strip, warp_active, &residual_ops);
    }
    if (async_sumsq) {  // (the main loop's barriers published the copies)
      DeferredNormFactors<kMT, true, kSumsqGap>(s_sumsq, m0, valid_rows, args.k, norm.norm_eps, s_inv);
      __syncthreads();
    }
  }

  // Epilogue. acc[4i + c]: n = strip * 16 + g + 8 * (c >> 1), m = m0 + 8i + 2q + (c & 1).
  // With SwiGLU, c and c + 2 are the gate and up rows of output feature strip * 8 + g.
  T* y = static_cast<T*>(args.y);
  // (i0, i1): only the 8-row groups i0 <= i < i1 (the cluster reduction's slice).
  auto store_y = [&](int i0 = 0, int i1 = kMT / 8) {
    if constexpr (kFused) {
      if (norm.deferred_sumsq != nullptr) {
#pragma unroll
        for (int i = 0; i < kAcc; ++i) acc[i] *= s_inv[8 * (i / 4) + 2 * q + (i & 1)];
      }
    }
    if (args.swiglu) {
#pragma unroll
      for (int i = 0; i < kMT / 8; ++i) {
        if (i < i0 || i >= i1) continue;
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int m = m0 + 8 * i + 2 * q + c;
          if (m < args.m) {
            y[static_cast<int64_t>(m) * (args.n / 2) + strip * 8 + g] = SwiGluOfSums<T>(acc[4 * i + c], acc[4 * i + c + 2]);
          }
        }
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < kMT / 8; ++i) {
      if (i < i0 || i >= i1) continue;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int n = strip * 16 + g + 8 * (c >> 1), m = m0 + 8 * i + 2 * q + (c & 1);
        if (m < args.m) y[static_cast<int64_t>(m) * args.n + n] = Act<T>::FromFloat(acc[4 * i + c]);
      }
    }
  };
  // 8-row group i of this thread's accumulators, summed by SpreadReduce: v = acc[4i .. 4i + 3].
  [[maybe_unused]] auto store_group = [&](int i, float4 v) {
    const float c[4] = {v.x, v.y, v.z, v.w};
    if (args.swiglu) {
#pragma unroll
      for (int cc = 0; cc < 2; ++cc) {
        const int m = m0 + 8 * i + 2 * q + cc;
        if (m < args.m) y[static_cast<int64_t>(m) * (args.n / 2) + strip * 8 + g] = SwiGluOfSums<T>(c[cc], c[cc + 2]);
      }
      return;
    }
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) {
      const int n = strip * 16 + g + 8 * (cc >> 1), m = m0 + 8 * i + 2 * q + (cc & 1);
      if (m < args.m) y[static_cast<int64_t>(m) * args.n + n] = Act<T>::FromFloat(c[cc]);
    }
  };
  if constexpr (kFused) {
    if (norm.residual != nullptr && seg.splits == 1) {
      ResidualEpilogue<T, kMT>(acc, residual_ops, norm, args.m, args.n, m0, strip, seg.col_block, warp_active, s_red);
      return;
    }
  }
  if (seg.splits == 1) {
    if (warp_active) store_y();
    return;
  }
  if constexpr (kCluster) {
    const int vecs = (valid_rows + 7) / 8;  // the 8-row groups with rows < M
    ClusterReduce<kAcc>(acc, seg.split, seg.splits, vecs, s_x, tid);
    if (warp_active) store_y(seg.split * vecs / seg.splits, (seg.split + 1) * vecs / seg.splits);
    ClusterSyncRelaxed();  // the other blocks have read this block's partials: it may exit
    return;
  }
  // Split K. own_reduce: this split's partials in fragment order (FragmentSplitFloats: one
  // 16-byte store per 8-row group); else [splits][M][N] for SumPartialsInSplitOrder.
  const float* frag = nullptr;
  int64_t frag_split_stride = 0;
  if (args.own_reduce) {
    frag_split_stride = FragmentSplitFloats(args.m, args.n);
    frag = args.partials + FragmentTileOffset(args.m, args.n, seg.col_block, m0) + 4 * tid;
    // (The spread reduction keeps this block's own slice on chip: SpreadReduce.)
    const int vecs = (valid_rows + 7) / 8;
    static_assert(kMT / 16 * kThreads * 16 <= C::kStages * C::kXStageBytes, "the own slice (2+ splits) fits the X stages");
    const bool spread = kMT == 128 && !kFused && args.spread_reduce != kSpreadOff;  // (SpreadReduce's kOwnOnChip)
    const int own0 = spread ? SpreadSliceBegin(seg.split, seg.splits, vecs) : 0;
    const int own1 = spread ? SpreadSliceBegin(seg.split + 1, seg.splits, vecs) : 0;
    if (warp_active) {
      float* mine = const_cast<float*>(frag) + seg.split * frag_split_stride;
#pragma unroll
      for (int i = 0; i < kMT / 8; ++i) {
        if (i < vecs && (i < own0 || i >= own1)) {
          __stcg(reinterpret_cast<float4*>(mine + i * kFragmentGroupFloats),
                 make_float4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]));
        }
      }
    }
  } else if (warp_active) {
    float* part = args.partials + static_cast<int64_t>(seg.split) * args.m * args.n;
#pragma unroll
    for (int i = 0; i < kMT / 8; ++i) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int n = strip * 16 + g + 8 * (c >> 1), m = m0 + 8 * i + 2 * q + (c & 1);
        if (m < args.m) __stcg(part + static_cast<int64_t>(m) * args.n + n, acc[4 * i + c]);
      }
    }
  }
  if constexpr ((kMT == 128 || kMT == 64) && !kFused) {
    if (args.spread_reduce != kSpreadOff) {  // (own_reduce, classic plans: MakeTcPlan)
      SpreadReduce<kAcc, kMT == 128>(args, seg, acc, frag, frag_split_stride, (valid_rows + 7) / 8, warp_active, tid, s_x,
                              store_group);
      return;
    }
  }
  // Arrival: after the barrier one thread's acquire-release atomic publishes the whole block's
  // partial stores (the release is cumulative over the barrier, as in cooperative groups' grid
  // sync) and, for the last split, acquires the other splits' (one fence, not one per thread).
  __shared__ int s_is_last;
  __syncthreads();
  int* counter = args.counters + seg.col_block * args.num_m_tiles + seg.m_tile;
  if (tid == 0) s_is_last = AtomicAddAcqRelGpu(counter, 1) == seg.splits - 1;
  __syncthreads();
  if (!s_is_last) return;
  if (args.own_reduce) {
    // Each thread sums the partials of its own accumulator elements in split order from 0.0f
    // (bitwise SumPartialsInSplitOrder's order), its own split from registers at MT <= 32. The
    // 16-byte loads of kBatch splits are issued together: at MT = 16 all 8 splits of a decode
    // step's projection in one L2 round trip (64 floats per thread; two trips of 32 had left
    // the reducing blocks ~5 us behind the others). 32 floats at MT = 32 and 64 (more spilled).
    if (warp_active) {
      constexpr int kVecs = kAcc / 4;
      constexpr int kBatch = kAcc == 8 ? 8 : kAcc == 16 ? 2 : 1;
      constexpr bool kOwnFromRegisters = kAcc <= 16;
      const int valid_vecs = (valid_rows + 7) / 8;
      float own[kOwnFromRegisters ? kAcc : 1];
#pragma unroll
      for (int i = 0; i < kAcc; ++i) {
        if constexpr (kOwnFromRegisters) own[i] = acc[i];
        acc[i] = 0.0f;
      }
      for (int sp0 = 0; sp0 < seg.splits; sp0 += kBatch) {
        float4 v[kBatch][kVecs];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int sp = sp0 + b;
          const bool load = sp < seg.splits && !(kOwnFromRegisters && sp == seg.split);
          const float* part = frag + (load ? sp : 0) * frag_split_stride;
#pragma unroll
          for (int j = 0; j < kVecs; ++j) {
            v[b][j] = load && j < valid_vecs ? __ldcg(reinterpret_cast<const float4*>(part + j * kFragmentGroupFloats))
                                             : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          }
        }
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int sp = sp0 + b;
          if (sp >= seg.splits) continue;
#pragma unroll
          for (int j = 0; j < kVecs; ++j) {
            const float4 p = v[b][j];
            if constexpr (kOwnFromRegisters) {
              const bool mine = sp == seg.split;
              acc[4 * j] += mine ? own[4 * j] : p.x;
              acc[4 * j + 1] += mine ? own[4 * j + 1] : p.y;
              acc[4 * j + 2] += mine ? own[4 * j + 2] : p.z;
              acc[4 * j + 3] += mine ? own[4 * j + 3] : p.w;
            } else {
              acc[4 * j] += p.x;
              acc[4 * j + 1] += p.y;
              acc[4 * j + 2] += p.z;
              acc[4 * j + 3] += p.w;
            }
          }
        }
      }
      if constexpr (kFused) {
        if (norm.residual == nullptr) store_y();
      } else {
        store_y();
      }
    }
    if constexpr (kFused) {  // every thread: a barrier inside
      if (norm.residual != nullptr) {
        ResidualEpilogue<T, kMT>(acc, residual_ops, norm, args.m, args.n, m0, strip, seg.col_block, warp_active, s_red);
      }
    }
  } else {
    SumPartialsInSplitOrder<T>(args.partials, seg.splits, args.m, args.n, args.swiglu, m0, valid_rows, seg.col_block, y);
  }
  if (tid == 0) *counter = 0;  // ready for the next call
}


// The kernel's body: one segment (classic split-K), or with Stream-K (MT = 128) the block's
// segments in order (at most a tile's tail, whole tiles, and a tile's head). kFused: with the
// fused norms (TcLutGemmFusedKernel, bf16 only), so that the plain kernel compiles exactly as
// without them (with the fused code in one instance, batch 8-16 decode steps that did not use it
// were 2-3 % slower on the H100). kCluster: split-K in clusters (TcLutGemmClusterKernel).
template <typename T, int kBits, int kMT, int kGroup, bool kFused, int kLoop, bool kCluster = false>
__device__ __forceinline__ void TcLutGemmBody(const TcArgs& args, const TcNormArgs& norm) {
  const trace::Scope trace_scope(trace::kLutTensorCore, args.n, args.k);
  if constexpr (kCluster) {
    TcLutGemmSegment<T, kBits, kMT, kGroup, kFused, kLoop, true>(args, norm, ClusterSegment(args), true);
  } else if constexpr (kMT != 128) {
    TcLutGemmSegment<T, kBits, kMT, kGroup, kFused, kLoop, false>(args, norm, ClassicSegment(args), true);
  } else {
    // (total and end are recomputed after each segment from an opaque zero: not live through it)
    const bool stream_k = args.splits == 0;
    const auto total = [&]() { return static_cast<int64_t>(StreamKTiles(args)) * (args.k / kTileK + OpaqueZero()); };
    volatile TcSegment seg;
    StoreSegment(stream_k ? StreamKSegment(args, blockIdx.x * total() / gridDim.x,
                                                (blockIdx.x + 1) * total() / gridDim.x)
                               : ClassicSegment(args),
                 &seg);
    for (bool first = true;; first = false) {
      TcLutGemmSegment<T, kBits, kMT, kGroup, kFused, kLoop, false>(args, norm, seg, first);
      if (!stream_k) return;
      const int num_ktiles = args.k / kTileK;
      const int64_t end = (blockIdx.x + 1) * total() / gridDim.x;
      const int64_t it = static_cast<int64_t>(seg.col_block * args.num_m_tiles + seg.m_tile) * num_ktiles +
                         seg.kt_begin + seg.num_iters;
      if (it >= end) return;
      __syncthreads();  // the next segment refills the stages (and scratch) this one used
      StoreSegment(StreamKSegment(args, it, end), &seg);
    }
  }
}

template <typename T, int kBits, int kMT, int kGroup, int kLoop>
__global__ void __launch_bounds__(kThreads, (TcConfig<kBits, kMT>::kMinBlocksPerSm))
TcLutGemmKernel(const TcArgs args) {
  TcLutGemmBody<T, kBits, kMT, kGroup, false, kLoop>(args, TcNormArgs{});
}

// Plain calls whose splits form one cluster per tile (TcPlan::cluster > 1; MT = 128 only): the
// partials are summed through distributed shared memory (ClusterReduce) instead of the
// workspace, its arrival counter and one block's L2 round trips.
template <typename T, int kBits, int kMT, int kGroup, int kLoop>
__global__ void __launch_bounds__(kThreads, (TcConfig<kBits, kMT>::kMinBlocksPerSm))
TcLutGemmClusterKernel(const TcArgs args) {
  TcLutGemmBody<T, kBits, kMT, kGroup, false, kLoop, true>(args, TcNormArgs{});
}

template <typename T, int kBits, int kMT, int kGroup, int kLoop>
__global__ void __launch_bounds__(kThreads, (TcConfig<kBits, kMT>::kMinBlocksPerSm))
TcLutGemmFusedKernel(const TcArgs args, const TcNormArgs norm) {
  TcLutGemmBody<T, kBits, kMT, kGroup, true, kLoop>(args, norm);
}

// ---- Launchers (lut_gemm_tc_launch.h) -------------------------------------------------------
template <typename Kernel, typename... Args>
cudaError_t LaunchTcKernel(Kernel kernel, int grid, int smem_bytes, bool pdl, cudaStream_t stream, const Args&... args) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (err != cudaSuccess) return err;
  if (pdl) {
    LaunchWithPdl(kernel, grid, kThreads, smem_bytes, stream, args...);
  } else {
    kernel<<<grid, kThreads, smem_bytes, stream>>>(args...);
  }
  return cudaGetLastError();
}

// The cluster kernel's launch: clusters of p.cluster blocks along x, with PDL when asked.
template <typename Kernel>
cudaError_t LaunchTcClusterKernel(Kernel kernel, const TcArgs& args, const TcPlan& p, bool pdl, cudaStream_t stream) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, p.smem_bytes);
  if (err != cudaSuccess) return err;
  cudaLaunchAttribute attrs[2];
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = p.cluster;
  attrs[0].val.clusterDim.y = 1;
  attrs[0].val.clusterDim.z = 1;
  attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[1].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(p.num_col_blocks * p.splits * p.num_m_tiles);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = p.smem_bytes;
  config.stream = stream;
  config.attrs = attrs;
  config.numAttrs = pdl ? 2 : 1;
  return cudaLaunchKernelEx(&config, kernel, args);
}

template <typename T, int kBits, int kMT, int kLoop>
cudaError_t LaunchTcLoopInstance(const TcArgs& args, const TcNormArgs& norm, const TcPlan& p, bool pdl,
                                 cudaStream_t stream) {
  if constexpr (kMT == 128 && (kLoop == kPlainLoop || kLoop == kRawScaleLoop)) {
    if (p.cluster > 1 && !norm.any()) {
      return LaunchTcClusterKernel(TcLutGemmClusterKernel<T, kBits, kMT, TcGroupFor(kMT), kLoop>, args, p, pdl, stream);
    }
  }
  const int grid = p.stream_k ? p.grid : p.num_col_blocks * p.splits * p.num_m_tiles;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {  // the fused kernel: bf16 only
    if (norm.any()) {
      return LaunchTcKernel(TcLutGemmFusedKernel<T, kBits, kMT, TcGroupFor(kMT), kLoop>, grid, p.smem_bytes, pdl,
                            stream, args, norm);
    }
  }
  return LaunchTcKernel(TcLutGemmKernel<T, kBits, kMT, TcGroupFor(kMT), kLoop>, grid, p.smem_bytes, pdl, stream,
                        args);
}

template <typename T, int kBits, int kMT>
cudaError_t LaunchTcInstance(const TcArgs& args, const TcNormArgs& norm, const TcPlan& p, bool pdl,
                             cudaStream_t stream) {
  if constexpr (kMT == 16) {
    if (args.group_size == 64 && FoldFromEnv()) return LaunchTcLoopInstance<T, kBits, kMT, kFoldLoop>(args, norm, p, pdl, stream);
  }
  if constexpr (kMT == 64) {
    if (args.group_size < kTileK) return LaunchTcLoopInstance<T, kBits, kMT, kSmallGroupLoop>(args, norm, p, pdl, stream);
  }
  if constexpr (kMT == 32) {
    if (args.group_size >= kTileK && TileGroupFromEnv()) {
      return LaunchTcLoopInstance<T, kBits, kMT, kTileGroupLoop>(args, norm, p, pdl, stream);
    }
  }
  if constexpr (kMT == 128) {  // one 128-row tile (RawScalesFromEnv has why)
    if (args.m <= 128 && RawScalesFromEnv()) {
      return LaunchTcLoopInstance<T, kBits, kMT, kRawScaleLoop>(args, norm, p, pdl, stream);
    }
  }
  return LaunchTcLoopInstance<T, kBits, kMT, kPlainLoop>(args, norm, p, pdl, stream);
}

}  // namespace

template <typename T, int kBits>
int TcClusterCapacity(int cluster, int smem_bytes) {
  const auto kernel = TcLutGemmClusterKernel<T, kBits, 128, TcGroupFor(128), kPlainLoop>;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = cluster;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(cluster);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem_bytes;
  config.attrs = &attr;
  config.numAttrs = 1;
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return clusters;
}

template <typename T, int kBits>
cudaError_t LaunchTcForBits(const TcArgs& args, const TcNormArgs& norm, const TcPlan& p, bool pdl, cudaStream_t stream) {
  switch (p.mt) {
    case 16: return LaunchTcInstance<T, kBits, 16>(args, norm, p, pdl, stream);
    case 32: return LaunchTcInstance<T, kBits, 32>(args, norm, p, pdl, stream);
    case 64: return LaunchTcInstance<T, kBits, 64>(args, norm, p, pdl, stream);
    default: return LaunchTcInstance<T, kBits, 128>(args, norm, p, pdl, stream);
  }
}

}  // namespace flute::lut::tc_detail
