// Host side of kernels/kernel_trace.h.
#include "kernels/kernel_trace.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"

namespace flute::trace {

#ifdef FLUTE_KERNEL_TRACE
// The setters of the files with traced kernels (FLUTE_TRACE_SETTER in each).
cudaError_t SetBufferLutStrip(void* buffer);
cudaError_t SetBufferAttention(void* buffer);
cudaError_t SetBufferAttentionColumns(void* buffer);
cudaError_t SetBufferDenseGemv(void* buffer);
cudaError_t SetBufferLlamaOps(void* buffer);
cudaError_t SetBufferSampling(void* buffer);
cudaError_t SetBufferLutTensorCore(void* buffer);
cudaError_t SetBufferDenseGemvWgmma(void* buffer);

bool Compiled() { return true; }

absl::Status Enable(void* buffer) {
  for (auto* set : {SetBufferLutStrip, SetBufferAttention, SetBufferAttentionColumns, SetBufferDenseGemv,
                    SetBufferLlamaOps, SetBufferSampling, SetBufferLutTensorCore, SetBufferDenseGemvWgmma}) {
    const cudaError_t err = set(buffer);
    if (err != cudaSuccess) return absl::InternalError(absl::StrCat("kernel trace: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}
#else
bool Compiled() { return false; }

absl::Status Enable(void*) {
  return absl::UnimplementedError("kernel trace: the kernels were built without -DFLUTE_KERNEL_TRACE=ON");
}
#endif

}  // namespace flute::trace
