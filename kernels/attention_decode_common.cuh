// Paged GQA attention for sm_90 (H100), decode rows: what the decode kernels of
// attention_decode.cu (one CTA per split, clusters, CombineKernel) and attention_decode_columns.cu
// (CTA columns) share: their shared memory, the chunk loads, the fused RoPE, the chunk on the tensor
// cores (DecodeChunk) and the split merges. Included only by those two files; everything is in an
// anonymous namespace, so each file has its own copy (as kernels/lut_gemm_device.cuh). The entry
// points and the KV-cache write are in attention.cu (which lists the files), the prefill kernels
// in attention_prefill.cu, what all the attention's files share in attention_common.cuh. The kernels:
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
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/arrival.cuh"
#include "kernels/attention_common.cuh"
#include "kernels/cluster.cuh"
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

}  // namespace
}  // namespace flute::gpu::attn_detail
