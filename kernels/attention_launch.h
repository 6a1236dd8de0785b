// Internal to the paged attention (kernels/attention*.cu): the launchers of the decode and
// prefill kernels that attention.cu's entry points call, each defined in its own file for the
// instances T = __half or __nv_bfloat16 and kD = 64 or 128 (explicit instantiations there).
// Included only by the attention's .cu files.
#pragma once

#include <cuda_runtime.h>

#include "kernels/attention_common.cuh"

namespace flute::gpu::attn_detail {

// attention_prefill.cu: the prefill kernel of rows of sequences with query_len > 1 (grid:
// query tiles of max_query_len, query heads, sequences); the tensor-core one, or the SIMT one
// with FLUTE_ATTENTION_PREFILL=simt. Returns the launch's error.
template <typename T, int kD>
cudaError_t LaunchPrefill(const AttnArgs& a, int num_seqs, int max_query_len, cudaStream_t stream);

// attention_decode.cu: the decode kernel of the instance that holds the group (or a slice of
// kMaxGroup heads); rope: the fused RoPE + KV write, or null.
template <typename T, int kD>
cudaError_t LaunchDecodeForGroup(const AttnArgs& a, const RopeKvArgs* rope, int num_seqs, cudaStream_t stream);

// attention_decode.cu: CombineKernel, the merge of the decode splits where the split CTAs do
// not merge them (no counters).
template <typename T, int kD>
cudaError_t LaunchCombine(const AttnArgs& a, int num_seqs, cudaStream_t stream);

// attention_decode_columns.cu: the columns kernel's CTA columns per (kv head slice, sequence)
// for a fused decode launch of the instance of group size kG (0: one CTA per split instead),
// and its launch with that many columns (> 0), which LaunchDecodeForGroup takes where it fits.
template <typename T, int kD, int kG>
int DecodeColumnCount(const AttnArgs& a, int num_seqs);
template <typename T, int kD, int kG>
cudaError_t LaunchDecodeColumns(const AttnArgs& a, const RopeKvArgs& rope, int columns, int num_seqs,
                                cudaStream_t stream);

// attention_decode_columns.cu: DecodeColumnCount of the instance LaunchDecodeForGroup picks
// (fused launches only).
template <typename T, int kD>
int DecodeColumnsForGroup(int group, int ws_splits, int num_kv_heads, int num_seqs);

}  // namespace flute::gpu::attn_detail
