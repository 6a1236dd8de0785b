// LaunchSampling in a build without CUDA: every call says so clearly.
#ifndef FLUTE_HAVE_CUDA
#include "kernels/sampling.h"

namespace flute::gpu {

absl::Status LaunchSampling(float*, int, int, const SamplingRow*, const int32_t*, const int32_t*,
                            const int32_t*, SampleResult*, void*, size_t, CUstream_st*, bool) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

size_t SamplingWorkspaceBytes(int, int) { return 0; }

}  // namespace flute::gpu
#endif  // FLUTE_HAVE_CUDA
