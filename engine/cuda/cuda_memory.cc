#include "engine/cuda/cuda_memory.h"

#include <cuda_runtime.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace flute {

std::string FormatBytes(int64_t bytes) {
  return absl::StrFormat("%.2f GiB", static_cast<double>(bytes) / (1ll << 30));
}

absl::Status CudaStatus(int cuda_error, const std::string& what) {
  if (cuda_error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": CUDA error ",
                                          cudaGetErrorString(static_cast<cudaError_t>(cuda_error))));
}

CudaBuffer& CudaBuffer::operator=(CudaBuffer&& other) noexcept {
  std::swap(ptr_, other.ptr_);
  std::swap(bytes_, other.bytes_);
  std::swap(kind_, other.kind_);
  return *this;
}

CudaBuffer::~CudaBuffer() {
  if (!ptr_) return;
  if (kind_ == Kind::kDevice) {
    cudaFree(ptr_);
  } else {
    cudaFreeHost(ptr_);
  }
}

absl::StatusOr<CudaBuffer> CudaBuffer::Allocate(size_t bytes, const std::string& what, Kind kind) {
  CudaBuffer buffer;
  buffer.kind_ = kind;
  if (bytes == 0) return buffer;
  const bool device = kind == Kind::kDevice;
  const cudaError_t err = device ? cudaMalloc(&buffer.ptr_, bytes) : cudaMallocHost(&buffer.ptr_, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the error so that later calls do not report it
    buffer.ptr_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat(device ? "GPU" : "pinned host", " allocation of ",
                                                     FormatBytes(bytes), " for ", what, " failed: ",
                                                     cudaGetErrorString(err)));
  }
  buffer.bytes_ = bytes;
  if (device && cudaMemset(buffer.ptr_, 0, bytes) != cudaSuccess) {
    return absl::InternalError(absl::StrCat("cudaMemset of ", what, " failed"));
  }
  return buffer;
}

}  // namespace flute
