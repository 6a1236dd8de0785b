// LaunchLutGemm and friends in a build without CUDA: every call says so clearly.
#ifndef FLUTE_HAVE_CUDA
#include "kernels/lut_gemm.h"

namespace flute::lut {

absl::Status IsSupportedByCuda(const LutShape&) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

size_t LutGemmWorkspaceBytes(const LutShape&, int64_t) { return 0; }
int LutGemmPlannedSplits(const LutShape&, int64_t) { return 1; }

size_t LutGemmWorkspaceBytesForSplits(const LutShape&, int64_t, int) { return 0; }
int64_t LutGemmMaxRowsForForcedSplits(const LutShape&) { return 0; }
bool UsesStripKernel(const LutGemmParams&) { return false; }

absl::Status LaunchLutGemm(const LutGemmParams&, CUstream_st*) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}

}  // namespace flute::lut
#endif  // FLUTE_HAVE_CUDA
