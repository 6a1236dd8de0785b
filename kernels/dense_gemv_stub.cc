// The dense GEMV in a build without CUDA: every call says so clearly.
#ifndef FLUTE_HAVE_CUDA
#include "kernels/dense_gemv.h"

namespace flute::gpu {

absl::Status LaunchDenseGemv(const DenseGemvParams&, CUstream_st*) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

}  // namespace flute::gpu
#endif  // FLUTE_HAVE_CUDA
