// Small data-movement kernels the engine needs between the big ones: gathering the rows
// that need logits, and widening 16-bit rows to fp32. Conventions as in kernels/llama_ops.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/lut_gemm.h"

namespace flute::gpu {

using lut::ActivationType;

// dst[i, :] = src[rows[i], :] for i < count; rows are row_bytes wide (a multiple of 16).
absl::Status LaunchGatherRows(const void* src, size_t row_bytes, const int32_t* rows, int count,
                              void* dst, CUstream_st* stream);

// dst[i] = float(src[i]) for i < count (src in `dtype`).
absl::Status LaunchWidenToFloat(ActivationType dtype, const void* src, size_t count, float* dst,
                                CUstream_st* stream);

}  // namespace flute::gpu
