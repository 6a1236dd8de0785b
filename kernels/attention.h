// Paged KV cache and attention on the GPU: writing a step's K/V into fixed-size blocks, and
// causal GQA attention of a ragged batch (some sequences prefilling a chunk, some decoding
// one token) over the paged cache. Conventions as in kernels/llama_ops.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/lut_gemm.h"

namespace flute::gpu {

using lut::ActivationType;

// One layer's cache: K and V each [num_blocks, block_size, num_kv_heads, head_dim] (act).
// Token at position p of a sequence lives in block table[p / block_size], slot p % block_size.
struct PagedKvLayer {
  void* k = nullptr;
  void* v = nullptr;
  int num_blocks = 0;
  int block_size = 0;     // 16 by default; any value in [8, 64] that is a power of two
  int num_kv_heads = 0;
  int head_dim = 0;       // 64 or 128 (others InvalidArgument)
  ActivationType dtype = ActivationType::kFloat16;
};

// Copies the k and v heads of m tokens from the fused projection output qkv[m, row_stride]
// (k at columns [k_offset, +kv_dim), v at [v_offset, +kv_dim), kv_dim = num_kv_heads *
// head_dim) into the cache: token i goes to flat slot slots[i] = block * block_size + offset.
// A negative slot skips the row (padding rows of a CUDA-graph batch).
absl::Status LaunchKvCacheWrite(const PagedKvLayer& cache, const void* qkv, int m, int row_stride,
                                int k_offset, int v_offset, const int32_t* slots,
                                CUstream_st* stream);

// The ragged batch, all arrays on the device. Sequence s owns query rows
// [query_start[s], query_start[s + 1]) and has context_len[s] tokens in the cache AFTER this
// step's write (its queries are the last query_len tokens of that context). Query row j of s
// (0-based within s) is at position context_len[s] - query_len + j and attends causally to
// positions [0, that position]. block_tables is [num_seqs, max_blocks_per_seq].
// The host bounds max_query_len >= every query_len and max_context_len >= every context_len
// only size the grid: blocks beyond a sequence's real lengths exit early, so one CUDA graph
// captured with generous bounds serves every step of its batch size.
struct AttentionBatch {
  int num_seqs = 0;
  const int32_t* query_start = nullptr;   // [num_seqs + 1]
  const int32_t* context_len = nullptr;   // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  int max_query_len = 0;
  int max_context_len = 0;
};

// Decode-only steps: RoPE and the KV-cache write of the step's token done inside the decode
// attention, instead of a separate LaunchRopeKvWrite (kernels/rope_kv_write.h) just before it
// (one kernel boundary less per layer). q and k in the qkv buffer are then RAW (not rotated);
// see LaunchPagedAttention for the contract. All pointers are device pointers.
struct FusedRopeKv {
  const int32_t* positions = nullptr;  // [rows] RoPE position of each query row
  const int32_t* slots = nullptr;      // [rows] flat cache slot of each row's k/v (outside
                                       // [0, num_blocks * block_size), e.g. < 0: write nothing)
  const float* inv_freq = nullptr;     // [head_dim / 2] fp32
  int k_offset = 0, v_offset = 0;      // columns of the k and v heads in a qkv row (row_stride as q)
};

// out[total_q, num_heads * head_dim] (act) = softmax(q kᵀ * scale) v per head, with query
// head h reading kv head h / (num_heads / num_kv_heads). q is read from q[row, row_stride]
// at columns [0, num_heads * head_dim) (the fused qkv buffer after RoPE).
//
// Batch invariance: the result for one query row is bitwise the same whatever the other
// sequences of the batch, and whatever the max_* bounds: long contexts are split into
// fixed-size chunks of positions (never a count derived from the batch) and the chunks are
// combined in order.
//
// fused_rope (optional; null: as described above). With it, `q` is the fused qkv buffer
// BEFORE RoPE and the call is exactly
//   LaunchRopeKvWrite(q, rows, row_stride, num_heads, fused_rope->k_offset, fused_rope->v_offset,
//                     cache, positions, slots, inv_freq) + LaunchPagedAttention(without it),
// rows = the batch's query rows (query_start[num_seqs]):
// `out` and both caches end bitwise the same (the rotation is the same code,
// kernels/rope_math.cuh), except that qkv itself is only read: q and k stay raw there. Each
// CTA rotates its q heads itself; the rotated k and the v of the newest position
// (context_len - 1) are taken from qkv instead of the cache, and written to the cache at the
// row's slot. Requirements beyond the unfused call's:
//  - batch.max_query_len == 1 (InvalidArgument otherwise): every sequence is a decode
//    sequence with one query row (the kernel rotates and writes only such rows);
//  - slots[r] of a sequence's row r is the slot of its position context_len - 1 through its
//    block table (as the engine plans it), or outside [0, num_blocks * block_size) (a padding
//    row: nothing is written and the cache row is read as it is, as in the unfused pair);
//  - the argument rules of LaunchRopeKvWrite on the offsets: k_offset and v_offset
//    non-negative multiples of 8, k columns at or after the q columns, v columns apart from
//    the q and k columns, all inside a row; positions, slots and inv_freq set.
// Before its grid dependency wait (PDL) the kernel reads positions, slots and inv_freq (step
// inputs, like the batch arrays); qkv only after it.
absl::Status LaunchPagedAttention(const PagedKvLayer& cache, const void* q, int row_stride,
                                  int num_heads, float scale, const AttentionBatch& batch,
                                  void* out, void* workspace, size_t workspace_bytes,
                                  CUstream_st* stream, const FusedRopeKv* fused_rope = nullptr);

// The CTA columns per (kv head slice, sequence) of the decode columns kernel that a fused
// decode launch (fused_rope set, every sequence one query row) of this shape runs, or 0 when it
// runs one CTA per split (or merges in a cluster). The columns kernel leaves the SMs at the
// largest shared-memory carveout: the dense GEMVs that follow it in a step ask for their L1
// back (DenseGemvParams::prefer_l1). FLUTE_ATTENTION_COLUMNS is honoured as in the launch.
int PagedAttentionDecodeColumns(ActivationType dtype, int head_dim, int num_heads, int num_kv_heads, int num_seqs,
                                int max_context_len);

// Workspace LaunchPagedAttention needs for at most `max_rows` query rows (total over the
// batch) and contexts up to `max_context_len` (0 when no decode row can be split). Its first
// kPagedAttentionCounterBytes hold the decode splits' arrival counters: they must be ZERO
// before the workspace's first use (zero it once when allocating it); every launch leaves
// them zero again. The rest holds partials that need no initialization.
constexpr size_t kPagedAttentionCounterBytes = 16 * 1024;
size_t PagedAttentionWorkspaceBytes(int max_rows, int num_heads, int head_dim,
                                    int max_context_len);

}  // namespace flute::gpu
