#include "engine/cuda/cuda_memory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include <cuda_runtime.h>

namespace flute {

std::string FormatBytes(int64_t bytes) {
  return absl::StrFormat("%.2f GiB", static_cast<double>(bytes) / (1ll << 30));
}

absl::Status CudaStatus(int cuda_error, const std::string& what) {
  if (cuda_error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": CUDA error ",
                                          cudaGetErrorString(static_cast<cudaError_t>(cuda_error))));
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  std::swap(ptr_, other.ptr_);
  std::swap(bytes_, other.bytes_);
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes, const std::string& what) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  const cudaError_t err = cudaMalloc(&buffer.ptr_, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free allocation error
    buffer.ptr_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat("GPU allocation of ", FormatBytes(bytes),
                                                     " for ", what, " failed: ",
                                                     cudaGetErrorString(err)));
  }
  buffer.bytes_ = bytes;
  if (cudaMemset(buffer.ptr_, 0, bytes) != cudaSuccess) {
    return absl::InternalError(absl::StrCat("cudaMemset of ", what, " failed"));
  }
  return buffer;
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  std::swap(ptr_, other.ptr_);
  std::swap(bytes_, other.bytes_);
  return *this;
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_) cudaFreeHost(ptr_);
}

absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(size_t bytes, const std::string& what) {
  PinnedBuffer buffer;
  if (bytes == 0) return buffer;
  if (cudaMallocHost(&buffer.ptr_, bytes) != cudaSuccess) {
    cudaGetLastError();
    buffer.ptr_ = nullptr;
    return absl::ResourceExhaustedError(
        absl::StrCat("pinned host allocation of ", FormatBytes(bytes), " for ", what, " failed"));
  }
  buffer.bytes_ = bytes;
  return buffer;
}

}  // namespace flute
