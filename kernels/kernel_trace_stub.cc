// The kernel trace in a build without CUDA: nothing to trace.
#ifndef FLUTE_HAVE_CUDA
#include "kernels/kernel_trace.h"

namespace flute::trace {

bool Compiled() { return false; }

absl::Status Enable(void*) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

}  // namespace flute::trace
#endif  // FLUTE_HAVE_CUDA
