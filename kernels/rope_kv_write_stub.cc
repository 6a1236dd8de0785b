// LaunchRopeKvWrite in a build without CUDA: it says so clearly.
#ifndef FLUTE_HAVE_CUDA
#include "kernels/rope_kv_write.h"

namespace flute::gpu {

absl::Status LaunchRopeKvWrite(void*, int, int, int, int, int, const PagedKvLayer&, const int32_t*,
                               const int32_t*, const float*, CUstream_st*) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

}  // namespace flute::gpu
#endif  // FLUTE_HAVE_CUDA
