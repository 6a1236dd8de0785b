// The CUDA backend: the whole LLaMA forward pass on one GPU — LUT-GEMM (or cuBLAS for 16-bit
// weights) projections with q/k/v and gate/up fused, a paged fp16/bf16 KV cache, paged
// attention, sampling on the GPU, and CUDA graphs for decode steps. Declared without CUDA
// headers. The implementation is the plugin libflute_cuda.so (engine/cuda/), loaded on
// first use; without it (a build without nvcc) the factories return Unimplemented.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"

namespace flute {

// Uploads a loaded checkpoint (dense or LUT-quantized) to the current GPU.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(ModelConfig config,
                                                           std::unique_ptr<ModelWeights> weights,
                                                           const BackendOptions& options);

// A model of `config`'s shape whose weights are generated on the GPU (no checkpoint): dense
// in the activation type when config.quantization is absent, else random b-bit codes with
// the quantization's bits and group size, random fp16 scales and an NF-like table. The LM
// head stays dense (16-bit) unless quantization.modules lists "lm_head". For benchmarks.
absl::StatusOr<std::unique_ptr<Backend>> CreateRandomCudaBackend(const ModelConfig& config,
                                                                 const BackendOptions& options,
                                                                 uint64_t seed);

// Benchmark hooks of a CUDA backend (nullptr from AsCudaBench for any other backend).
class CudaBenchHooks {
 public:
  virtual ~CudaBenchHooks() = default;
  // Fills every KV block with random values, so decode steps can be timed at a given
  // context length without a prefill.
  virtual absl::Status FillKvCacheRandom(uint64_t seed) = 0;
  // Bytes of weights one forward step reads (all projections and the LM head).
  virtual int64_t WeightBytesPerStep() const = 0;
  // Bytes of K and V per cached token (all layers).
  virtual int64_t KvBytesPerToken() const = 0;
  // Waits for the GPU; returns the first asynchronous error.
  virtual absl::Status Synchronize() = 0;
  // Device-to-device copy bandwidth in bytes/s (read + written bytes over time, median of
  // several 1 GiB copies): the roofline's denominator, measured in the same process.
  virtual absl::StatusOr<double> MeasureCopyBandwidth() = 0;
  // With BackendOptions::profile: step time by kernel kind (StepProfiler::Report), else "".
  virtual std::string ProfileReport() const = 0;
  virtual void ResetProfile() = 0;  // forget the steps profiled so far (warm-up steps)
};
CudaBenchHooks* AsCudaBench(Backend* backend);

}  // namespace flute
