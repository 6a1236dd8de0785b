// Paged KV cache write and paged GQA attention for sm_90 (H100): see attention.h for the
// contract. The attention's files:
//  - attention.cu (this file): the entry points of attention.h (argument checks, the workspace
//    layout, the choice of kernels) and the KV-cache write kernel;
//  - attention_decode.cu: the decode kernels (query_len == 1) of one CTA per split, CombineKernel,
//    their launchers and the trace setter SetBufferAttention (kernels/kernel_trace.h: the decode
//    kernels are the traced ones); attention_decode_columns.cu: the columns kernel and its launch
//    helpers (trace setter SetBufferAttentionColumns); attention_decode_common.cuh: what the two
//    share (shared memory, chunk loads, fused RoPE, the chunk's MMAs, split merges);
//  - attention_prefill.cu: the prefill kernels (query_len > 1) and their launcher;
//  - attention_common.cuh: what the kernels share (constants, helpers, argument structs, MMA
//    fragments); attention_launch.h: the launchers this file calls in the other two.
// The kernels (each file's top comment says more of its own):
//
//  - KvCacheWriteKernel: one thread per 16-byte piece of a token's k or v heads.
//  - Decode (query_len == 1, decided per sequence from device memory): DecodeChunkKernel and
//    its fused RoPE + KV write, cluster and columns variants, CombineKernel (attention_decode*).
//  - Prefill (query_len > 1): PrefillMmaKernel, PrefillKernel (attention_prefill.cu).
//
// All softmax arithmetic is fp32 in the log2 domain: q is pre-multiplied by scale * log2(e)
// and exp2f is used throughout.
#include "kernels/attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/attention_common.cuh"
#include "kernels/attention_launch.h"
#include "kernels/pdl.cuh"

namespace flute::gpu {
namespace {

// From attention_common.cuh and attention_launch.h.
using attn_detail::AttnArgs;
using attn_detail::DecodeColumnsForGroup;
using attn_detail::kChunk;
using attn_detail::kLog2e;
using attn_detail::kMaxGroup;
using attn_detail::kMaxSplits;
using attn_detail::LaunchCombine;
using attn_detail::LaunchDecodeForGroup;
using attn_detail::LaunchPrefill;
using attn_detail::Load16;
using attn_detail::RopeKvArgs;

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

// ---- Launch helpers --------------------------------------------------------------------------
int Log2(int x) {
  int r = 0;
  while ((1 << r) < x) ++r;
  return r;
}

// FLUTE_ATTENTION_COMBINE=kernel merges decode splits in the separate CombineKernel instead of
// in the last split CTA (a cross-check and an A/B switch; read at every launch, host side).
bool UseCombineKernel() {
  const char* v = std::getenv("FLUTE_ATTENTION_COMBINE");
  return v != nullptr && std::strcmp(v, "kernel") == 0;
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

// rope: the fused RoPE + KV write, or null (then max_query_len == 1 was checked: no prefill).
template <typename T, int kD>
cudaError_t LaunchAll(const AttnArgs& a, const RopeKvArgs* rope, int num_seqs, int max_query_len,
                      cudaStream_t stream) {
  if (max_query_len > 1) {
    const cudaError_t err = LaunchPrefill<T, kD>(a, num_seqs, max_query_len, stream);
    if (err != cudaSuccess) return err;
  }
  cudaError_t err = LaunchDecodeForGroup<T, kD>(a, rope, num_seqs, stream);
  if (err != cudaSuccess || a.ws_splits <= 1 || a.split_counters != nullptr) return err;
  return LaunchCombine<T, kD>(a, num_seqs, stream);
}

template <typename T>
cudaError_t LaunchForType(const AttnArgs& a, const RopeKvArgs* rope, int head_dim, int num_seqs, int max_query_len,
                          cudaStream_t stream) {
  return head_dim == 64 ? LaunchAll<T, 64>(a, rope, num_seqs, max_query_len, stream)
                        : LaunchAll<T, 128>(a, rope, num_seqs, max_query_len, stream);
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
