// The 16-row LUT-GEMM (lut_gemm_rows16.cu): plain calls of 9-16 rows on matrices of k = 2048 or
// 4096, with X held in registers. Internal to kernels/: LaunchLutGemm (lut_gemm.cu) takes it
// before the tensor-core kernel where it applies.
#pragma once

#include "kernels/lut_gemm.h"

struct CUstream_st;

namespace flute::lut {

// Whether the 16-row kernel takes this call: 9 <= m <= 16, k = 2048 or 4096, 2 or 4 bits,
// 16-byte aligned scales, no split_k, no fused norms (SwiGLU is fine) and no early weights (the
// engine's launches: its one block of ~225 KB per SM cannot start beside the previous kernel's
// blocks; not measured there). FLUTE_LUT_ROWS16=off turns it off (A/B runs).
bool Rows16KernelApplies(const LutGemmParams& params);

// Launches (asynchronously); returns the CUDA error of the launch.
int LaunchRows16Kernel(const LutGemmParams& params, CUstream_st* stream);

}  // namespace flute::lut
