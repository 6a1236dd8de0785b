// Owning handles for GPU memory used by the CUDA backend (CUDA headers only in .cc files).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace flute {

// cudaMalloc'ed bytes, freed on destruction. Zero-filled when allocated.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  // ResourceExhausted naming `what` and the size when the GPU is out of memory.
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes, const std::string& what);

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// cudaMallocHost'ed (pinned) bytes, for asynchronous copies.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(PinnedBuffer&& other) noexcept { *this = std::move(other); }
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer();

  static absl::StatusOr<PinnedBuffer> Allocate(size_t bytes, const std::string& what);

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Internal error naming `what` and the CUDA error, or OK.
absl::Status CudaStatus(int cuda_error, const std::string& what);

// Bytes as "12.3 GiB" for messages.
std::string FormatBytes(int64_t bytes);

}  // namespace flute
