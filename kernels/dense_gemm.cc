#include "kernels/dense_gemm.h"

#include "absl/strings/str_cat.h"

#ifdef FLUTE_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#endif

namespace flute::gpu {

#ifndef FLUTE_HAVE_CUDA
absl::StatusOr<std::unique_ptr<DenseGemm>> DenseGemm::Create(CUstream_st*, void*, size_t) {
  return absl::UnimplementedError("this build of flute has no CUDA kernels (nvcc was not found)");
}
#else
namespace {

// The few cuBLAS entry points used, resolved from the dlopen'ed library.
struct CublasApi {
  void* library = nullptr;
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetWorkspace_v2) set_workspace = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  // Spelled out: C++ sees cublasGemmEx overloaded.
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                            int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t) = nullptr;
};

template <typename F>
bool Resolve(void* library, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(library, name));
  return *out != nullptr;
}

absl::StatusOr<CublasApi> LoadCublas() {
  static const char* const kNames[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so",
                                       "/usr/local/cuda/lib64/libcublas.so.13",
                                       "/usr/local/cuda/lib64/libcublas.so"};
  CublasApi api;
  std::string tried;
  for (const char* name : kNames) {
    api.library = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (api.library) break;
    absl::StrAppend(&tried, tried.empty() ? "" : ", ", name);
  }
  if (!api.library) {
    return absl::NotFoundError(absl::StrCat("cuBLAS not found (tried ", tried,
                                            "); the dense 16-bit path needs it: add its folder "
                                            "to LD_LIBRARY_PATH"));
  }
  const bool ok = Resolve(api.library, "cublasCreate_v2", &api.create) &&
                  Resolve(api.library, "cublasDestroy_v2", &api.destroy) &&
                  Resolve(api.library, "cublasSetStream_v2", &api.set_stream) &&
                  Resolve(api.library, "cublasSetWorkspace_v2", &api.set_workspace) &&
                  Resolve(api.library, "cublasSetMathMode", &api.set_math_mode) &&
                  Resolve(api.library, "cublasGemmEx", &api.gemm_ex);
  if (!ok) return absl::InternalError("libcublas lacks cublasGemmEx or a handle function");
  return api;
}

class CublasGemm : public DenseGemm {
 public:
  CublasGemm(CublasApi api, cublasHandle_t handle) : api_(api), handle_(handle) {}
  ~CublasGemm() override { api_.destroy(handle_); }

  absl::Status Run(ActivationType dtype, bool y_fp32, int m, int n, int k, const void* x,
                   const void* w, void* y) override {
    if (m <= 0 || n <= 0 || k <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("dense GEMM: m, n, k must be positive, got ", m, ", ", n, ", ", k));
    }
    const cudaDataType ab = dtype == ActivationType::kBFloat16 ? CUDA_R_16BF : CUDA_R_16F;
    const cudaDataType c = y_fp32 ? CUDA_R_32F : ab;
    const float alpha = 1.0f, beta = 0.0f;
    // Column-major view: Yᵀ[n, m] = W[n, k] · Xᵀ[k, m]; row-major W[n, k] is a column-major
    // [k, n] matrix, hence OP_T with lda = k; row-major X[m, k] is column-major Xᵀ[k, m].
    const cublasStatus_t status =
        api_.gemm_ex(handle_, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w, ab, k, x, ab, k,
                     &beta, y, c, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (status != CUBLAS_STATUS_SUCCESS) {
      return absl::InternalError(absl::StrCat("cublasGemmEx failed with status ",
                                              static_cast<int>(status), " (m=", m, " n=", n,
                                              " k=", k, ")"));
    }
    return absl::OkStatus();
  }

 private:
  CublasApi api_;
  cublasHandle_t handle_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DenseGemm>> DenseGemm::Create(CUstream_st* stream, void* workspace,
                                                            size_t workspace_bytes) {
  static absl::StatusOr<CublasApi> api = LoadCublas();  // loaded once per process
  if (!api.ok()) return api.status();
  cublasHandle_t handle = nullptr;
  if (api->create(&handle) != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError("cublasCreate failed (is a CUDA GPU visible?)");
  }
  auto gemm = std::make_unique<CublasGemm>(*api, handle);
  if (api->set_stream(handle, stream) != CUBLAS_STATUS_SUCCESS ||
      api->set_workspace(handle, workspace, workspace_bytes) != CUBLAS_STATUS_SUCCESS ||
      api->set_math_mode(handle, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError("cuBLAS handle setup (stream, workspace, math mode) failed");
  }
  return std::unique_ptr<DenseGemm>(std::move(gemm));
}
#endif  // FLUTE_HAVE_CUDA

}  // namespace flute::gpu
