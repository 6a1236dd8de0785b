// Owning handles for the CUDA backend's memory (CUDA headers only in .cc files): device
// memory (cudaMalloc, zero-filled) or pinned host memory (cudaMallocHost, for asynchronous
// copies), freed on destruction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace flute {

class CudaBuffer {
 public:
  enum class Kind { kDevice, kPinnedHost };

  CudaBuffer() = default;
  CudaBuffer(CudaBuffer&& other) noexcept { *this = std::move(other); }
  CudaBuffer& operator=(CudaBuffer&& other) noexcept;
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  ~CudaBuffer();

  // ResourceExhausted naming `what` and the size when the memory is not there.
  static absl::StatusOr<CudaBuffer> Allocate(size_t bytes, const std::string& what,
                                             Kind kind = Kind::kDevice);

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  Kind kind_ = Kind::kDevice;
};

// The names the backend uses: device buffers, and pinned staging buffers.
using DeviceBuffer = CudaBuffer;
inline absl::StatusOr<CudaBuffer> AllocatePinned(size_t bytes, const std::string& what) {
  return CudaBuffer::Allocate(bytes, what, CudaBuffer::Kind::kPinnedHost);
}

// Internal error naming `what` and the CUDA error, or OK.
absl::Status CudaStatus(int cuda_error, const std::string& what);

// Bytes as "12.3 GiB" for messages.
std::string FormatBytes(int64_t bytes);

}  // namespace flute
