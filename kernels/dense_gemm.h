// Dense 16-bit GEMM on the GPU through cuBLAS, loaded with dlopen at run time: the server
// process must not LINK cuBLAS, whose static TLS stops prometheus-cpp's HTTP threads from
// starting (toolchain.md, trap 3). Libraries loaded with dlopen do not count against it.
//
//   Y[m, n] = X[m, k] · W[n, k]ᵀ   (W in the nn.Linear layout; all row-major)
//
// X and W are fp16 or bf16 (the same type); Y is that type or fp32; fp32 accumulation.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/lut_gemm.h"

namespace flute::gpu {

using lut::ActivationType;

class DenseGemm {
 public:
  // Loads libcublas (NotFound with the names tried when it is absent) and creates a handle
  // bound to `stream` that uses the caller's `workspace` (device memory, >= 32 MiB advised),
  // so that calls never allocate and can be captured in a CUDA graph.
  static absl::StatusOr<std::unique_ptr<DenseGemm>> Create(CUstream_st* stream, void* workspace,
                                                           size_t workspace_bytes);
  virtual ~DenseGemm() = default;

  // Launches on the handle's stream. y_fp32: Y is fp32, else `dtype`.
  virtual absl::Status Run(ActivationType dtype, bool y_fp32, int m, int n, int k, const void* x,
                           const void* w, void* y) = 0;
};

}  // namespace flute::gpu
