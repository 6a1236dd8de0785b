// Paged GQA attention for sm_90 (H100), decode rows: the decode kernels and their launchers
// (LaunchDecodeForGroup, LaunchCombine, DecodeColumnsForGroup: attention_launch.h). The entry
// points and the KV-cache write are in attention.cu (which lists the files), the prefill kernels
// in attention_prefill.cu, what both share in attention_common.cuh. The kernels:
//
//  - Decode (query_len == 1, decided per sequence from device memory): DecodeChunkKernel, one
//    CTA per (sequence, kv head, slice of <= kMaxGroup query heads, split). The context is cut
//    into chunks of kChunk = 64 positions (small: a short context still spreads over many
//    CTAs, which a batch-1 decode step needs); a sequence's chunks are dealt to at most
//    kMaxSplits = 16 splits as contiguous ranges (ceil(chunks / 16) chunks per split: a
//    function of the context length only). A CTA serves every query head of its slice and
//    reads each K/V element of its chunks once: per chunk, all 64 K rows and 64 V rows are
//    copied into shared memory by cp.async (16 bytes per copy, every row in flight at once:
//    one block-table round trip, then one K/V round trip), then scores, exact softmax inside
//    the chunk and P V are computed from shared memory on the tensor cores (DecodeChunk:
//    mma.sync.m16n8k16 with the slice's heads as the rows of the A tile, P rounded to the
//    activation type as in the prefill kernel); chunks are merged in order in registers.
//    Loading order and PDL: the kernel is launched with programmatic dependent launch right
//    after the RoPE + KV-write kernel (or after the prefill kernel, whose CTAs let it start
//    only once they have waited for that kernel), and before its grid dependency
//    wait it may read only what that kernel does not write: the step inputs (query_start,
//    context_len, block_tables) and the cache rows of positions < context_len - 1. So a CTA
//    puts its FIRST chunk's K/V rows in flight before the wait, except the row of position
//    context_len - 1 (this step's token); after the wait it copies that row (when it lies in
//    the chunk) and loads q, the two written by the previous kernel. Later chunks of a CTA
//    (contexts > 1024 positions: several chunks per split) are copied after the wait, each at
//    the start of its own iteration (no double buffering). CTAs without work (prefill
//    sequences, splits beyond the sequence's) still wait before they exit, so the grid never
//    completes before its predecessor (the next kernel's wait covers this grid only). A
//    one-chunk sequence writes `out` directly; otherwise each split writes (max, sum, unnormalized
//    output) to the workspace, and the split that finishes last (a counter per sequence and CTA
//    column in the workspace's zeroed prefix) merges the splits in order (MergeSplits); the
//    separate CombineKernel does the same merge where the counters do not fit (or with
//    FLUTE_ATTENTION_COMBINE=kernel), bitwise alike. Nothing depends on
//    the other sequences or on the max_* bounds, so a row's result is bitwise batch invariant;
//    the loading scheme changes where the operands come from, not the order of any
//    floating-point operation.
//  - Decode with a fused RoPE + KV write (FusedRopeKv, decode-only launches: the RoPE +
//    KV-write kernel is not launched): DecodeChunkRopeKernel, the same CTA work
//    (DecodeChunkCta<..., kFused = true>) plus, before the wait, cos/sin of the row's position
//    (positions and inv_freq are step inputs) and, after it, the RoPE of the CTA's q heads from
//    the raw qkv (into shared memory, where LoadQ's values would come from) and, in the CTA
//    whose chunks hold position context_len - 1, the RoPE of the kv head's k with the v of that
//    position, taken from qkv into the chunk's shared K/V rows instead of being copied from the
//    cache, and stored to the cache at the row's slot (by head slice 0). The rotation is
//    RopeKvWriteKernel's code (kernels/rope_math.cuh) and everything else is unchanged, so `out`
//    and the cache are bitwise those of RopeKvWrite + the unfused kernel. A row whose slot is
//    invalid (padding) writes nothing and reads that position from the cache, as unfused.
//  - The same for a single decode sequence (batch 1, where the merge is on the critical path of
//    the step): DecodeChunkRopeClusterKernel, whose ws_splits CTAs of a kv head slice form one
//    thread-block cluster (up to 16 CTAs: "non-portable" beyond 8, which the H100 allows) and
//    merge the splits over distributed shared memory (MergeSplitsCluster: MergeSplits'
//    arithmetic, so the same bits) instead of through the workspace, the fence, the counter's
//    atomic and the L2 reads of the last-arriving split. H100, 8B decode at batch 1 (same
//    session, against FLUTE_ATTENTION_COMBINE=last): W4 -0.05 ms per step, bf16 -0.11 ms. With
//    clusters up to 4 (or 32) sequences, batch 4 was 0.2 ms slower (and batches 8 and 16 0.3 and
//    0.7 ms with 32), so only single-sequence launches use it.
//  - The same for many (sequence, kv head) pairs (DecodeColumnsRopeKernel, 8B from batch 13): one
//    or two CTA columns per pair instead of one CTA per split; a column computes the splits
//    column, column + columns, ... in turn, each exactly as above (bitwise the same `out`), its
//    chunks double-buffered (the first two copied before the PDL wait). At one column (8B from
//    batch ~26) a CTA computes all of its slice's splits, so it keeps their partials in its own
//    shared memory and merges them itself (MergeLocalSplits: MergeSplits' arithmetic, the same
//    bits) instead of through the workspace, the arrival atomic and L2 (LocalMergeSmem). See
//    DecodeColumnCta.
//
// All softmax arithmetic is fp32 in the log2 domain: q is pre-multiplied by scale * log2(e)
// and exp2f is used throughout.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/arrival.cuh"
#include "kernels/attention_common.cuh"
#include "kernels/attention_launch.h"
#include "kernels/cluster.cuh"
#include "kernels/pdl.cuh"
#include "kernels/rope_math.cuh"

namespace flute::gpu::attn_detail {
namespace {

// ---- Decode: chunks of one sequence for one kv head ---------------------------------------
// A chunk on the tensor cores (DecodeChunk): warp w takes keys 16w .. 16w + 15 of the chunk for
// S = Q Kᵀ (the slice's query heads are the rows of one m16n8k16 A tile: rows >= ng, and 8-15,
// are zero), the softmax's max and sum over the chunk meet in shared memory, P goes to shared
// memory as 16-bit values, and warp w then computes P V for dims [w D / 4, (w + 1) D / 4) over
// all 64 keys. (The SIMT version this replaced ran ~1200 dependent instructions per thread at
// one warp per scheduler: 3.2 of the 5.8 us a batch-1 CTA spends after its wait, H100.)
//
// Shared memory per CTA: the chunk's K and V rows (16-bit, D / 8 16-byte pieces per row; 16
// KB each at D = 128, 8 KB each at D = 64), brought by cp.async, piece p of row r stored at
// piece Swizzle(r, p) = p ^ (r % 8), so that the 8 rows of an MMA fragment load (and of an
// ldmatrix matrix) fall in distinct banks; once the chunk's S is done, the K rows hold P
// [8][kChunk + 8] (16-bit; +8: conflict-free A loads) and then the chunk's P V sums
// chunk_sum[kG][D] (fp32), and after the chunk loop the V rows are the split merges' scratch
// (MergeScratch). Plus the per-warp row max and sum. Totals (static, under the 48 KB limit):
// 33-34 KB at D = 128, 17-18 KB at D = 64.
template <int kD, int kG, int kBufs = 1>
struct DecodeSmem {
  static constexpr int kPieces = kD / 8;  // 16-byte pieces per K (or V) row
  static constexpr int kWarps = kDecodeThreads / 32;
  static_assert(kWarps * 16 == kChunk, "one 16-key slice of the chunk per warp");
  static_assert(kG <= 8, "the slice's heads are rows 0-7 of one MMA tile");
  static_assert(kPieces >= 8, "the swizzle permutes 8 pieces");
  static __device__ __forceinline__ int Swizzle(int row, int piece) { return piece ^ (row & 7); }
  struct KvRows {
    uint4 k[kChunk][kPieces];
    uint4 v[kChunk][kPieces];
  };
  struct ChunkOut {            // over the K rows, once the chunk's S is done
    float chunk_sum[kG][kD];   // the chunk's P V per head, before the merge into the run
    uint16_t pt[8][kChunk + 8];
  };
  static_assert(sizeof(ChunkOut) <= sizeof(uint4) * kChunk * kPieces, "P and the sums must fit the K rows");
  union Store {
    KvRows kv;
    ChunkOut out;
  };
  Store buf[kBufs];                          // 16-byte aligned (uint4 members), at offset 0
  float wmax[kWarps][8], wsum[kWarps][8];    // per warp: row max and sum over its 16 keys
  float l[kG];
  float m[kG];
  int merges;                                // this CTA arrived last: it merges the splits
};

// Scratch of the split merges (MergeSplits' (max, sum) pairs, 2 * kG * kMaxSplits floats): the
// V rows, free once the chunk loop is over (the cluster merge's partials sit in the K rows).
template <int kD, int kG, int kBufs>
__device__ __forceinline__ float* MergeScratch(DecodeSmem<kD, kG, kBufs>& sm) {
  static_assert(sizeof(sm.buf[0].kv.v) >= sizeof(float) * 2 * kG * kMaxSplits, "the merge's scratch must fit");
  return reinterpret_cast<float*>(&sm.buf[0].kv.v[0][0]);
}

// What one CTA knows about its (sequence, kv head, head slice).
struct DecodeTask {
  int seq, q_row, ctx, num_chunks;
  int kv_head, h0, ng;  // first query head, number of query heads in this slice
};

// A thread's share of the running (max, sum, unnormalized output) of its CTA's chunks, for
// the outputs o = threadIdx.x + 128 i (i < kOut) of the CTA's [ng, D] slice.
template <int kD, int kG>
struct DecodeRun {
  static constexpr int kOut = (kG * kD + kDecodeThreads - 1) / kDecodeThreads;
  float acc[kOut], m[kOut], l[kOut];
};

// Split of a sequence's chunks: split y of a sequence with `num_chunks` chunks handles chunks
// [y * per_split, min(num_chunks, (y + 1) * per_split)); a function of the context length only.
struct SplitPlan {
  int per_split, num_splits;
};
__device__ __forceinline__ SplitPlan PlanSplits(int num_chunks) {
  const int per_split = (num_chunks + kMaxSplits - 1) / kMaxSplits;
  return {per_split, (num_chunks + per_split - 1) / per_split};
}

// cp.async of 16 bytes global -> shared, cached in L2 only. No "memory" clobber: the global
// reads it depends on (block-table entries) may still be scheduled ahead of earlier copies,
// so all of a thread's table loads go out together; shared-memory hazards are ordered by the
// barriers around CpAsyncWaitAll.
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void CpAsyncWaitAll() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
// Waits for all but the most recently committed group.
__device__ __forceinline__ void CpAsyncWaitPrior1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

// Issues (does not wait for) the cp.async of the K and V rows of positions c0 + r, r < n
// (n <= kChunk: the chunk's positions in the context), except row `skip` (pass kChunk to
// skip none), into sm.buf[b].kv. Thread t copies piece t % kPieces of rows t / kPieces + j *
// kRowsPerPass; its block-table entries are all loaded before its first copy, so the chunk
// costs one table round trip, then one K/V round trip with every row in flight.
template <typename T, int kD, int kG, int kBufs>
__device__ __forceinline__ void IssueChunkKv(const AttnArgs& a, const int32_t* table, int kv_head, int c0,
                                             int n, int skip, DecodeSmem<kD, kG, kBufs>& sm, int b) {
  constexpr int kPieces = kD / 8;
  constexpr int kRowsPerPass = kDecodeThreads / kPieces;
  constexpr int kPasses = kChunk / kRowsPerPass;  // 8 at D = 128, 4 at D = 64
  const int r0 = threadIdx.x / kPieces, piece = threadIdx.x % kPieces;
  int32_t block[kPasses];
#pragma unroll
  for (int j = 0; j < kPasses; ++j) {
    const int r = r0 + j * kRowsPerPass;
    block[j] = r < n ? table[(c0 + r) >> a.bs_log2] : 0;  // never past the context's blocks
  }
  const T* k_cache = static_cast<const T*>(a.k_cache);
  const T* v_cache = static_cast<const T*>(a.v_cache);
#pragma unroll
  for (int j = 0; j < kPasses; ++j) {
    const int r = r0 + j * kRowsPerPass;
    if (r < n && r != skip) {
      const size_t off = SlotOffset(block[j], c0 + r, a.bs_log2, a.num_kv_heads, kv_head, kD) + piece * 8;
      const int sp = DecodeSmem<kD, kG>::Swizzle(r, piece);
      CpAsync16(&sm.buf[b].kv.k[r][sp], k_cache + off);
      CpAsync16(&sm.buf[b].kv.v[r][sp], v_cache + off);
    }
  }
}

// The A fragments of Q for DecodeChunk, for g = lane / 4, t = lane % 4: qa[ks][0] = q[head h0 +
// g][16 ks + 2t, +1] and qa[ks][1] = q[head h0 + g][16 ks + 8 + 2t, +1] (16-bit pairs), zero for
// g >= ng; the fragment's rows 8-15 are zero and not stored. `row` points at word t of head
// h0 + g's q (any head of the slice when g >= ng: it is not read then).
template <int kD>
using QFragments = uint32_t[kD / 16][2];
template <int kD>
__device__ __forceinline__ void FillQFragments(const uint32_t* row, bool valid, QFragments<kD>& qa) {
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    qa[ks][0] = valid ? row[8 * ks] : 0u;
    qa[ks][1] = valid ? row[8 * ks + 4] : 0u;
  }
}
// Unfused: raw q from qkv, a plain (coherent) load, not __ldg: q is written by the previous
// kernel, and this load must stay after the grid dependency wait (an invariant/non-coherent
// load could be hoisted).
template <typename T, int kD, int kG>
__device__ __forceinline__ void LoadQ(const AttnArgs& a, const DecodeTask& task, QFragments<kD>& qa) {
  const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
  const uint32_t* q = reinterpret_cast<const uint32_t*>(static_cast<const T*>(a.q) +
                                                        static_cast<int64_t>(task.q_row) * a.row_stride +
                                                        (task.h0 + min(g, task.ng - 1)) * kD) + t;
  FillQFragments<kD>(q, g < task.ng, qa);
}

// ---- Decode with the fused RoPE + KV write (FusedRopeKv) -------------------------------------
// Shared memory of the fused instances only (a function-scope __shared__ variable: the unfused
// instances do not reference it, so their shared memory stays DecodeSmem alone). 768 bytes +
// 256 per query head of the slice at D = 128 (3072 at kG = 8), half that at D = 64.
template <int kD, int kG>
struct FusedRopeSmem {
  static constexpr int kPieces = kD / 8;
  uint4 q[kG][kPieces];  // the slice's q heads after RoPE, 16-bit: what LoadQ reads after RopeKvWrite
  uint4 k[kPieces];      // the newest position's k head after RoPE, and its v head (when this CTA
  uint4 v[kPieces];      // holds that position and the row's slot is valid)
  float cos[kD / 2];     // of the row's position, per frequency
  float sin[kD / 2];
};
template <int kD, int kG>
__device__ __forceinline__ FusedRopeSmem<kD, kG>& FusedSmem() {
  __shared__ FusedRopeSmem<kD, kG> s;
  return s;
}

// Before the grid dependency wait: cos/sin of the row's position into shared memory (positions
// and inv_freq are step inputs, never written by a kernel). Exactly RopeKvWriteKernel's values
// (kernels/rope_math.cuh); sincosf's slow path (|angle| > ~1e5 at positions up to 128k) runs
// while the previous kernel finishes. The caller puts a barrier before the values are read.
template <int kD, int kG>
__device__ __forceinline__ void FusedRopeSinCos(const RopeKvArgs& r, const DecodeTask& task) {
  auto& fs = FusedSmem<kD, kG>();
  const float position = static_cast<float>(r.positions[task.q_row]);
  for (int j = threadIdx.x; j < kD / 2; j += kDecodeThreads) {
    rope::SinCos(position, r.inv_freq[j], &fs.sin[j], &fs.cos[j]);
  }
}

// After the wait (qkv is the previous kernel's output) and a barrier after FusedRopeSinCos: the
// RoPE of the slice's q heads into fs.q, and when `newest` (this CTA's chunks contain position
// ctx - 1 and the row's slot is valid) the RoPE of the kv head's k into fs.k and its v into
// fs.v, both also stored to the cache at `slot` when `write` (head slice 0 of the kv head: the
// other slices hold the same row and write nothing). RopeKvWriteKernel's work items and
// arithmetic: item (head, 8 consecutive j < D/2) loads x[j0..j0+7] and x[j0+D/2..], rotates in
// fp32 (rope::RotatePair) and rounds once to 16 bits; v pieces are copied as they are. At most
// (kG + 1) * D/16 + D/8 = 88 items (D = 128, kG = 8): one pass of the 128 threads.
template <typename T, int kD, int kG>
__device__ __forceinline__ void FusedRopeKvRows(const AttnArgs& a, const RopeKvArgs& r, const DecodeTask& task,
                                                bool newest, bool write, int slot) {
  constexpr int kPieces = kD / 8, kHalf = kD / 2, kHalfPieces = kPieces / 2;
  auto& fs = FusedSmem<kD, kG>();
  const T* row = static_cast<const T*>(a.q) + static_cast<int64_t>(task.q_row) * a.row_stride;
  const int q_items = task.ng * kHalfPieces;
  const int rope_items = q_items + (newest ? kHalfPieces : 0);
  const int items = rope_items + (newest ? kPieces : 0);
  // The cache row of (slot, kv head) in 16-byte pieces (used only when `write`).
  const int64_t cache_piece = (static_cast<int64_t>(write ? slot : 0) * a.num_kv_heads + task.kv_head) * kPieces;
  for (int item = threadIdx.x; item < items; item += kDecodeThreads) {
    if (item < rope_items) {
      const bool is_k = item >= q_items;
      const int g = item / kHalfPieces;  // query head of the slice (q items)
      const int jp = item % kHalfPieces;  // q_items is a multiple of kHalfPieces: also right for k
      const T* x = is_k ? row + r.k_offset + task.kv_head * kD : row + (task.h0 + g) * kD;
      const int j0 = jp * 8;
      // Plain (coherent) loads: qkv is written by the previous kernel; after the wait.
      const uint4 ua = *reinterpret_cast<const uint4*>(x + j0);
      const uint4 ub = *reinterpret_cast<const uint4*>(x + j0 + kHalf);
      float xa[8], xb[8], ra[8], rb[8];
      Unpack8<T>(ua, xa);
      Unpack8<T>(ub, xb);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float c = fs.cos[j0 + i], sn = fs.sin[j0 + i];
        rope::RotatePair(xa[i], xb[i], c, sn, ra[i], rb[i]);
      }
      const uint4 pa = Pack8<T>(ra), pb = Pack8<T>(rb);
      if (is_k) {
        fs.k[jp] = pa;
        fs.k[jp + kHalfPieces] = pb;
        if (write) {
          uint4* dst = static_cast<uint4*>(const_cast<void*>(a.k_cache)) + cache_piece;
          dst[jp] = pa;
          dst[jp + kHalfPieces] = pb;
        }
      } else {
        fs.q[g][jp] = pa;
        fs.q[g][jp + kHalfPieces] = pb;
      }
    } else {
      const int p = item - rope_items;
      const uint4 v = *reinterpret_cast<const uint4*>(row + r.v_offset + task.kv_head * kD + p * 8);
      fs.v[p] = v;
      if (write) static_cast<uint4*>(const_cast<void*>(a.v_cache))[cache_piece + p] = v;
    }
  }
}

// LoadQ of the fused instances: the rotated q from fs.q (after the barrier that follows
// FusedRopeKvRows), bitwise what LoadQ reads from qkv after RopeKvWrite.
template <int kD, int kG>
__device__ __forceinline__ void LoadRotatedQ(const DecodeTask& task, QFragments<kD>& qa) {
  const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
  auto& fs = FusedSmem<kD, kG>();
  FillQFragments<kD>(reinterpret_cast<const uint32_t*>(&fs.q[min(g, kG - 1)][0]) + t, g < task.ng, qa);
}

// One chunk of kChunk positions, its K and V rows already in sm.buf[b].kv (cp.async complete, rows
// >= n of V zero, a barrier passed): exact softmax over the chunk on the tensor cores, merged
// into `run`. qa from LoadQ / LoadRotatedQ. Three barriers: the warps' row maxima, P, the sums.
template <typename T, int kD, int kG, int kBufs>
__device__ __forceinline__ void DecodeChunk(const AttnArgs& a, const DecodeTask& task, int chunk,
                                            const QFragments<kD>& qa, DecodeSmem<kD, kG, kBufs>& sm,
                                            DecodeRun<kD, kG>& run, int b) {
  using Smem = DecodeSmem<kD, kG, kBufs>;
  auto& buf = sm.buf[b];
  constexpr int kWarpTiles = kD / 8 / Smem::kWarps;  // n-tiles of 8 dims per warp in P V: 4 or 2
  const int ng = task.ng;
  const int n = min(kChunk, task.ctx - chunk * kChunk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;

  // S = Q Kᵀ for keys 16 warp + 8 nt + 2t (+1) of row g (s[nt][0..1]; [2..3]: the zero rows).
  float s[2][4];
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    // Row 16 warp + 8 nt + g (row % 8 = g): dims 16 ks + 2t (+1) and + 8 are 32-bit word t of
    // pieces 2 ks and 2 ks + 1, swizzled.
    const uint32_t* krow = reinterpret_cast<const uint32_t*>(&buf.kv.k[16 * warp + 8 * nt + g][0]) + t;
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      const uint32_t aq[4] = {qa[ks][0], 0u, qa[ks][1], 0u};
      Mma<T>::Run(s[nt], aq, krow[4 * Smem::Swizzle(g, 2 * ks)], krow[4 * Smem::Swizzle(g, 2 * ks + 1)]);
    }
  }
  // Softmax over the chunk (log2 domain): keys >= n masked; the row max over the 4 warps.
  float mx = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int key = 16 * warp + 8 * nt + 2 * t + e;
      s[nt][e] = key < n ? s[nt][e] * a.scale_log2 : -INFINITY;
      mx = fmaxf(mx, s[nt][e]);
    }
  }
#pragma unroll
  for (int off = 1; off < 4; off *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  if (t == 0) sm.wmax[warp][g] = mx;
  __syncthreads();  // every warp's row max; K no longer read (P and chunk_sum take its place)
  float m = sm.wmax[0][g];
#pragma unroll
  for (int w = 1; w < Smem::kWarps; ++w) m = fmaxf(m, sm.wmax[w][g]);  // finite: key 0 < n
  float sum = 0.f;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    s[nt][0] = exp2f(s[nt][0] - m);
    s[nt][1] = exp2f(s[nt][1] - m);
    sum += s[nt][0] + s[nt][1];
    *reinterpret_cast<uint32_t*>(&buf.out.pt[g][16 * warp + 8 * nt + 2 * t]) = Mma<T>::Pack(s[nt][0], s[nt][1]);
  }
#pragma unroll
  for (int off = 1; off < 4; off *= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (t == 0) sm.wsum[warp][g] = sum;
  __syncthreads();  // P complete

  // P V for this warp's dims: k-step j = keys 16j .. 16j + 15; ldmatrix.x4.trans brings the
  // (keys +0 | +8) x (dims of n-tile dt | dt + 1) matrices, lane l addressing row l % 8 of l / 8.
  float o[kWarpTiles][4];
#pragma unroll
  for (int dt = 0; dt < kWarpTiles; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  const uint32_t* prow = reinterpret_cast<const uint32_t*>(&buf.out.pt[g][0]) + t;
#pragma unroll
  for (int j = 0; j < kChunk / 16; ++j) {
    const uint32_t pa[4] = {prow[8 * j], 0u, prow[8 * j + 4], 0u};
    const int key = 16 * j + ((lane / 8) % 2) * 8 + lane % 8;
#pragma unroll
    for (int dt = 0; dt < kWarpTiles; dt += 2) {
      uint32_t b[4];
      LdMatrixX4Trans(b, &buf.kv.v[key][Smem::Swizzle(key, warp * kWarpTiles + dt + lane / 16)]);
      Mma<T>::Run(o[dt], pa, b[0], b[1]);
      Mma<T>::Run(o[dt + 1], pa, b[2], b[3]);
    }
  }
  if (g < kG) {  // (chunk_sum lies before P in the K rows: no barrier needed)
#pragma unroll
    for (int dt = 0; dt < kWarpTiles; ++dt) {
      float* dst = &buf.out.chunk_sum[g][8 * (warp * kWarpTiles + dt) + 2 * t];
      dst[0] = o[dt][0];
      dst[1] = o[dt][1];
    }
  }
  if (threadIdx.x < kG) {  // row threadIdx.x: the chunk's max and sum, warps in order
    float mr = sm.wmax[0][threadIdx.x], lr = 0.f;
#pragma unroll
    for (int w = 1; w < Smem::kWarps; ++w) mr = fmaxf(mr, sm.wmax[w][threadIdx.x]);
#pragma unroll
    for (int w = 0; w < Smem::kWarps; ++w) lr += sm.wsum[w][threadIdx.x];
    sm.m[threadIdx.x] = mr;
    sm.l[threadIdx.x] = lr;
  }
  __syncthreads();

  // Merge the chunk into this thread's running outputs (output i of the thread is element
  // o = threadIdx.x + 128 i of the [ng, D] slice).
#pragma unroll
  for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
    const int o = threadIdx.x + i * kDecodeThreads;
    if (o < ng * kD) {
      const int g = o / kD, d = o % kD;
      const float sum = buf.out.chunk_sum[g][d];
      const float m_new = fmaxf(run.m[i], sm.m[g]);
      const float w_old = exp2f(run.m[i] - m_new), w_chunk = exp2f(sm.m[g] - m_new);
      // The FMA contraction spelled out, as nvcc had contracted the plain expressions
      // run.acc * w_old + sum * w_chunk and run.l * w_old + s_l * w_chunk (its choice for the
      // first depended on kOut; the machine code is byte for byte what it was): the fused RoPE
      // instances (DecodeChunkRopeKernel) must round exactly as the unfused ones, whatever the
      // code around them.
      if constexpr (DecodeRun<kD, kG>::kOut == 1) {
        run.acc[i] = __fmaf_rn(run.acc[i], w_old, __fmul_rn(sum, w_chunk));
      } else {
        run.acc[i] = __fmaf_rn(sum, w_chunk, __fmul_rn(run.acc[i], w_old));
      }
      run.l[i] = __fmaf_rn(run.l[i], w_old, __fmul_rn(sm.l[g], w_chunk));
      run.m[i] = m_new;
    }
  }
}

// Merge of the split partials of query heads [h0, h0 + ng) of one decode row (sequence seq,
// output row q_row), done by a whole CTA of kDecodeThreads threads: out = sum_c acc_c w_c /
// sum_c l_c w_c with w_c = exp2(m_c - max_c m_c), summed in split order (fmaf chains). Shared
// by the last-arriving split CTA and CombineKernel, so both round alike (and as the per-element
// loop this replaced). A thread takes 4 consecutive dimensions of one head ("quad") and puts
// all the splits' float4 partials of its first quad in flight at once, before the (max, sum)
// pairs are staged in shared memory: one L2 round trip for ng <= 4 (two at ng = 8). Loads go
// through L2 (ld.global.cg): other SMs wrote the partials during this launch.
// s_ml: shared scratch of 2 * kG * kMaxSplits floats (ng <= kG).
// load_acc(g, q4, c): float4 of dims 4 q4 .. 4 q4 + 3 of head h0 + g, split c; load_ml(g, c): its
// (max, sum). MergeSplits reads the workspace, the cluster merge (MergeSplitsCluster) the split
// CTAs' shared memory: the same arithmetic in the same order, so the same bits.
template <typename T, int kD, int kG, typename LoadAcc, typename LoadMl>
__device__ __forceinline__ void MergeSplitsWith(const AttnArgs& a, int q_row, int h0, int ng, int num_splits,
                                                float* s_ml, const LoadAcc& load_acc, const LoadMl& load_ml) {
  constexpr int kQuads = kD / 4;
  float4 v[kMaxSplits];
  const auto load_quad = [&](int quad) {
    const int g = quad / kQuads, q4 = quad % kQuads;
#pragma unroll
    for (int c = 0; c < kMaxSplits; ++c) {
      if (c < num_splits) v[c] = load_acc(g, q4, c);
    }
  };
  const int quads = ng * kQuads;
  if (static_cast<int>(threadIdx.x) < quads) load_quad(threadIdx.x);
  float* s_m = s_ml;                     // [kG][kMaxSplits]
  float* s_l = s_ml + kG * kMaxSplits;   // [kG][kMaxSplits]
  for (int t = threadIdx.x; t < ng * num_splits; t += kDecodeThreads) {
    const int g = t / num_splits, c = t % num_splits;
    const float2 ml = load_ml(g, c);
    s_m[g * kMaxSplits + c] = ml.x;
    s_l[g * kMaxSplits + c] = ml.y;
  }
  __syncthreads();
  T* out = static_cast<T*>(a.out) + static_cast<int64_t>(q_row) * a.num_heads * kD;
  for (int quad = threadIdx.x; quad < quads; quad += kDecodeThreads) {
    if (quad != static_cast<int>(threadIdx.x)) load_quad(quad);
    const int g = quad / kQuads, q4 = quad % kQuads;
    float m = -INFINITY;
    for (int c = 0; c < num_splits; ++c) m = fmaxf(m, s_m[g * kMaxSplits + c]);
    float l = 0.f, acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int c = 0; c < kMaxSplits; ++c) {
      if (c < num_splits) {
        const float w = exp2f(s_m[g * kMaxSplits + c] - m);
        l = fmaf(s_l[g * kMaxSplits + c], w, l);
        acc[0] = fmaf(v[c].x, w, acc[0]);
        acc[1] = fmaf(v[c].y, w, acc[1]);
        acc[2] = fmaf(v[c].z, w, acc[2]);
        acc[3] = fmaf(v[c].w, w, acc[3]);
      }
    }
    T* dst = out + (h0 + g) * kD + 4 * q4;
#pragma unroll
    for (int j = 0; j < 4; ++j) dst[j] = Act<T>::FromFloat(acc[j] / l);
  }
}

// The workspace version. Loads go through L2 (ld.global.cg): other SMs wrote the partials
// during this launch.
template <typename T, int kD, int kG>
__device__ __forceinline__ void MergeSplits(const AttnArgs& a, int seq, int q_row, int h0, int ng, int num_splits,
                                            float* s_ml) {
  constexpr int kQuads = kD / 4;
  const int64_t cell0 = (static_cast<int64_t>(seq) * a.num_heads + h0) * a.ws_splits;  // (h0, split 0)
  MergeSplitsWith<T, kD, kG>(
      a, q_row, h0, ng, num_splits, s_ml,
      [&](int g, int q4, int c) {
        return __ldcg(reinterpret_cast<const float4*>(a.ws_acc + (cell0 + g * a.ws_splits) * kD) + q4 + c * kQuads);
      },
      [&](int g, int c) { return __ldcg(reinterpret_cast<const float2*>(a.ws_ml) + cell0 + g * a.ws_splits + c); });
}

// The cluster version (DecodeChunkRopeClusterKernel): split c's partials are in the shared memory
// of CTA c of the cluster, at `part` ([kG][kD] accumulators, then [kG] (max, sum) pairs).
template <typename T, int kD, int kG>
__device__ __forceinline__ void MergeSplitsCluster(const AttnArgs& a, int q_row, int h0, int ng, int num_splits,
                                                   const float* part, float* s_ml) {
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(part));
  MergeSplitsWith<T, kD, kG>(
      a, q_row, h0, ng, num_splits, s_ml,
      [&](int g, int q4, int c) { return LoadSharedCluster4(MapShared(base + 4u * (g * kD + 4 * q4), c)); },
      [&](int g, int c) { return LoadSharedCluster2(MapShared(base + 4u * (kG * kD + 2 * g), c)); });
}

// After a split CTA has stored its partials: counts its arrival and, in the CTA that arrives
// last, merges every split of the CTA's [ng, D] slice (split_counters set). After a barrier,
// thread 0's acquire-release add publishes the CTA's partial stores and, in the last CTA,
// makes the other splits' visible (AtomicAddAcqRelGpu: one fence per CTA, not one per thread).
// The last CTA resets the counter, so the prefix is zero again when the launch ends. The chunk
// loop's shared memory is free by now (the first barrier): its score buffer holds the merge's
// (max, sum) pairs.
template <typename T, int kD, int kG, int kBufs>
__device__ __forceinline__ void MergeIfLastSplit(const AttnArgs& a, const DecodeTask& task, int num_splits,
                                                 int arrivals, DecodeSmem<kD, kG, kBufs>& sm) {
  __syncthreads();
  if (threadIdx.x == 0) {
    int* counter = a.split_counters + static_cast<int64_t>(task.seq) * gridDim.x + blockIdx.x;
    const bool last = AtomicAddAcqRelGpu(counter, arrivals) == num_splits - arrivals;
    if (last) *counter = 0;  // every split has arrived: nobody else touches it this launch
    sm.merges = last;
  }
  __syncthreads();
  if (!sm.merges) return;
  MergeSplits<T, kD, kG>(a, task.seq, task.q_row, task.h0, task.ng, num_splits, MergeScratch(sm));
}

// Grid (kv heads x head slices, splits, sequences). A sequence of one chunk is written to
// `out` directly; otherwise each split writes its merged partials to the workspace.
//
// PDL (launched with LaunchWithPdl, kernels/pdl.cuh): before GridDependencyWait the kernel
// reads only what the previous kernel (RoPE + KV-cache write; or the prefill kernel, which
// itself waited for that write before it let this grid start) does not write: the step
// inputs (query_start, context_len, block_tables) and the cache rows of positions < ctx - 1.
// So the CTA's first chunk is put in flight before the wait, all but the row of position
// ctx - 1 (the token written this step), which is copied after the wait, with q.
//
// kFused (FusedRopeKv, decode-only launches): the previous kernel is the qkv projection and
// nobody has written position ctx - 1 to the cache. Before the wait the CTA also reads its row's
// position and slot and computes cos/sin (step inputs); after it, it rotates its q heads from
// raw qkv (FusedRopeKvRows) and, if its chunks hold position ctx - 1 and the slot is valid,
// rotates the kv head's k and takes its v from qkv: that row goes into the chunk's shared K/V
// rows in place of a cache copy, and to the cache at the slot (head slice 0 only). With an
// invalid slot (padding row) the row is copied from the cache as in the unfused kernel. The
// rest (loads of the other rows, every floating-point operation of the attention) is the
// unfused kernel's.
//
// kCluster (DecodeChunkRopeClusterKernel): the grid's ws_splits CTAs of one (kv head slice,
// sequence) form a cluster (rank = split), and the splits are merged over distributed shared
// memory instead of through the workspace: each split CTA leaves its partials in its own shared
// memory, one cluster barrier publishes them, split 0 merges them (MergeSplitsCluster: the same
// bits as MergeSplits), and a second (relaxed) barrier keeps every CTA resident until it has
// read them. That replaces the fence, the arrival counter's atomic and the reads of the
// partials from L2 on the critical path of a decode step. A CTA with nothing to do (a split past
// its sequence's context) exits at once, as in the other kernels: the barriers wait for the
// cluster's non-exited threads only.
template <typename T, int kD, int kG, bool kFused, bool kCluster = false>
__device__ __forceinline__ void DecodeChunkCta(const AttnArgs& a, const RopeKvArgs& r, DecodeSmem<kD, kG>& sm) {
  LaunchDependents();  // first, as PdlPrologue (kernels/pdl.cuh says why that is safe)
  // A CTA with nothing to do still waits before it exits (nothing in flight then): the next
  // kernel's wait covers this grid only, so this grid must not complete before its own
  // predecessor (e.g. the O projection after a prefill-only step would read `out` while the
  // prefill kernel still writes it).
  DecodeTask task;
  task.seq = blockIdx.z;
  task.q_row = a.query_start[task.seq];
  if (a.query_start[task.seq + 1] - task.q_row != 1) {  // prefill sequences: the prefill kernel
    GridDependencyWait();
    return;
  }
  task.ctx = a.context_len[task.seq];
  task.num_chunks = (task.ctx + kChunk - 1) / kChunk;
  if (task.num_chunks <= 0) {  // empty context (not a valid step): nothing to attend to
    GridDependencyWait();
    return;
  }
  const SplitPlan plan = PlanSplits(task.num_chunks);
  const int split = blockIdx.y;
  if (split >= plan.num_splits) {
    GridDependencyWait();
    return;
  }
  task.kv_head = blockIdx.x / a.head_slices;
  const int g0 = (blockIdx.x % a.head_slices) * kG;
  task.ng = min(kG, a.group - g0);
  task.h0 = task.kv_head * a.group + g0;
  const int32_t* table = a.block_tables + static_cast<int64_t>(task.seq) * a.max_blocks_per_seq;
  const int first = split * plan.per_split;
  const int last = min(task.num_chunks, first + plan.per_split);

  // Before the wait: the first chunk's K/V rows except position ctx - 1 (its row `newest`
  // in the first chunk; >= kChunk when that position lies in a later chunk), and that row's
  // cache offset (the table is a step input).
  const int newest = task.ctx - 1 - first * kChunk;
  IssueChunkKv<T, kD, kG>(a, table, task.kv_head, first * kChunk, min(kChunk, task.ctx - first * kChunk),
                          newest, sm, 0);
  CpAsyncCommit();
  constexpr int kPieces = kD / 8;
  // Fused: whether the newest row comes from qkv (the row's slot is valid) rather than the cache.
  int slot = -1;
  bool from_qkv = false;
  if constexpr (kFused) {
    slot = r.slots[task.q_row];
    from_qkv = slot >= 0 && slot < r.num_slots;
  }
  const bool copies_newest = newest < kChunk && threadIdx.x < 2 * kPieces && (!kFused || !from_qkv);  // K pieces, then V
  size_t newest_off = 0;
  if (copies_newest) {
    newest_off = CacheOffset(table, task.ctx - 1, a.bs_log2, a.num_kv_heads, task.kv_head, kD) +
                 (threadIdx.x % kPieces) * 8;
  }
  if constexpr (kFused) {
    FusedRopeSinCos<kD, kG>(r, task);
    __syncthreads();  // cos/sin visible to FusedRopeKvRows
  }

  GridDependencyWait();

  if (copies_newest) {
    const int sp = DecodeSmem<kD, kG>::Swizzle(newest, threadIdx.x % kPieces);
    if (threadIdx.x < kPieces) {
      CpAsync16(&sm.buf[0].kv.k[newest][sp], static_cast<const T*>(a.k_cache) + newest_off);
    } else {
      CpAsync16(&sm.buf[0].kv.v[newest][sp], static_cast<const T*>(a.v_cache) + newest_off);
    }
  }
  CpAsyncCommit();
  // Fused: the chunk (if any of this CTA's) that holds position ctx - 1 taken from qkv.
  const int newest_chunk = kFused && from_qkv && last == task.num_chunks ? task.num_chunks - 1 : -1;
  if constexpr (kFused) {
    FusedRopeKvRows<T, kD, kG>(a, r, task, newest_chunk >= 0, newest_chunk >= 0 && blockIdx.x % a.head_slices == 0,
                               slot);
    __syncthreads();  // fs.q, fs.k, fs.v visible
  }

  DecodeRun<kD, kG> run;
#pragma unroll
  for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
    run.acc[i] = 0.f;
    run.l[i] = 0.f;
    run.m[i] = -INFINITY;
  }
  QFragments<kD> qa;  // the slice's q as MMA A fragments, for every chunk
  if constexpr (kFused) {
    LoadRotatedQ<kD, kG>(task, qa);
  } else {
    LoadQ<T, kD, kG>(a, task, qa);  // in flight while the copies land
  }
  for (int chunk = first; chunk < last; ++chunk) {
    const int n = min(kChunk, task.ctx - chunk * kChunk);
    if (chunk > first) {
      // Later chunks (contexts > 1024: several chunks per split) after the wait, all rows,
      // once the previous chunk's reads of the shared storage (chunk_sum, m, l) are done.
      __syncthreads();
      IssueChunkKv<T, kD, kG>(a, table, task.kv_head, chunk * kChunk, n,
                              kFused && chunk == newest_chunk ? task.ctx - 1 - chunk * kChunk : kChunk, sm, 0);
      CpAsyncCommit();
    }
    // V rows past the context: zero (P is 0 there, and 0 times a stale NaN would not be).
    for (int i = n * kPieces + threadIdx.x; i < kChunk * kPieces; i += kDecodeThreads) {
      sm.buf[0].kv.v[i / kPieces][i % kPieces] = make_uint4(0, 0, 0, 0);
    }
    if constexpr (kFused) {
      if (chunk == newest_chunk && threadIdx.x < 2 * kPieces) {  // the newest row from qkv (fs)
        const int row = task.ctx - 1 - chunk * kChunk, piece = threadIdx.x % kPieces;
        auto& fs = FusedSmem<kD, kG>();
        if (threadIdx.x < kPieces) {
          sm.buf[0].kv.k[row][DecodeSmem<kD, kG>::Swizzle(row, piece)] = fs.k[piece];
        } else {
          sm.buf[0].kv.v[row][DecodeSmem<kD, kG>::Swizzle(row, piece)] = fs.v[piece];
        }
      }
    }
    CpAsyncWaitAll();
    __syncthreads();  // every thread's copies are visible
    DecodeChunk<T, kD, kG>(a, task, chunk, qa, sm, run, 0);
  }

  const int num_heads = a.num_heads;
#pragma unroll
  for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
    const int o = threadIdx.x + i * kDecodeThreads;
    if (o >= task.ng * kD) continue;
    const int h = task.h0 + o / kD, d = o % kD;
    if (task.num_chunks == 1) {
      T* out = static_cast<T*>(a.out) + static_cast<int64_t>(task.q_row) * num_heads * kD;
      out[h * kD + d] = Act<T>::FromFloat(run.acc[i] / run.l[i]);
    } else if (!kCluster) {
      const int64_t cell = (static_cast<int64_t>(task.seq) * num_heads + h) * a.ws_splits + split;
      a.ws_acc[cell * kD + d] = run.acc[i];
      if (d == 0) {
        a.ws_ml[cell * 2] = run.m[i];
        a.ws_ml[cell * 2 + 1] = run.l[i];
      }
    }
  }
  if constexpr (kCluster) {
    float* part = reinterpret_cast<float*>(&sm.buf[0]);  // [kG][kD] accumulators, then [kG] (max, sum)
    static_assert(sizeof(sm.buf[0]) >= sizeof(float) * kG * (kD + 2), "the partials must fit the K/V storage");
    if (task.num_chunks > 1) {
      __syncthreads();  // the chunk loop's last reads of sm.buf are done
#pragma unroll
      for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
        const int o = threadIdx.x + i * kDecodeThreads;
        if (o >= task.ng * kD) continue;
        part[o] = run.acc[i];
        if (o % kD == 0) {
          part[kG * kD + 2 * (o / kD)] = run.m[i];
          part[kG * kD + 2 * (o / kD) + 1] = run.l[i];
        }
      }
    }
    ClusterSync();  // every split's partials are visible to CTA 0 of the cluster
    if (split == 0 && task.num_chunks > 1) {
      MergeSplitsCluster<T, kD, kG>(a, task.q_row, task.h0, task.ng, plan.num_splits, part, MergeScratch(sm));
    }
    ClusterSyncRelaxed();  // (its remote reads have completed: their values are in the outputs)
    return;
  }
  if (task.num_chunks > 1 && a.split_counters != nullptr) MergeIfLastSplit<T, kD, kG>(a, task, plan.num_splits, 1, sm);
}

// ---- Decode in columns of splits (DecodeColumnsRopeKernel) ------------------------------------
// With many (sequence, kv head) pairs, one CTA per split (DecodeChunkRopeKernel) leaves each CTA
// one chunk to copy and then compute, with nothing to overlap them, and the grid's columns past
// a sequence's splits (the graph's context bound) hold SM slots while they wait. Here the grid
// has `columns` = gridDim.y <= ws_splits CTAs per (kv head slice, sequence), chosen by the host
// from the batch so that the grid is about one wave, and CTA column y computes the splits y,
// y + columns, ... of its sequence one after the other: each split exactly as DecodeChunkCta
// computes it (the same chunks, the same DecodeChunk, its partials stored to the same workspace
// cell, merged by MergeSplits in split order), so `out` is bitwise the same for every column
// count (batch invariance holds: the split plan is still a function of the context length
// only). The work items (the chunks of the column's splits, in order) are double-buffered: the
// next item's K/V rows are copied into the other buffer while the current one is computed.
// Shared memory: DecodeSmem with two buffers (65 KB at D = 128: dynamic), plus FusedRopeSmem.
// PDL and the fused RoPE + KV write as in DecodeChunkCta (kFused): before the wait, the first
// item's rows except position ctx - 1; the CTA holding the sequence's last split takes that row
// from qkv (or, with an invalid slot, from the cache after the wait).
// The position of a column's work: split `split`, chunk `chunk` (< split_end, the split's end).
struct ColumnCursor {
  int split, chunk, split_end;
  __device__ __forceinline__ ColumnCursor(int s, const SplitPlan& plan, int num_chunks)
      : split(s), chunk(s * plan.per_split), split_end(min(num_chunks, (s + 1) * plan.per_split)) {}
  // The item after this one: the next chunk of the split, else the first of split + columns.
  __device__ __forceinline__ ColumnCursor Next(int columns, const SplitPlan& plan, int num_chunks) const {
    if (chunk + 1 < split_end) {
      ColumnCursor c = *this;
      ++c.chunk;
      return c;
    }
    return ColumnCursor(split + columns, plan, num_chunks);
  }
};

// A finished split's running outputs: `out` directly when the sequence has one chunk (then it is
// the only split), else the workspace cell (sequence, head, split), or with `local` (the CTA
// computes every split of its slice: LocalMergePitch) the split's row of the CTA's own shared
// memory, [kG][kD] accumulators then [kG] (max, sum) pairs, as the cluster merge keeps them.
// Then the run restarts.
template <typename T, int kD, int kG>
__device__ __forceinline__ void StoreSplit(const AttnArgs& a, const DecodeTask& task, int split,
                                           DecodeRun<kD, kG>& run, float* local = nullptr) {
#pragma unroll
  for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
    const int o = threadIdx.x + i * kDecodeThreads;
    if (o < task.ng * kD) {
      const int h = task.h0 + o / kD, d = o % kD;
      if (local != nullptr && task.num_chunks > 1) {
        local[o] = run.acc[i];
        if (d == 0) {
          local[kG * kD + 2 * (o / kD)] = run.m[i];
          local[kG * kD + 2 * (o / kD) + 1] = run.l[i];
        }
      } else if (task.num_chunks == 1) {
        T* out = static_cast<T*>(a.out) + static_cast<int64_t>(task.q_row) * a.num_heads * kD;
        out[h * kD + d] = Act<T>::FromFloat(run.acc[i] / run.l[i]);
      } else {
        const int64_t cell = (static_cast<int64_t>(task.seq) * a.num_heads + h) * a.ws_splits + split;
        a.ws_acc[cell * kD + d] = run.acc[i];
        if (d == 0) {
          a.ws_ml[cell * 2] = run.m[i];
          a.ws_ml[cell * 2 + 1] = run.l[i];
        }
      }
    }
    run.acc[i] = 0.f;
    run.l[i] = 0.f;
    run.m[i] = -INFINITY;
  }
}

// The V rows past the item's n positions zeroed (P is 0 there, and 0 times a stale NaN would
// not be), and the newest position's row put in from qkv (fs) when the item is newest_chunk.
template <int kD, int kG>
__device__ __forceinline__ void PrepareColumnItem(const DecodeTask& task, int chunk, int newest_chunk,
                                                  typename DecodeSmem<kD, kG, 2>::Store& buf) {
  constexpr int kPieces = kD / 8;
  const int n = min(kChunk, task.ctx - chunk * kChunk);
  for (int e = n * kPieces + threadIdx.x; e < kChunk * kPieces; e += kDecodeThreads) {
    buf.kv.v[e / kPieces][e % kPieces] = make_uint4(0, 0, 0, 0);
  }
  if (chunk == newest_chunk && threadIdx.x < 2 * kPieces) {
    const int row = task.ctx - 1 - chunk * kChunk, piece = threadIdx.x % kPieces;
    auto& fs = FusedSmem<kD, kG>();
    if (threadIdx.x < kPieces) {
      buf.kv.k[row][DecodeSmem<kD, kG>::Swizzle(row, piece)] = fs.k[piece];
    } else {
      buf.kv.v[row][DecodeSmem<kD, kG>::Swizzle(row, piece)] = fs.v[piece];
    }
  }
}

// The floats per split of the local merge's partials ([kG][kD] accumulators, [kG] (max, sum)
// pairs), rounded up to whole float4s (MergeSplitsWith loads the accumulators as float4).
template <int kD, int kG>
constexpr int LocalMergePitch() {
  return (kG * kD + 2 * kG + 3) / 4 * 4;
}

// MergeSplitsWith over the CTA's own partials (`local`: split c at c * LocalMergePitch floats),
// once every thread's StoreSplit has passed a barrier: MergeSplits' arithmetic in the same order,
// so the same bits, without the workspace's stores, fence, arrival atomic and L2 reads.
template <typename T, int kD, int kG, int kBufs>
__device__ __forceinline__ void MergeLocalSplits(const AttnArgs& a, const DecodeTask& task, int num_splits,
                                                 const float* local, DecodeSmem<kD, kG, kBufs>& sm) {
  constexpr int kPitch = LocalMergePitch<kD, kG>();
  MergeSplitsWith<T, kD, kG>(
      a, task.q_row, task.h0, task.ng, num_splits, MergeScratch(sm),
      [&](int g, int q4, int c) { return *reinterpret_cast<const float4*>(local + c * kPitch + g * kD + 4 * q4); },
      [&](int g, int c) { return *reinterpret_cast<const float2*>(local + c * kPitch + kG * kD + 2 * g); });
}

// prefetch: the items whose copies are issued before the grid dependency wait, 1 or 2 (both
// buffers; the next item is then issued once an item is computed, two ahead).
// local: null, or (a one-column launch: this CTA computes every split of its slice) the
// partials' region of shared memory, ws_splits x LocalMergePitch floats, where StoreSplit keeps
// each split's partials and MergeLocalSplits merges them (the workspace is not used then).
template <typename T, int kD, int kG>
__device__ __forceinline__ void DecodeColumnCta(const AttnArgs& a, const RopeKvArgs& r, int prefetch,
                                                DecodeSmem<kD, kG, 2>& sm, float* local) {
  LaunchDependents();  // first, as PdlPrologue (kernels/pdl.cuh says why that is safe)
  DecodeTask task;
  task.seq = blockIdx.z;
  task.q_row = a.query_start[task.seq];
  task.ctx = a.context_len[task.seq];
  task.num_chunks = (task.ctx + kChunk - 1) / kChunk;
  const SplitPlan plan = PlanSplits(max(task.num_chunks, 1));
  const int column = blockIdx.y, columns = gridDim.y;
  // Nothing to do (not a decode sequence, an empty context, a column past the splits): wait
  // before exiting, as DecodeChunkCta says why.
  if (a.query_start[task.seq + 1] - task.q_row != 1 || task.num_chunks <= 0 || column >= plan.num_splits) {
    GridDependencyWait();
    return;
  }
  task.kv_head = blockIdx.x / a.head_slices;
  const int g0 = (blockIdx.x % a.head_slices) * kG;
  task.ng = min(kG, a.group - g0);
  task.h0 = task.kv_head * a.group + g0;
  const int32_t* table = a.block_tables + static_cast<int64_t>(task.seq) * a.max_blocks_per_seq;
  const int last_chunk = task.num_chunks - 1;  // holds position ctx - 1
  const auto issue = [&](int chunk, int skip, int b) {
    IssueChunkKv<T, kD, kG>(a, table, task.kv_head, chunk * kChunk, min(kChunk, task.ctx - chunk * kChunk), skip,
                            sm, b);
    CpAsyncCommit();  // one group per item (possibly empty): the waits below count them
  };

  // Before the wait: the first `prefetch` items' rows, except position ctx - 1 (written this
  // step: from qkv after the wait, or from the cache after the wait with an invalid slot).
  ColumnCursor item(column, plan, task.num_chunks);
  ColumnCursor ahead = item;  // the next item to issue
  int issued = 0;
  int newest_buf = -1;  // the buffer of a pre-issued item holding position ctx - 1
  for (; issued < prefetch && ahead.split < plan.num_splits; ++issued) {
    if (ahead.chunk == last_chunk) newest_buf = issued;
    issue(ahead.chunk, task.ctx - 1 - ahead.chunk * kChunk, issued);
    ahead = ahead.Next(columns, plan, task.num_chunks);
  }
  constexpr int kPieces = kD / 8;
  const int slot = r.slots[task.q_row];
  const bool from_qkv = slot >= 0 && slot < r.num_slots;
  const bool copies_newest = newest_buf >= 0 && threadIdx.x < 2 * kPieces && !from_qkv;  // K pieces, then V
  size_t newest_off = 0;
  if (copies_newest) {
    newest_off = CacheOffset(table, task.ctx - 1, a.bs_log2, a.num_kv_heads, task.kv_head, kD) +
                 (threadIdx.x % kPieces) * 8;
  }
  FusedRopeSinCos<kD, kG>(r, task);
  __syncthreads();  // cos/sin visible to FusedRopeKvRows

  GridDependencyWait();

  if (copies_newest) {
    const int row = task.ctx - 1 - last_chunk * kChunk;
    const int sp = DecodeSmem<kD, kG>::Swizzle(row, threadIdx.x % kPieces);
    if (threadIdx.x < kPieces) {
      CpAsync16(&sm.buf[newest_buf].kv.k[row][sp], static_cast<const T*>(a.k_cache) + newest_off);
    } else {
      CpAsync16(&sm.buf[newest_buf].kv.v[row][sp], static_cast<const T*>(a.v_cache) + newest_off);
    }
  }
  CpAsyncCommit();
  // The sequence's last chunk, when this column computes it and its row ctx - 1 comes from qkv.
  const bool holds_last_split = (plan.num_splits - 1) % columns == column;
  const int newest_chunk = from_qkv && holds_last_split ? last_chunk : -1;
  FusedRopeKvRows<T, kD, kG>(a, r, task, newest_chunk >= 0, newest_chunk >= 0 && blockIdx.x % a.head_slices == 0,
                             slot);
  __syncthreads();  // fs.q, fs.k, fs.v visible
  trace::Mark(0);  // (trace builds: the times after the wait, tools/trace_timeline.py --marks)

  DecodeRun<kD, kG> run;
#pragma unroll
  for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
    run.acc[i] = 0.f;
    run.l[i] = 0.f;
    run.m[i] = -INFINITY;
  }
  QFragments<kD> qa;
  LoadRotatedQ<kD, kG>(task, qa);
  // Item i sits in buffer i % 2. With one item prefetched, item i + 1 is issued at the top of
  // iteration i (into the buffer item i - 1 used); with two, item i + 2 once item i is computed.
  for (int i = 0;; ++i) {
    const int b = i & 1;
    if (prefetch == 1) {
      if (i > 0) __syncthreads();  // item i - 1 (buffer b ^ 1) merged by every thread
      if (ahead.split < plan.num_splits) {
        issue(ahead.chunk, ahead.chunk == newest_chunk ? task.ctx - 1 - ahead.chunk * kChunk : kChunk, b ^ 1);
        ahead = ahead.Next(columns, plan, task.num_chunks);
      } else {
        CpAsyncCommit();  // an empty group keeps "all but the last" meaning item i's
      }
    }
    PrepareColumnItem<kD, kG>(task, item.chunk, newest_chunk, sm.buf[b]);
    // Item i's copies: all groups but the last (item i + 1's); at i = 0 also the newest row's,
    // committed after the prefetched items: all.
    if (i == 0 && prefetch == 2) {
      CpAsyncWaitAll();
    } else {
      CpAsyncWaitPrior1();
    }
    __syncthreads();  // every thread's copies and zeros are visible
    trace::Mark(2);  // (the last item's)
    DecodeChunk<T, kD, kG>(a, task, item.chunk, qa, sm, run, b);
    if (i == 0) trace::Mark(1);
    if (item.chunk + 1 == item.split_end) {
      StoreSplit<T, kD, kG>(a, task, item.split, run,
                            local != nullptr ? local + item.split * LocalMergePitch<kD, kG>() : nullptr);
    }
    const ColumnCursor next = item.Next(columns, plan, task.num_chunks);
    if (next.split >= plan.num_splits) break;
    if (prefetch == 2) {
      __syncthreads();  // item i (buffer b) merged by every thread
      if (ahead.split < plan.num_splits) {
        issue(ahead.chunk, ahead.chunk == newest_chunk ? task.ctx - 1 - ahead.chunk * kChunk : kChunk, b);
        ahead = ahead.Next(columns, plan, task.num_chunks);
      } else {
        CpAsyncCommit();  // an empty group keeps "all but the last" meaning item i + 1's
      }
    }
    item = next;
  }
  const int arrivals = (plan.num_splits - 1 - column) / columns + 1;  // the splits this CTA computed
  trace::Mark(3);
  if (task.num_chunks > 1 && local != nullptr) {
    __syncthreads();  // every split's partials stored, and the last item's buffers read
    MergeLocalSplits<T, kD, kG>(a, task, plan.num_splits, local, sm);
  } else if (task.num_chunks > 1 && a.split_counters != nullptr) {
    MergeIfLastSplit<T, kD, kG>(a, task, plan.num_splits, arrivals, sm);
  }
}

template <typename T, int kD, int kG>
__global__ void __launch_bounds__(kDecodeThreads) DecodeChunkKernel(AttnArgs a) {
  const trace::Scope trace_scope(trace::kDecodeAttention, static_cast<int32_t>(gridDim.z));
  __shared__ DecodeSmem<kD, kG> sm;
  DecodeChunkCta<T, kD, kG, false>(a, RopeKvArgs{}, sm);
}

// The same with the fused RoPE + KV write (decode-only launches with a FusedRopeKv).
template <typename T, int kD, int kG>
__global__ void __launch_bounds__(kDecodeThreads) DecodeChunkRopeKernel(AttnArgs a, RopeKvArgs r) {
  const trace::Scope trace_scope(trace::kDecodeAttention, static_cast<int32_t>(gridDim.z));
  __shared__ DecodeSmem<kD, kG> sm;
  DecodeChunkCta<T, kD, kG, true>(a, r, sm);
}

// The same, the splits of a (kv head slice, sequence) in one cluster that merges them over
// distributed shared memory (launched with a cluster dimension of (1, ws_splits, 1)).
template <typename T, int kD, int kG>
__global__ void __launch_bounds__(kDecodeThreads) DecodeChunkRopeClusterKernel(AttnArgs a, RopeKvArgs r) {
  const trace::Scope trace_scope(trace::kDecodeAttention, static_cast<int32_t>(gridDim.z));
  __shared__ DecodeSmem<kD, kG> sm;
  DecodeChunkCta<T, kD, kG, true, true>(a, r, sm);
}

// Decode in columns of splits (DecodeColumnCta), fused RoPE + KV write; grid (kv heads x head
// slices, columns, sequences), DecodeSmem<kD, kG, 2> in dynamic shared memory.
template <typename T, int kD, int kG>
__global__ void __launch_bounds__(kDecodeThreads)
    DecodeColumnsRopeKernel(AttnArgs a, RopeKvArgs r, int prefetch, bool local_merge) {
  const trace::Scope trace_scope(trace::kDecodeAttention, static_cast<int32_t>(gridDim.z), static_cast<int32_t>(gridDim.y));
  extern __shared__ uint4 dynamic_smem[];
  static_assert(sizeof(DecodeSmem<kD, kG, 2>) % 16 == 0, "the local partials start 16-byte aligned");
  float* local = local_merge ? reinterpret_cast<float*>(reinterpret_cast<char*>(dynamic_smem) +
                                                        sizeof(DecodeSmem<kD, kG, 2>))
                             : nullptr;
  DecodeColumnCta<T, kD, kG>(a, r, prefetch, *reinterpret_cast<DecodeSmem<kD, kG, 2>*>(dynamic_smem), local);
}

// Decode sequences of more than one chunk, where the split CTAs do not merge (no counters):
// merge the splits' partials in split order. Grid (num_heads, num_seqs), kDecodeThreads threads.
template <typename T, int kD>
__global__ void __launch_bounds__(kDecodeThreads) CombineKernel(AttnArgs a) {
  __shared__ float s_ml[2 * kMaxSplits];
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  const int seq = blockIdx.y, h = blockIdx.x;
  const int q_row = a.query_start[seq];
  if (a.query_start[seq + 1] - q_row != 1) return;
  const int num_chunks = (a.context_len[seq] + kChunk - 1) / kChunk;
  if (num_chunks <= 1) return;  // written by DecodeChunkKernel
  MergeSplits<T, kD, 1>(a, seq, q_row, h, 1, PlanSplits(num_chunks).num_splits, s_ml);
}

// ---- Launch helpers (decode) ---------------------------------------------------------------
// Whether a fused decode launch merges its splits in a cluster (DecodeChunkRopeClusterKernel):
// by default when the splits merge in the kernel (split counters), there are several, the
// launch has a single sequence (batches of 4 to 32 were slower with clusters: 0.2-0.7 ms per 8B
// step, H100), and a cluster of ws_splits CTAs fits the device. FLUTE_ATTENTION_COMBINE=last
// keeps the workspace merge by the last-arriving split (A/B runs); =kernel selects CombineKernel.
constexpr int kMaxClusterMergeSeqs = 1;

template <typename T, int kD, int kG>
bool UseClusterMerge(const AttnArgs& a, const RopeKvArgs* rope, int num_seqs) {
  if (rope == nullptr || a.split_counters == nullptr || a.ws_splits < 2 || num_seqs > kMaxClusterMergeSeqs) {
    return false;
  }
  const char* v = std::getenv("FLUTE_ATTENTION_COMBINE");
  if (v != nullptr && std::strcmp(v, "last") == 0) return false;
  // Clusters of more than 8 CTAs are "non-portable" (the H100 allows 16); checked once per
  // (device, cluster size): the attribute and the occupancy query.
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  static std::mutex mu;
  static std::map<std::pair<int, int>, bool>* fits = new std::map<std::pair<int, int>, bool>();
  const std::pair<int, int> key{device, a.ws_splits};
  std::lock_guard<std::mutex> lock(mu);
  const auto it = fits->find(key);
  if (it != fits->end()) return it->second;
  auto kernel = DecodeChunkRopeClusterKernel<T, kD, kG>;
  bool ok = a.ws_splits <= 8 ||
            cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
  if (ok) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(1, a.ws_splits, 1);
    cfg.blockDim = dim3(kDecodeThreads);
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = 1;
    attr.val.clusterDim.y = a.ws_splits;
    attr.val.clusterDim.z = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    ok = cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters >= 1;
  }
  cudaGetLastError();  // a refused attribute or query is not an error of the launch
  fits->emplace(key, ok);
  return ok;
}

// Decode in columns (DecodeColumnsRopeKernel) for fused launches: the number of CTA columns
// per (kv head slice, sequence), or 0 for one CTA per split (DecodeChunkRopeKernel).
// FLUTE_ATTENTION_COLUMNS (read at every launch, host side): "off" selects 0, a number N forces
// N columns (at most ws_splits; tests and A/B runs). FLUTE_ATTENTION_PREFETCH=1 copies one item
// before the PDL wait instead of two (A/B: two were 0.01-0.07 ms faster per step at batches 16-32). Unset: about one wave of the columns
// kernel, its resident CTAs per SM (the occupancy query, once per device) times the SMs divided
// by the (kv head slice, sequence) pairs; 0 when that is more than kMaxAutoColumns or at least
// ws_splits (each CTA would compute one split anyway).
// H100, 8B decode at 512-token contexts (bench/results/ab-2026-11-26-h100/session14/): batch 24
// (2 columns) -0.25 to -0.3 ms per step, batch 32 (1 column) -0.15 to -0.25 (W4), -0.3 (bf16); batch 16
// (3 columns) W4 +0.03 ms (the attention 24 -> 16-19 us after its release, but its copies ahead
// of the wait slow the qkv projection as much), bf16 +1.2 ms: with the columns kernel in the
// step, the bf16 engine's dense GEMVs ran 20-35 % slower (gate/up 84 -> 110 us), also at one
// column, so the cause is its shared-memory configuration, not its grid: it leaves the SMs at the
// largest carveout, and the dense GEMVs then ran with 28 KB of L1. With the GEMVs asking for
// their L1 where the step runs this kernel (DenseGemvParams::prefer_l1, session 15): batch 16
// (3 columns) W4 3.42-3.44 -> 3.35-3.36 ms, bf16 6.89-6.93 -> 6.91-6.96. Hence at most 3.
constexpr int64_t kMaxAutoColumns = 3;
struct ColumnsFit {
  bool ok = false;
  int slots = 0;  // resident CTAs of the columns kernel on the device
};

template <typename T, int kD, int kG>
ColumnsFit ColumnsKernelFit() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return {};
  static std::mutex mu;
  static std::map<int, ColumnsFit>* fits = new std::map<int, ColumnsFit>();
  std::lock_guard<std::mutex> lock(mu);
  const auto it = fits->find(device);
  if (it != fits->end()) return it->second;
  auto kernel = DecodeColumnsRopeKernel<T, kD, kG>;
  constexpr int smem = sizeof(DecodeSmem<kD, kG, 2>);
  ColumnsFit fit;
  int per_sm = 0, sms = 0;
  // The largest shared-memory carveout: otherwise the driver may keep a smaller one that the
  // previous kernel left (the bf16 engine's dense GEMMs), and fewer CTAs fit an SM.
  fit.ok = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) == cudaSuccess &&
           cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                cudaSharedmemCarveoutMaxShared) == cudaSuccess &&
           cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kDecodeThreads, smem) == cudaSuccess &&
           cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess && per_sm >= 1;
  fit.slots = per_sm * sms;
  cudaGetLastError();  // a refused attribute or query is not an error of the launch
  fits->emplace(device, fit);
  return fit;
}

template <typename T, int kD, int kG>
int DecodeColumns(int ws_splits, int num_kv_heads, int head_slices, int num_seqs) {
  const char* env = std::getenv("FLUTE_ATTENTION_COLUMNS");
  if (env != nullptr && std::strcmp(env, "off") == 0) return 0;
  if (ws_splits < 2) return 0;
  const ColumnsFit fit = ColumnsKernelFit<T, kD, kG>();
  if (!fit.ok) return 0;
  const int forced = env != nullptr ? std::atoi(env) : 0;
  if (forced > 0) return std::min(forced, ws_splits);
  const int64_t pairs = static_cast<int64_t>(num_seqs) * num_kv_heads * head_slices;
  const int64_t columns = std::max<int64_t>(fit.slots / pairs, 1);
  return columns > kMaxAutoColumns || columns >= ws_splits ? 0 : static_cast<int>(columns);
}
template <typename T, int kD, int kG>
int DecodeColumns(const AttnArgs& a, int num_seqs) {
  return DecodeColumns<T, kD, kG>(a.ws_splits, a.num_kv_heads, a.head_slices, num_seqs);
}

// Shared memory of a one-column launch with the local merge (DecodeColumnCta's `local`): the
// columns kernel's plus ws_splits rows of partials; 0 where it is off or would cost a wave.
// In a one-column launch each CTA computes all of its slice's splits, so their merge needs no
// other CTA: keeping the partials in shared memory removes the end of every CTA's chain (the
// workspace stores, the arrival atomic's round trip and the L2 reads of the partials: ~3 us
// from the last item to the exit at the 8B bf16 decode step at batch 32, H100 session 19).
// Only where the extra shared memory keeps the grid in one wave of resident CTAs.
// FLUTE_ATTENTION_LOCAL_MERGE=0 turns it off (tests, A/B runs: the bits are the same).
template <typename T, int kD, int kG>
size_t LocalMergeSmem(int ws_splits, int64_t ctas) {
  const char* env = std::getenv("FLUTE_ATTENTION_LOCAL_MERGE");
  if (env != nullptr && std::strcmp(env, "0") == 0) return 0;
  const size_t smem = sizeof(DecodeSmem<kD, kG, 2>) + sizeof(float) * ws_splits * LocalMergePitch<kD, kG>();
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  static std::mutex mu;
  static std::map<std::pair<int, size_t>, int>* slots_of = new std::map<std::pair<int, size_t>, int>();
  // The kernel's dynamic shared-memory limit per device: only ever raised. (One attribute serves
  // every size: lowering it for a smaller launch would make the next launch of a larger size,
  // or the replay of a graph that holds one, fail with "invalid argument".)
  static std::map<int, size_t>* limit_of = new std::map<int, size_t>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = slots_of->find({device, smem});
  if (it == slots_of->end()) {
    auto kernel = DecodeColumnsRopeKernel<T, kD, kG>;
    size_t& limit = (*limit_of)[device];
    bool ok = true;
    if (smem > limit) {
      ok = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) ==
           cudaSuccess;
      if (ok) limit = smem;
    }
    int per_sm = 0, sms = 0;
    ok = ok && cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kDecodeThreads, smem) == cudaSuccess &&
         cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess;
    cudaGetLastError();  // a refused attribute or query is not an error of the launch
    it = slots_of->emplace(std::make_pair(device, smem), ok ? per_sm * sms : 0).first;
  }
  return it->second >= ctas ? smem : 0;
}

template <typename T, int kD, int kG>
cudaError_t LaunchDecode(const AttnArgs& a, const RopeKvArgs* rope, int num_seqs, cudaStream_t stream) {
  const dim3 grid(a.num_kv_heads * a.head_slices, a.ws_splits, num_seqs);
  if (UseClusterMerge<T, kD, kG>(a, rope, num_seqs)) {
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    attr[1].id = cudaLaunchAttributeClusterDimension;
    attr[1].val.clusterDim.x = 1;
    attr[1].val.clusterDim.y = a.ws_splits;
    attr[1].val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(kDecodeThreads);
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 2;
    cudaLaunchKernelEx(&cfg, DecodeChunkRopeClusterKernel<T, kD, kG>, a, *rope);
    return cudaGetLastError();
  }
  const int columns = rope != nullptr ? DecodeColumns<T, kD, kG>(a, num_seqs) : 0;
  if (columns > 0) {
    const char* prefetch_env = std::getenv("FLUTE_ATTENTION_PREFETCH");
    const int prefetch = prefetch_env != nullptr && std::strcmp(prefetch_env, "1") == 0 ? 1 : 2;
    const size_t local_smem =
        columns == 1 ? LocalMergeSmem<T, kD, kG>(a.ws_splits, static_cast<int64_t>(grid.x) * grid.z) : 0;
    LaunchWithPdl(DecodeColumnsRopeKernel<T, kD, kG>, dim3(grid.x, columns, grid.z), kDecodeThreads,
                  local_smem > 0 ? local_smem : sizeof(DecodeSmem<kD, kG, 2>), stream, a, *rope, prefetch,
                  local_smem > 0);
  } else if (rope != nullptr) {
    LaunchWithPdl(DecodeChunkRopeKernel<T, kD, kG>, grid, kDecodeThreads, 0, stream, a, *rope);
  } else {
    LaunchWithPdl(DecodeChunkKernel<T, kD, kG>, grid, kDecodeThreads, 0, stream, a);
  }
  return cudaGetLastError();
}

}  // namespace

template <typename T, int kD>
cudaError_t LaunchDecodeForGroup(const AttnArgs& a, const RopeKvArgs* rope, int num_seqs, cudaStream_t stream) {
  // The smallest instance that holds the group (or a slice of kMaxGroup heads).
  const int g = a.group >= kMaxGroup ? kMaxGroup : a.group;
  if (g <= 1) return LaunchDecode<T, kD, 1>(a, rope, num_seqs, stream);
  if (g <= 2) return LaunchDecode<T, kD, 2>(a, rope, num_seqs, stream);
  if (g <= 4) return LaunchDecode<T, kD, 4>(a, rope, num_seqs, stream);
  return LaunchDecode<T, kD, 8>(a, rope, num_seqs, stream);
}

// CombineKernel after the decode kernel (LaunchAll, attention.cu: splits without counters).
template <typename T, int kD>
cudaError_t LaunchCombine(const AttnArgs& a, int num_seqs, cudaStream_t stream) {
  LaunchWithPdl(CombineKernel<T, kD>, dim3(a.num_heads, num_seqs), kDecodeThreads, 0, stream, a);
  return cudaGetLastError();
}

// DecodeColumns of the instance LaunchDecodeForGroup picks (fused launches only).
template <typename T, int kD>
int DecodeColumnsForGroup(int group, int ws_splits, int num_kv_heads, int num_seqs) {
  const int head_slices = (group + kMaxGroup - 1) / kMaxGroup;
  const int g = group >= kMaxGroup ? kMaxGroup : group;
  if (g <= 1) return DecodeColumns<T, kD, 1>(ws_splits, num_kv_heads, head_slices, num_seqs);
  if (g <= 2) return DecodeColumns<T, kD, 2>(ws_splits, num_kv_heads, head_slices, num_seqs);
  if (g <= 4) return DecodeColumns<T, kD, 4>(ws_splits, num_kv_heads, head_slices, num_seqs);
  return DecodeColumns<T, kD, 8>(ws_splits, num_kv_heads, head_slices, num_seqs);
}

// The instances attention.cu calls (attention_launch.h).
template cudaError_t LaunchDecodeForGroup<__half, 64>(const AttnArgs&, const RopeKvArgs*, int, cudaStream_t);
template cudaError_t LaunchDecodeForGroup<__half, 128>(const AttnArgs&, const RopeKvArgs*, int, cudaStream_t);
template cudaError_t LaunchDecodeForGroup<__nv_bfloat16, 64>(const AttnArgs&, const RopeKvArgs*, int, cudaStream_t);
template cudaError_t LaunchDecodeForGroup<__nv_bfloat16, 128>(const AttnArgs&, const RopeKvArgs*, int, cudaStream_t);
template cudaError_t LaunchCombine<__half, 64>(const AttnArgs&, int, cudaStream_t);
template cudaError_t LaunchCombine<__half, 128>(const AttnArgs&, int, cudaStream_t);
template cudaError_t LaunchCombine<__nv_bfloat16, 64>(const AttnArgs&, int, cudaStream_t);
template cudaError_t LaunchCombine<__nv_bfloat16, 128>(const AttnArgs&, int, cudaStream_t);
template int DecodeColumnsForGroup<__half, 64>(int, int, int, int);
template int DecodeColumnsForGroup<__half, 128>(int, int, int, int);
template int DecodeColumnsForGroup<__nv_bfloat16, 64>(int, int, int, int);
template int DecodeColumnsForGroup<__nv_bfloat16, 128>(int, int, int, int);

}  // namespace flute::gpu::attn_detail

// The decode kernels are the attention's traced ones: this file's copy of the trace buffer.
namespace flute::trace {
FLUTE_TRACE_SETTER(SetBufferAttention)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
