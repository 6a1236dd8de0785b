// RoPE and the paged KV-cache write of a decoder layer in one kernel launch: exactly
// LaunchRope (kernels/llama_ops.h) followed by LaunchKvCacheWrite (kernels/attention.h), with
// one launch's latency instead of two. Conventions as in kernels/llama_ops.h: device
// pointers, asynchronous on `stream`, capturable in a CUDA graph (no allocation, no sync),
// InvalidArgument for bad arguments (checked on the host before any CUDA call), Internal with
// the CUDA error after a failed launch, Unimplemented in a build without CUDA.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/attention.h"

namespace flute::gpu {

// qkv[m, row_stride] is the fused projection output, in cache.dtype (fp16 or bf16); with
// kv_dim = cache.num_kv_heads * cache.head_dim, the q heads are at columns
// [0, num_heads * head_dim), the k heads at [k_offset, k_offset + kv_dim) and the v heads at
// [v_offset, v_offset + kv_dim). For every row i:
//  1. RoPE at position positions[i] on the q and k heads of the row, in place (as LaunchRope:
//     angle = position * inv_freq[j] as an fp32 product, precise sincosf, fp32 rotation,
//     one rounding to 16 bits); inv_freq is fp32 [head_dim / 2];
//  2. if slots[i] is in [0, num_blocks * block_size): the rotated k heads and the v heads of
//     the row written to flat slot slots[i] of cache.k and cache.v (as LaunchKvCacheWrite).
//     Any other slot (negative: a padding row of a CUDA-graph batch) writes nothing to the
//     cache; the row's q and k are rotated in qkv all the same.
// The results (qkv and both caches) are bitwise those of LaunchRope + LaunchKvCacheWrite.
//
// Argument rules: those of both launchers (cache: head_dim 64 or 128, block_size a power of
// two in [8, 64], num_kv_heads and num_blocks >= 1, fp16/bf16, k and v set and 16-byte
// aligned; m, num_heads >= 0; row_stride, k_offset and v_offset multiples of 8; q, k and v
// columns inside a row; k_offset >= num_heads * head_dim; qkv 16-byte aligned), plus one of
// the fusion: the v columns overlap neither the q nor the k columns (the kernel reads v
// while it rewrites q and k). m == 0 does nothing (pointers unchecked).
absl::Status LaunchRopeKvWrite(void* qkv, int m, int row_stride, int num_heads, int k_offset,
                               int v_offset, const PagedKvLayer& cache, const int32_t* positions,
                               const int32_t* slots, const float* inv_freq, CUstream_st* stream);

}  // namespace flute::gpu
