// The kernels of llama_ops.h in a build without CUDA: every launcher says so clearly.
#ifndef FLUTE_HAVE_CUDA
#include "kernels/llama_ops.h"

namespace flute::gpu {
namespace {

absl::Status NoCuda() {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

}  // namespace

absl::Status LaunchEmbedding(ActivationType, const int32_t*, int, const void*, int, int, float*,
                             CUstream_st*) {
  return NoCuda();
}

absl::Status LaunchAddRmsNorm(ActivationType, int, int, float, const void*, float*, const float*,
                              void*, CUstream_st*) {
  return NoCuda();
}

absl::Status LaunchRope(ActivationType, void*, int, int, int, int, int, int, const int32_t*,
                        const float*, CUstream_st*) {
  return NoCuda();
}

absl::Status LaunchSwiGlu(ActivationType, const void*, int, int, void*, CUstream_st*, int) {
  return NoCuda();
}

absl::Status LaunchLutDequantize(const lut::LutShape&, ActivationType, const uint8_t*,
                                 const uint16_t*, const float*, void*, CUstream_st*) {
  return NoCuda();
}

absl::Status LaunchFillUniform(ActivationType, void*, size_t, float, uint64_t, CUstream_st*) {
  return NoCuda();
}

absl::Status LaunchFillBytes(uint8_t*, size_t, uint64_t, CUstream_st*) { return NoCuda(); }

absl::Status LaunchFillHalfUniform(uint16_t*, size_t, float, float, uint64_t, CUstream_st*) {
  return NoCuda();
}

absl::Status LaunchFillFloat(float*, size_t, float, CUstream_st*) { return NoCuda(); }

}  // namespace flute::gpu
#endif  // FLUTE_HAVE_CUDA
