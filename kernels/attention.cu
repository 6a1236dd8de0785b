// Paged KV cache write and paged GQA attention for sm_90 (H100): see attention.h for the
// contract. The kernels:
//
//  - KvCacheWriteKernel: one thread per 16-byte piece of a token's k or v heads.
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
//  - The same for many (sequence, kv head) pairs (DecodeColumnsRopeKernel, 8B from batch 24): one
//    or two CTA columns per pair instead of one CTA per split; a column computes the splits
//    column, column + columns, ... in turn, each exactly as above (bitwise the same `out`), its
//    chunks double-buffered (the first two copied before the PDL wait). At one column (8B from
//    batch ~26) a CTA computes all of its slice's splits, so it keeps their partials in its own
//    shared memory and merges them itself (MergeLocalSplits: MergeSplits' arithmetic, the same
//    bits) instead of through the workspace, the arrival atomic and L2 (LocalMergeSmem). See
//    DecodeColumnCta.
//  - Prefill (query_len > 1): PrefillMmaKernel, FlashAttention-2 style tiles of 64 query rows
//    (16 per warp) x 64 keys of one query head on mma.sync.m16n8k16 tensor cores, online
//    softmax in fp32 registers, causal masking by position. PrefillKernel is a plain SIMT
//    version of the same tiling (fp32 shared-memory tiles), kept as a cross-check: the
//    environment variable FLUTE_ATTENTION_PREFILL=simt selects it.
//
// All softmax arithmetic is fp32 in the log2 domain: q is pre-multiplied by scale * log2(e)
// and exp2f is used throughout.
#include "kernels/attention.h"

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

#include "absl/strings/str_cat.h"
#include "kernels/arrival.cuh"
#include "kernels/cluster.cuh"
#include "kernels/pdl.cuh"
#include "kernels/rope_math.cuh"

namespace flute::gpu {
namespace {

constexpr int kChunk = 64;       // decode: positions per chunk (fixed: batch invariance)
constexpr int kMaxSplits = 16;   // decode: CTAs (and workspace partials) per sequence and head
constexpr int kMaxGroup = 8;     // decode: query heads served per CTA (larger groups: slices)
constexpr int kDecodeThreads = 128;
constexpr int kTileQ = 64;       // prefill: query rows per CTA
constexpr int kTileK = 64;       // prefill: keys per tile
constexpr int kPrefillThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

// ---- 16-bit helpers ------------------------------------------------------------------------
template <typename T> struct Act;
template <> struct Act<__half> {
  static __device__ __forceinline__ float2 ToFloat2(uint32_t w) {
    return __half22float2(*reinterpret_cast<const __half2*>(&w));
  }
  static __device__ __forceinline__ __half FromFloat(float f) { return __float2half_rn(f); }
};
template <> struct Act<__nv_bfloat16> {
  static __device__ __forceinline__ float2 ToFloat2(uint32_t w) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w));
  }
  static __device__ __forceinline__ __nv_bfloat16 FromFloat(float f) { return __float2bfloat16_rn(f); }
};

// 8 consecutive 16-bit values (one 16-byte load) -> 8 floats.
template <typename T>
__device__ __forceinline__ void Unpack8(const uint4& u, float* f) {
  const float2 a = Act<T>::ToFloat2(u.x), b = Act<T>::ToFloat2(u.y);
  const float2 c = Act<T>::ToFloat2(u.z), d = Act<T>::ToFloat2(u.w);
  f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
  f[4] = c.x; f[5] = c.y; f[6] = d.x; f[7] = d.y;
}

// 8 floats -> 8 consecutive 16-bit values (round to nearest even each), for one 16-byte store.
template <typename T>
__device__ __forceinline__ uint4 Pack8(const float* f) {
  uint4 u;
  T* e = reinterpret_cast<T*>(&u);
#pragma unroll
  for (int i = 0; i < 8; ++i) e[i] = Act<T>::FromFloat(f[i]);
  return u;
}

__device__ __forceinline__ uint4 Load16(const void* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// Element offset of (position, kv head, dim 0) in a [num_blocks, block_size, kv_heads, D]
// cache, given the block-table entry of the position (block = table[pos / block_size]).
__device__ __forceinline__ size_t SlotOffset(int block, int pos, int bs_log2, int num_kv_heads, int kv_head,
                                             int head_dim) {
  const int64_t slot = (static_cast<int64_t>(block) << bs_log2) | (pos & ((1 << bs_log2) - 1));
  return static_cast<size_t>((slot * num_kv_heads + kv_head) * head_dim);
}

// The same through the sequence's block table.
__device__ __forceinline__ size_t CacheOffset(const int32_t* table, int pos, int bs_log2,
                                              int num_kv_heads, int kv_head, int head_dim) {
  return SlotOffset(table[pos >> bs_log2], pos, bs_log2, num_kv_heads, kv_head, head_dim);
}

// ---- KV cache write --------------------------------------------------------------------------
struct KvWriteArgs {
  uint4* k_cache;
  uint4* v_cache;
  const uint16_t* qkv;       // [m, row_stride]
  const int32_t* slots;      // [m]
  int m, row_stride, k_offset, v_offset;
  int pieces_per_head_set;   // kv_dim / 8: 16-byte pieces of one token's k (or v)
  int64_t num_slots;         // num_blocks * block_size
};

__global__ void KvCacheWriteKernel(KvWriteArgs a) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int per_row = 2 * a.pieces_per_head_set;
  if (idx >= static_cast<int64_t>(a.m) * per_row) return;
  const int row = static_cast<int>(idx / per_row);
  const int within = static_cast<int>(idx % per_row);
  const int slot = a.slots[row];
  if (slot < 0 || slot >= a.num_slots) return;  // padding row (or out of range: never write)
  const bool is_v = within >= a.pieces_per_head_set;
  const int piece = is_v ? within - a.pieces_per_head_set : within;
  const uint16_t* src = a.qkv + static_cast<int64_t>(row) * a.row_stride +
                        (is_v ? a.v_offset : a.k_offset) + piece * 8;
  uint4* dst = (is_v ? a.v_cache : a.k_cache) + static_cast<int64_t>(slot) * a.pieces_per_head_set + piece;
  *dst = Load16(src);
}

// ---- Shared attention arguments -----------------------------------------------------------
struct AttnArgs {
  const void* k_cache;
  const void* v_cache;
  const void* q;              // [rows, row_stride]
  void* out;                  // [rows, num_heads * head_dim]
  float* ws_acc;              // decode partials [num_seqs, num_heads, ws_splits, head_dim]
  float* ws_ml;               // decode (max, sum) [num_seqs, num_heads, ws_splits, 2]
  int* split_counters;        // decode: arrivals per (sequence, CTA column), zero between
                              // launches; null: CombineKernel merges the splits
  const int32_t* query_start;
  const int32_t* context_len;
  const int32_t* block_tables;
  int max_blocks_per_seq;
  int row_stride, num_heads, num_kv_heads, group, head_slices;
  int bs_log2;
  int ws_splits;              // min(kMaxSplits, chunks of max_context_len)
  float scale_log2;           // scale * log2(e)
};

// The fused RoPE + KV write of a decode-only launch (FusedRopeKv): a second parameter of
// DecodeChunkRopeKernel only. (Not in AttnArgs: a larger AttnArgs alone changed the register
// allocation of every unfused decode instance, e.g. 117 -> 94 registers at fp16 D = 128 kG = 4.)
struct RopeKvArgs {
  const int32_t* positions;
  const int32_t* slots;
  const float* inv_freq;
  int k_offset, v_offset;
  int64_t num_slots;          // cache.num_blocks * block_size
};

// ---- Tensor-core fragments (mma.sync.m16n8k16), shared by the decode and prefill kernels ------
template <typename T> struct Mma;
template <> struct Mma<__half> {
  static __device__ __forceinline__ void Run(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t Pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
};
template <> struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void Run(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t Pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
};

__device__ __forceinline__ void LdMatrixX4Trans(uint32_t* r, const void* p) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

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

// ---- Prefill: FlashAttention-style SIMT tiles ------------------------------------------------
// CTA = (query tile of 64 rows, query head, sequence), 128 threads as 16 row groups (ty) x 8
// column groups (tx). Thread (ty, tx) owns query rows ty*4 + i (i < 4), score columns
// tx + 8j (j < 8) and output dims tx + 8j (j < D/8). The 8 threads of a row group are 8
// consecutive lanes, so row reductions are 3 shuffles. Shared tiles are fp32 with rows
// padded by one float: the strided column reads hit 32 distinct banks.
template <int kD>
constexpr int PrefillSmemBytes() {
  return (3 * kTileQ * (kD + 1) + kTileQ * (kTileK + 1)) * static_cast<int>(sizeof(float));
}

// Loads keys [k0, k0 + 64) of the sequence (zero beyond ctx) into dst[64][kD + 1] as fp32.
template <typename T, int kD>
__device__ __forceinline__ void LoadKvTile(float* dst, const T* cache, const int32_t* table, int k0,
                                           int ctx, int bs_log2, int num_kv_heads, int kv_head) {
  constexpr int kPieces = kD / 8;
  for (int i = threadIdx.x; i < kTileK * kPieces; i += kPrefillThreads) {
    const int r = i / kPieces, piece = i % kPieces;
    const int pos = k0 + r;
    float f[8];
    if (pos < ctx) {
      Unpack8<T>(Load16(cache + CacheOffset(table, pos, bs_log2, num_kv_heads, kv_head, kD) + piece * 8), f);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) f[e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) dst[r * (kD + 1) + piece * 8 + e] = f[e];
  }
}

template <typename T, int kD>
__global__ void __launch_bounds__(kPrefillThreads) PrefillKernel(AttnArgs a) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  constexpr int kStride = kD + 1;
  constexpr int kDPer = kD / 8;  // output dims per thread
  extern __shared__ float smem[];
  float* s_q = smem;                          // [64][kD + 1], pre-scaled
  float* s_k = s_q + kTileQ * kStride;        // [64][kD + 1]
  float* s_v = s_k + kTileK * kStride;        // [64][kD + 1]
  float* s_pr = s_v + kTileK * kStride;       // [64][65] probabilities

  const int seq = blockIdx.z, h = blockIdx.y, tile = blockIdx.x;
  const int q_start = a.query_start[seq];
  const int q_len = a.query_start[seq + 1] - q_start;
  if (q_len <= 1) return;  // decode sequences: DecodeChunkKernel
  const int row0 = tile * kTileQ;
  if (row0 >= q_len) return;
  const int ctx = a.context_len[seq];
  const int rows = min(kTileQ, q_len - row0);
  const int pos0 = ctx - q_len + row0;  // position of the tile's first row
  const int kv_head = h / a.group;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const T* k_cache = static_cast<const T*>(a.k_cache);
  const T* v_cache = static_cast<const T*>(a.v_cache);

  // Q tile (rows beyond q_len are zero; they are never written out).
  {
    const T* q = static_cast<const T*>(a.q);
    for (int i = threadIdx.x; i < kTileQ * kDPer; i += kPrefillThreads) {
      const int r = i / kDPer, piece = i % kDPer;
      float f[8];
      if (r < rows) {
        Unpack8<T>(Load16(q + static_cast<int64_t>(q_start + row0 + r) * a.row_stride + h * kD + piece * 8), f);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) f[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) s_q[r * kStride + piece * 8 + e] = f[e] * a.scale_log2;
    }
  }

  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  float acc[4][kDPer];
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -1e30f;  // finite: a fully masked tile row gives exp2(-inf) = 0, never NaN
    l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < kDPer; ++j) acc[i][j] = 0.f;
  }
  const int last_pos = pos0 + rows - 1;
  const int num_tiles = last_pos / kTileK + 1;
  for (int kt = 0; kt < num_tiles; ++kt) {
    const int k0 = kt * kTileK;
    __syncthreads();  // previous tile's K/V/P reads are done (and the Q tile is written)
    LoadKvTile<T, kD>(s_k, k_cache, table, k0, ctx, a.bs_log2, a.num_kv_heads, kv_head);
    LoadKvTile<T, kD>(s_v, v_cache, table, k0, ctx, a.bs_log2, a.num_kv_heads, kv_head);
    __syncthreads();

    float s[4][8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 8; ++j) s[i][j] = 0.f;
    }
#pragma unroll 4
    for (int d = 0; d < kD; ++d) {
      float qv[4], kv[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) qv[i] = s_q[(ty * 4 + i) * kStride + d];
#pragma unroll
      for (int j = 0; j < 8; ++j) kv[j] = s_k[(tx + 8 * j) * kStride + d];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) s[i][j] = fmaf(qv[i], kv[j], s[i][j]);
      }
    }
    // Causal mask and online softmax per row.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int qpos = pos0 + ty * 4 + i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (k0 + tx + 8 * j > qpos) s[i][j] = -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
#pragma unroll
      for (int off = 4; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m[i], mx);
      const float alpha = exp2f(m[i] - m_new);
      m[i] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float p = exp2f(s[i][j] - m_new);
        s_pr[(ty * 4 + i) * (kTileK + 1) + tx + 8 * j] = p;
        sum += p;
      }
      l[i] = l[i] * alpha + sum;  // per-thread partial; the row sum is reduced at the end
#pragma unroll
      for (int j = 0; j < kDPer; ++j) acc[i][j] *= alpha;
    }
    __syncthreads();
#pragma unroll 4
    for (int k = 0; k < kTileK; ++k) {
      float pv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) pv[i] = s_pr[(ty * 4 + i) * (kTileK + 1) + k];
#pragma unroll
      for (int j = 0; j < kDPer; ++j) {
        const float v = s_v[k * kStride + tx + 8 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[i][j] = fmaf(pv[i], v, acc[i][j]);
      }
    }
  }

  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float sum = l[i];
#pragma unroll
    for (int off = 4; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    const int r = ty * 4 + i;
    if (r < rows) {
      T* dst = out + static_cast<int64_t>(q_start + row0 + r) * a.num_heads * kD + h * kD;
      const float inv = 1.f / sum;
#pragma unroll
      for (int j = 0; j < kDPer; ++j) dst[tx + 8 * j] = Act<T>::FromFloat(acc[i][j] * inv);
    }
  }
}

// ---- Prefill on tensor cores: mma.sync.m16n8k16, fp32 accumulation ------------------------
// CTA = (query tile of 64 rows, query head, sequence), 4 warps, warp w owns query rows
// 16w..16w+15 for the whole key range (FlashAttention-2 split: no cross-warp reduction).
// Per key tile of 64: S[16 x 64] = Q Kᵀ (8 n-tiles x D/16 k-steps), online softmax on the C
// fragments, P (rounded to the activation type) is re-used in registers as the A operand of
// O[16 x D] += P V (4 k-steps x D/8 n-tiles, V fragments by ldmatrix.trans).
// Fragment layout of m16n8k16 (g = lane / 4, t = lane % 4): A regs {0,1,2,3} = (row g, k 2t),
// (row g+8, k 2t), (row g, k 2t+8), (row g+8, k 2t+8), each two consecutive k; B regs {0,1}
// = (k 2t, 2t+1 | n g) and (k 2t+8, 2t+9 | n g); C = (row g, n 2t, 2t+1), (row g+8, same).
constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = kMmaWarps * 32;

// Keys [k0, k0 + 64) of the sequence (zeros beyond ctx) into dst[64][kD + 8] (16-bit; the
// 16-byte row padding makes the fragment reads conflict-free).
template <typename T, int kD>
__device__ __forceinline__ void LoadKvTile16(uint16_t* dst, const T* cache, const int32_t* table,
                                             int k0, int ctx, int bs_log2, int num_kv_heads,
                                             int kv_head) {
  constexpr int kPieces = kD / 8;
  for (int i = threadIdx.x; i < kTileK * kPieces; i += kMmaThreads) {
    const int r = i / kPieces, piece = i % kPieces;
    const int pos = k0 + r;
    uint4 u = make_uint4(0, 0, 0, 0);
    if (pos < ctx) {
      u = Load16(cache + CacheOffset(table, pos, bs_log2, num_kv_heads, kv_head, kD) + piece * 8);
    }
    *reinterpret_cast<uint4*>(dst + r * (kD + 8) + piece * 8) = u;
  }
}

template <typename T, int kD>
__global__ void __launch_bounds__(kMmaThreads) PrefillMmaKernel(AttnArgs a) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  constexpr int kStride = kD + 8;  // halves per smem row
  constexpr int kSteps = kD / 16;  // k-steps of Q Kᵀ
  constexpr int kDTiles = kD / 8;  // n-tiles of P V
  __shared__ __align__(16) uint16_t s_k[kTileK * kStride];
  __shared__ __align__(16) uint16_t s_v[kTileK * kStride];

  const int seq = blockIdx.z, h = blockIdx.y, tile = blockIdx.x;
  const int q_start = a.query_start[seq];
  const int q_len = a.query_start[seq + 1] - q_start;
  if (q_len <= 1) return;  // decode sequences: DecodeChunkKernel
  const int row0 = tile * kTileQ;
  if (row0 >= q_len) return;
  const int ctx = a.context_len[seq];
  const int rows = min(kTileQ, q_len - row0);
  const int pos0 = ctx - q_len + row0;  // position of the tile's first row
  const int kv_head = h / a.group;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const T* k_cache = static_cast<const T*>(a.k_cache);
  const T* v_cache = static_cast<const T*>(a.v_cache);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int r_lo = warp * 16 + g, r_hi = r_lo + 8;  // this thread's two rows in the tile

  // Q fragments straight from global memory (rows beyond the tile's rows are zero).
  uint32_t qa[kSteps][4];
  {
    const T* q = static_cast<const T*>(a.q) + h * kD + 2 * t;
    const uint32_t* lo = reinterpret_cast<const uint32_t*>(q + static_cast<int64_t>(q_start + row0 + r_lo) * a.row_stride);
    const uint32_t* hi = reinterpret_cast<const uint32_t*>(q + static_cast<int64_t>(q_start + row0 + r_hi) * a.row_stride);
    const bool lo_ok = r_lo < rows, hi_ok = r_hi < rows;
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks) {
      qa[ks][0] = lo_ok ? __ldg(lo + ks * 8) : 0u;
      qa[ks][1] = hi_ok ? __ldg(hi + ks * 8) : 0u;
      qa[ks][2] = lo_ok ? __ldg(lo + ks * 8 + 4) : 0u;
      qa[ks][3] = hi_ok ? __ldg(hi + ks * 8 + 4) : 0u;
    }
  }

  float o[kDTiles][4];
#pragma unroll
  for (int j = 0; j < kDTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m_lo = -1e30f, m_hi = -1e30f;  // finite: fully masked rows give exp2(-inf) = 0
  float l_lo = 0.f, l_hi = 0.f;        // per-thread partial row sums (reduced at the end)
  const int qpos_lo = pos0 + r_lo, qpos_hi = pos0 + r_hi;
  const int num_tiles = (pos0 + rows - 1) / kTileK + 1;

  for (int kt = 0; kt < num_tiles; ++kt) {
    const int k0 = kt * kTileK;
    __syncthreads();  // the previous tile's fragment reads are done
    LoadKvTile16<T, kD>(s_k, k_cache, table, k0, ctx, a.bs_log2, a.num_kv_heads, kv_head);
    LoadKvTile16<T, kD>(s_v, v_cache, table, k0, ctx, a.bs_log2, a.num_kv_heads, kv_head);
    __syncthreads();

    // S = Q Kᵀ: n-tile nt holds keys k0 + 8nt + 2t (+1) for rows r_lo (s[nt][0..1]) and r_hi.
    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
      const uint32_t* krow = reinterpret_cast<const uint32_t*>(s_k + (8 * nt + g) * kStride) + t;
#pragma unroll
      for (int ks = 0; ks < kSteps; ++ks) Mma<T>::Run(s[nt], qa[ks], krow[ks * 8], krow[ks * 8 + 4]);
    }
    // Scale, causal mask, online softmax (a row lives in the 4 lanes of a quad).
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = k0 + 8 * nt + 2 * t + e;
        s[nt][e] = key > qpos_lo ? -INFINITY : s[nt][e] * a.scale_log2;
        s[nt][2 + e] = key > qpos_hi ? -INFINITY : s[nt][2 + e] * a.scale_log2;
        mx_lo = fmaxf(mx_lo, s[nt][e]);
        mx_hi = fmaxf(mx_hi, s[nt][2 + e]);
      }
    }
#pragma unroll
    for (int off = 1; off < 4; off *= 2) {
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
    }
    const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
    const float alpha_lo = exp2f(m_lo - mn_lo), alpha_hi = exp2f(m_hi - mn_hi);
    m_lo = mn_lo;
    m_hi = mn_hi;
    float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[nt][e] = exp2f(s[nt][e] - mn_lo);
        s[nt][2 + e] = exp2f(s[nt][2 + e] - mn_hi);
        sum_lo += s[nt][e];
        sum_hi += s[nt][2 + e];
      }
    }
    l_lo = l_lo * alpha_lo + sum_lo;
    l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
    for (int j = 0; j < kDTiles; ++j) {
      o[j][0] *= alpha_lo;
      o[j][1] *= alpha_lo;
      o[j][2] *= alpha_hi;
      o[j][3] *= alpha_hi;
    }
    // O += P V: k-step j covers keys 16j..16j+15 = C n-tiles 2j and 2j+1.
#pragma unroll
    for (int j = 0; j < kTileK / 16; ++j) {
      uint32_t pa[4];
      pa[0] = Mma<T>::Pack(s[2 * j][0], s[2 * j][1]);
      pa[1] = Mma<T>::Pack(s[2 * j][2], s[2 * j][3]);
      pa[2] = Mma<T>::Pack(s[2 * j + 1][0], s[2 * j + 1][1]);
      pa[3] = Mma<T>::Pack(s[2 * j + 1][2], s[2 * j + 1][3]);
      // ldmatrix.x4.trans: matrices (keys +0 | +8) x (dims 8dt | 8dt + 8); lane l addresses
      // row l % 8 of matrix l / 8.
      const int key = 16 * j + ((lane / 8) % 2) * 8 + lane % 8;
#pragma unroll
      for (int dt = 0; dt < kDTiles; dt += 2) {
        uint32_t b[4];
        LdMatrixX4Trans(b, s_v + key * kStride + 8 * (dt + lane / 16));
        Mma<T>::Run(o[dt], pa, b[0], b[1]);
        Mma<T>::Run(o[dt + 1], pa, b[2], b[3]);
      }
    }
  }

#pragma unroll
  for (int off = 1; off < 4; off *= 2) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  T* out = static_cast<T*>(a.out) + h * kD + 2 * t;
  const int64_t out_stride = static_cast<int64_t>(a.num_heads) * kD;
  if (r_lo < rows) {
    uint32_t* dst = reinterpret_cast<uint32_t*>(out + (q_start + row0 + r_lo) * out_stride);
    const float inv = 1.f / l_lo;
#pragma unroll
    for (int j = 0; j < kDTiles; ++j) dst[j * 4] = Mma<T>::Pack(o[j][0] * inv, o[j][1] * inv);
  }
  if (r_hi < rows) {
    uint32_t* dst = reinterpret_cast<uint32_t*>(out + (q_start + row0 + r_hi) * out_stride);
    const float inv = 1.f / l_hi;
#pragma unroll
    for (int j = 0; j < kDTiles; ++j) dst[j * 4] = Mma<T>::Pack(o[j][2] * inv, o[j][3] * inv);
  }
}

// ---- Launch helpers --------------------------------------------------------------------------
int Log2(int x) {
  int r = 0;
  while ((1 << r) < x) ++r;
  return r;
}

// FLUTE_ATTENTION_PREFILL=simt selects the SIMT prefill kernel instead of the tensor-core
// one (a cross-check for tests and debugging; read at every launch, host side only).
// FLUTE_ATTENTION_COMBINE=kernel merges decode splits in the separate CombineKernel instead of
// in the last split CTA (a cross-check and an A/B switch; read at every launch, host side).
bool UseCombineKernel() {
  const char* v = std::getenv("FLUTE_ATTENTION_COMBINE");
  return v != nullptr && std::strcmp(v, "kernel") == 0;
}

bool UseSimtPrefill() {
  const char* v = std::getenv("FLUTE_ATTENTION_PREFILL");
  return v != nullptr && std::strcmp(v, "simt") == 0;
}

// Workspace partials per (sequence, head): one per split, at most kMaxSplits.
int WorkspaceSplits(int max_context_len) {
  const int chunks = (max_context_len + kChunk - 1) / kChunk;
  return chunks < kMaxSplits ? chunks : kMaxSplits;
}

absl::Status CheckCache(const PagedKvLayer& c, const char* who) {
  if (c.head_dim != 64 && c.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": cache.head_dim must be 64 or 128, got ", c.head_dim));
  }
  if (c.block_size < 8 || c.block_size > 64 || (c.block_size & (c.block_size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, ": cache.block_size must be a power of two in [8, 64], got ", c.block_size));
  }
  if (c.num_kv_heads < 1 || c.num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": cache.num_kv_heads and num_blocks must be >= 1, got ",
                                                   c.num_kv_heads, " and ", c.num_blocks));
  }
  if (c.dtype != ActivationType::kFloat16 && c.dtype != ActivationType::kBFloat16) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": cache.dtype must be fp16 or bf16"));
  }
  if (c.k == nullptr || c.v == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": cache.k and cache.v must be set"));
  }
  if (reinterpret_cast<uintptr_t>(c.k) % 16 != 0 || reinterpret_cast<uintptr_t>(c.v) % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": cache.k and cache.v must be 16-byte aligned"));
  }
  return absl::OkStatus();
}

absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " launch failed: ", cudaGetErrorString(err)));
}

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

template <typename T, int kD>
cudaError_t LaunchDecodeForGroup(const AttnArgs& a, const RopeKvArgs* rope, int num_seqs, cudaStream_t stream) {
  // The smallest instance that holds the group (or a slice of kMaxGroup heads).
  const int g = a.group >= kMaxGroup ? kMaxGroup : a.group;
  if (g <= 1) return LaunchDecode<T, kD, 1>(a, rope, num_seqs, stream);
  if (g <= 2) return LaunchDecode<T, kD, 2>(a, rope, num_seqs, stream);
  if (g <= 4) return LaunchDecode<T, kD, 4>(a, rope, num_seqs, stream);
  return LaunchDecode<T, kD, 8>(a, rope, num_seqs, stream);
}

// rope: the fused RoPE + KV write, or null (then max_query_len == 1 was checked: no prefill).
template <typename T, int kD>
cudaError_t LaunchAll(const AttnArgs& a, const RopeKvArgs* rope, int num_seqs, int max_query_len,
                      cudaStream_t stream) {
  if (max_query_len > 1) {
    const dim3 grid((max_query_len + kTileQ - 1) / kTileQ, a.num_heads, num_seqs);
    if (UseSimtPrefill()) {
      constexpr int smem = PrefillSmemBytes<kD>();
      cudaError_t err = cudaFuncSetAttribute(PrefillKernel<T, kD>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      if (err != cudaSuccess) return err;
      LaunchWithPdl(PrefillKernel<T, kD>, grid, kPrefillThreads, smem, stream, a);
    } else {
      LaunchWithPdl(PrefillMmaKernel<T, kD>, grid, kMmaThreads, 0, stream, a);
    }
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  cudaError_t err = LaunchDecodeForGroup<T, kD>(a, rope, num_seqs, stream);
  if (err != cudaSuccess || a.ws_splits <= 1 || a.split_counters != nullptr) return err;
  LaunchWithPdl(CombineKernel<T, kD>, dim3(a.num_heads, num_seqs), kDecodeThreads, 0, stream, a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchForType(const AttnArgs& a, const RopeKvArgs* rope, int head_dim, int num_seqs, int max_query_len,
                          cudaStream_t stream) {
  return head_dim == 64 ? LaunchAll<T, 64>(a, rope, num_seqs, max_query_len, stream)
                        : LaunchAll<T, 128>(a, rope, num_seqs, max_query_len, stream);
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

}  // namespace

int PagedAttentionDecodeColumns(ActivationType dtype, int head_dim, int num_heads, int num_kv_heads, int num_seqs,
                                int max_context_len) {
  if ((head_dim != 64 && head_dim != 128) || num_kv_heads < 1 || num_heads < 1 || num_heads % num_kv_heads != 0 ||
      num_seqs < 1) {
    return 0;
  }
  const int group = num_heads / num_kv_heads, ws_splits = WorkspaceSplits(max_context_len);
  if (dtype == ActivationType::kBFloat16) {
    return head_dim == 64 ? DecodeColumnsForGroup<__nv_bfloat16, 64>(group, ws_splits, num_kv_heads, num_seqs)
                          : DecodeColumnsForGroup<__nv_bfloat16, 128>(group, ws_splits, num_kv_heads, num_seqs);
  }
  return head_dim == 64 ? DecodeColumnsForGroup<__half, 64>(group, ws_splits, num_kv_heads, num_seqs)
                        : DecodeColumnsForGroup<__half, 128>(group, ws_splits, num_kv_heads, num_seqs);
}

absl::Status LaunchKvCacheWrite(const PagedKvLayer& cache, const void* qkv, int m, int row_stride,
                                int k_offset, int v_offset, const int32_t* slots,
                                CUstream_st* stream) {
  absl::Status st = CheckCache(cache, "KV cache write");
  if (!st.ok()) return st;
  if (m < 0) return absl::InvalidArgumentError(absl::StrCat("KV cache write: m must be >= 0, got ", m));
  if (m == 0) return absl::OkStatus();
  if (qkv == nullptr || slots == nullptr) {
    return absl::InvalidArgumentError("KV cache write: qkv and slots must be set");
  }
  const int kv_dim = cache.num_kv_heads * cache.head_dim;
  if (row_stride % 8 != 0 || k_offset % 8 != 0 || v_offset % 8 != 0 || k_offset < 0 ||
      v_offset < 0 || k_offset + kv_dim > row_stride || v_offset + kv_dim > row_stride) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache write: row_stride, k_offset and v_offset must be multiples of 8 with both "
        "[offset, offset + kv_dim) inside a row; got row_stride=", row_stride, " k_offset=", k_offset,
        " v_offset=", v_offset, " kv_dim=", kv_dim));
  }
  if (reinterpret_cast<uintptr_t>(qkv) % 16 != 0) {
    return absl::InvalidArgumentError("KV cache write: qkv must be 16-byte aligned");
  }
  KvWriteArgs a;
  a.k_cache = static_cast<uint4*>(cache.k);
  a.v_cache = static_cast<uint4*>(cache.v);
  a.qkv = static_cast<const uint16_t*>(qkv);
  a.slots = slots;
  a.m = m;
  a.row_stride = row_stride;
  a.k_offset = k_offset;
  a.v_offset = v_offset;
  a.pieces_per_head_set = kv_dim / 8;
  a.num_slots = static_cast<int64_t>(cache.num_blocks) * cache.block_size;
  const int64_t total = static_cast<int64_t>(m) * 2 * a.pieces_per_head_set;
  constexpr int kThreads = 256;
  LaunchWithPdl(KvCacheWriteKernel, static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0, stream, a);
  return CudaStatus(cudaGetLastError(), "KV cache write");
}

size_t PagedAttentionWorkspaceBytes(int max_rows, int num_heads, int head_dim, int max_context_len) {
  const int splits = WorkspaceSplits(max_context_len);
  if (splits <= 1 || max_rows <= 0 || num_heads <= 0 || head_dim <= 0) return 0;
  return kPagedAttentionCounterBytes +
         static_cast<size_t>(max_rows) * num_heads * splits * (head_dim + 2) * sizeof(float);
}

namespace {

// The fused RoPE + KV write's own argument rules (those of LaunchRopeKvWrite on the offsets,
// plus a decode-only batch).
absl::Status CheckFusedRopeKv(const FusedRopeKv& f, const PagedKvLayer& cache, int row_stride, int num_heads,
                              const AttentionBatch& batch) {
  const auto invalid = [](const auto&... args) {
    return absl::InvalidArgumentError(absl::StrCat("paged attention with a fused RoPE + KV write: ", args...));
  };
  if (batch.max_query_len != 1) {
    return invalid("batch.max_query_len must be 1 (a decode-only batch: one query row per sequence), got ",
                   batch.max_query_len);
  }
  if (f.positions == nullptr || f.slots == nullptr || f.inv_freq == nullptr) {
    return invalid("fused_rope->positions, slots and inv_freq must be set");
  }
  if (f.k_offset < 0 || f.k_offset % 8 != 0) {
    return invalid("fused_rope->k_offset must be a non-negative multiple of 8, got ", f.k_offset);
  }
  if (f.v_offset < 0 || f.v_offset % 8 != 0) {
    return invalid("fused_rope->v_offset must be a non-negative multiple of 8, got ", f.v_offset);
  }
  const int64_t kv_dim = static_cast<int64_t>(cache.num_kv_heads) * cache.head_dim;
  const int64_t q_end = static_cast<int64_t>(num_heads) * cache.head_dim;
  const int64_t k_end = f.k_offset + kv_dim, v_end = f.v_offset + kv_dim;
  if (f.k_offset < q_end) {
    return invalid("fused_rope->k_offset must be >= num_heads * head_dim = ", q_end, " (no overlap with q), got ",
                   f.k_offset);
  }
  if (k_end > row_stride) {
    return invalid("k heads end at column fused_rope->k_offset + num_kv_heads * head_dim = ", k_end,
                   ", must be <= row_stride = ", row_stride);
  }
  if (v_end > row_stride) {
    return invalid("v heads end at column fused_rope->v_offset + num_kv_heads * head_dim = ", v_end,
                   ", must be <= row_stride = ", row_stride);
  }
  const auto overlap = [](int64_t b0, int64_t e0, int64_t b1, int64_t e1) { return b0 < e1 && b1 < e0; };
  if (overlap(f.v_offset, v_end, 0, q_end) || overlap(f.v_offset, v_end, f.k_offset, k_end)) {
    return invalid("fused_rope->v_offset must put the v columns [", f.v_offset, ", ", v_end,
                   ") apart from the q columns [0, ", q_end, ") and the k columns [", f.k_offset, ", ", k_end, ")");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchPagedAttention(const PagedKvLayer& cache, const void* q, int row_stride,
                                  int num_heads, float scale, const AttentionBatch& batch,
                                  void* out, void* workspace, size_t workspace_bytes,
                                  CUstream_st* stream, const FusedRopeKv* fused_rope) {
  absl::Status st = CheckCache(cache, "paged attention");
  if (!st.ok()) return st;
  const int d = cache.head_dim;
  if (num_heads < 1 || num_heads % cache.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "paged attention: num_heads must be a positive multiple of cache.num_kv_heads (",
        cache.num_kv_heads, "), got ", num_heads));
  }
  if (row_stride < num_heads * d || row_stride % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "paged attention: row_stride must be a multiple of 8 and >= num_heads * head_dim (",
        num_heads * d, "), got ", row_stride));
  }
  if (batch.num_seqs < 0) {
    return absl::InvalidArgumentError(absl::StrCat("paged attention: batch.num_seqs must be >= 0, got ",
                                                   batch.num_seqs));
  }
  if (batch.num_seqs == 0) return absl::OkStatus();
  if (batch.num_seqs > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("paged attention: batch.num_seqs must be <= 65535, got ",
                                                   batch.num_seqs));
  }
  if (batch.max_query_len < 1 || batch.max_context_len < batch.max_query_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "paged attention: need 1 <= batch.max_query_len <= batch.max_context_len, got ",
        batch.max_query_len, " and ", batch.max_context_len));
  }
  const int blocks_needed = (batch.max_context_len + cache.block_size - 1) / cache.block_size;
  if (batch.max_blocks_per_seq < blocks_needed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "paged attention: batch.max_blocks_per_seq must cover max_context_len (>= ", blocks_needed,
        "), got ", batch.max_blocks_per_seq));
  }
  if (q == nullptr || out == nullptr || batch.query_start == nullptr || batch.context_len == nullptr ||
      batch.block_tables == nullptr) {
    return absl::InvalidArgumentError(
        "paged attention: q, out, batch.query_start, batch.context_len and batch.block_tables must be set");
  }
  if (reinterpret_cast<uintptr_t>(q) % 16 != 0 || reinterpret_cast<uintptr_t>(out) % 4 != 0) {
    return absl::InvalidArgumentError("paged attention: q must be 16-byte and out 4-byte aligned");
  }
  if (fused_rope != nullptr) {
    absl::Status fst = CheckFusedRopeKv(*fused_rope, cache, row_stride, num_heads, batch);
    if (!fst.ok()) return fst;
  }
  // Decode partials are indexed by sequence (each sequence has >= 1 query row, so
  // num_seqs <= max_rows of PagedAttentionWorkspaceBytes).
  const size_t need = PagedAttentionWorkspaceBytes(batch.num_seqs, num_heads, d, batch.max_context_len);
  if (need > 0 && (workspace == nullptr || workspace_bytes < need ||
                   reinterpret_cast<uintptr_t>(workspace) % 16 != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "paged attention: a 16-byte aligned workspace of ", need,
        " bytes is needed (PagedAttentionWorkspaceBytes), got ", workspace_bytes));
  }
  AttnArgs a;
  a.k_cache = cache.k;
  a.v_cache = cache.v;
  a.q = q;
  a.out = out;
  a.ws_splits = WorkspaceSplits(batch.max_context_len);
  // Workspace: the split counters' fixed prefix (zero between launches), then the partials.
  a.ws_acc = need > 0 ? reinterpret_cast<float*>(static_cast<char*>(workspace) + kPagedAttentionCounterBytes)
                      : nullptr;
  a.ws_ml = need > 0 ? a.ws_acc + static_cast<size_t>(batch.num_seqs) * num_heads * a.ws_splits * d : nullptr;
  a.query_start = batch.query_start;
  a.context_len = batch.context_len;
  a.block_tables = batch.block_tables;
  a.max_blocks_per_seq = batch.max_blocks_per_seq;
  a.row_stride = row_stride;
  a.num_heads = num_heads;
  a.num_kv_heads = cache.num_kv_heads;
  a.group = num_heads / cache.num_kv_heads;
  a.head_slices = (a.group + kMaxGroup - 1) / kMaxGroup;
  // The last split CTA merges where a counter per (sequence, CTA column) fits the prefix.
  const int64_t counters = static_cast<int64_t>(batch.num_seqs) * cache.num_kv_heads * a.head_slices;
  a.split_counters = need > 0 && counters * static_cast<int64_t>(sizeof(int)) <= kPagedAttentionCounterBytes &&
                             !UseCombineKernel()
                         ? static_cast<int*>(workspace)
                         : nullptr;
  a.bs_log2 = Log2(cache.block_size);
  a.scale_log2 = scale * kLog2e;
  RopeKvArgs rope = {};
  if (fused_rope != nullptr) {
    rope.positions = fused_rope->positions;
    rope.slots = fused_rope->slots;
    rope.inv_freq = fused_rope->inv_freq;
    rope.k_offset = fused_rope->k_offset;
    rope.v_offset = fused_rope->v_offset;
    rope.num_slots = static_cast<int64_t>(cache.num_blocks) * cache.block_size;
  }
  const RopeKvArgs* rope_ptr = fused_rope != nullptr ? &rope : nullptr;
  const cudaError_t err =
      cache.dtype == ActivationType::kBFloat16
          ? LaunchForType<__nv_bfloat16>(a, rope_ptr, d, batch.num_seqs, batch.max_query_len, stream)
          : LaunchForType<__half>(a, rope_ptr, d, batch.num_seqs, batch.max_query_len, stream);
  return CudaStatus(err, "paged attention");
}

}  // namespace flute::gpu

namespace flute::trace {
FLUTE_TRACE_SETTER(SetBufferAttention)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
