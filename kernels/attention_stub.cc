// The paged KV cache and attention entry points in a build without CUDA: every call says so.
#ifndef FLUTE_HAVE_CUDA
#include "kernels/attention.h"

namespace flute::gpu {

absl::Status LaunchKvCacheWrite(const PagedKvLayer&, const void*, int, int, int, int, const int32_t*,
                                CUstream_st*) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

absl::Status LaunchPagedAttention(const PagedKvLayer&, const void*, int, int, float,
                                  const AttentionBatch&, void*, void*, size_t, CUstream_st*,
                                  const FusedRopeKv*) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

size_t PagedAttentionWorkspaceBytes(int, int, int, int) { return 0; }

int PagedAttentionDecodeColumns(ActivationType, int, int, int, int, int) { return 0; }

}  // namespace flute::gpu
#endif  // FLUTE_HAVE_CUDA
