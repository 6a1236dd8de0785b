#include "kernels/row_ops.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/pdl.cuh"

namespace flute::gpu {
namespace {

// One block per gathered row; 16-byte copies.
__global__ void GatherRowsKernel(const uint4* src, int row_vectors, const int32_t* rows,
                                 uint4* dst) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  const int64_t from = static_cast<int64_t>(rows[blockIdx.x]) * row_vectors;
  const int64_t to = static_cast<int64_t>(blockIdx.x) * row_vectors;
  for (int i = threadIdx.x; i < row_vectors; i += blockDim.x) dst[to + i] = src[from + i];
}

template <typename T>
__global__ void WidenKernel(const T* src, size_t count, float* dst) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    dst[i] = static_cast<float>(src[i]);
  }
}

absl::Status LaunchStatus(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " launch failed: ", cudaGetErrorString(err)));
}

}  // namespace

absl::Status LaunchGatherRows(const void* src, size_t row_bytes, const int32_t* rows, int count,
                              void* dst, CUstream_st* stream) {
  if (row_bytes % 16 != 0 || count < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GatherRows: row_bytes must be a multiple of 16 and count >= 0, got ", row_bytes, ", ",
        count));
  }
  if (count == 0) return absl::OkStatus();
  const int vectors = static_cast<int>(row_bytes / 16);
  LaunchWithPdl(GatherRowsKernel, count, 256, 0, stream, static_cast<const uint4*>(src), vectors, rows,
                                             static_cast<uint4*>(dst));
  return LaunchStatus("GatherRows");
}

absl::Status LaunchWidenToFloat(ActivationType dtype, const void* src, size_t count, float* dst,
                                CUstream_st* stream) {
  if (count == 0) return absl::OkStatus();
  const int blocks = static_cast<int>(std::min<size_t>((count + 255) / 256, 4096));
  if (dtype == ActivationType::kBFloat16) {
    LaunchWithPdl(WidenKernel<__nv_bfloat16>, blocks, 256, 0, stream, static_cast<const __nv_bfloat16*>(src), count, dst);
  } else {
    LaunchWithPdl(WidenKernel<__half>, blocks, 256, 0, stream, static_cast<const __half*>(src), count, dst);
  }
  return LaunchStatus("WidenToFloat");
}

}  // namespace flute::gpu
