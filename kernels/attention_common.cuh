// What the paged attention's kernels share (kernels/attention*.cu; see attention.cu for the
// files and attention.h for the contract): the constants, the 16-bit helpers and cache offsets,
// the kernels' argument structs (AttnArgs, RopeKvArgs) and the tensor-core fragments of
// mma.sync.m16n8k16. Everything is in flute::gpu::attn_detail: the argument structs cross files
// (attention_launch.h); the device functions are inline.
//
// All softmax arithmetic is fp32 in the log2 domain: q is pre-multiplied by scale * log2(e)
// and exp2f is used throughout.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/mma_sync.cuh"

namespace flute::gpu::attn_detail {

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
    MmaM16N8K16<__half>(c, a, b0, b1);
  }
  static __device__ __forceinline__ uint32_t Pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
};
template <> struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void Run(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    MmaM16N8K16<__nv_bfloat16>(c, a, b0, b1);
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

}  // namespace flute::gpu::attn_detail
