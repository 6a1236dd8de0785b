// The row kernels in a build without CUDA: every call says so clearly.
#ifndef FLUTE_HAVE_CUDA
#include "kernels/row_ops.h"

namespace flute::gpu {

absl::Status LaunchGatherRows(const void*, size_t, const int32_t*, int, void*, CUstream_st*) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

absl::Status LaunchWidenToFloat(ActivationType, const void*, size_t, float*, CUstream_st*) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

}  // namespace flute::gpu
#endif  // FLUTE_HAVE_CUDA
