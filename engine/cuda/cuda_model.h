// The model's weights in GPU memory, in the form the CUDA backend computes with: 16-bit
// dense matrices in the activation type, or LUT-quantized matrices in the kernel's packed
// format, with q/k/v and gate/up fused along N.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cuda/cuda_memory.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "kernels/lut_format.h"
#include "kernels/lut_gemm.h"

namespace flute {

// One matrix W[n, k] (nn.Linear layout) on the GPU.
struct GpuMatrix {
  int n = 0;
  int k = 0;
  bool lut = false;
  DeviceBuffer dense;     // !lut: act [n, k]
  lut::LutShape shape;    // lut: the packed matrix
  DeviceBuffer packed;    // lut: PackedCodeBytes(shape)
  DeviceBuffer scales;    // lut: fp16 [n, k / G]
  DeviceBuffer table;     // lut: fp32 [2^bits]
  int invariant_splits = 0;  // lut: the split-K count used for every m in batch-invariant mode
  int64_t bytes() const;  // what one product reads
};

// A projection whose output columns are the concatenation of its parts' (q|k|v, gate|up).
// One part when the parts could be fused into one matrix (dense, or LUT with one table);
// else one matrix per part, written side by side.
struct GpuProjection {
  std::vector<GpuMatrix> parts;
  // 8 for a gate/up projection stored as one matrix with its gate and up rows interleaved in
  // runs of 8 (rows [16j, 16j + 8) gate features [8j, 8j + 8), the next 8 the matching up
  // features): the layout of the LUT-GEMM's SwiGLU epilogue (lut::LutGemmParams::swiglu) and
  // of gpu::LaunchSwiGlu's interleave 8. 0: the parts' columns side by side.
  int interleave = 0;
  int n() const;
  int k() const { return parts.front().k; }
  int64_t bytes() const;
};

struct GpuLayer {
  GpuProjection qkv;       // [q_dim + 2 kv_dim, hidden]
  GpuProjection o;         // [hidden, q_dim]
  GpuProjection gate_up;   // [2 inter, hidden]
  GpuProjection down;      // [hidden, inter]
  DeviceBuffer input_norm;           // fp32 [hidden]
  DeviceBuffer post_attention_norm;  // fp32 [hidden]
};

struct GpuModel {
  lut::ActivationType dtype = lut::ActivationType::kFloat16;
  DeviceBuffer embed_tokens;  // act [vocab, hidden]
  std::vector<GpuLayer> layers;
  DeviceBuffer final_norm;    // fp32 [hidden]
  GpuProjection lm_head;      // [vocab, hidden]
  int64_t weight_bytes_per_step() const;  // every projection and the LM head
};

// Device bytes UploadModel will allocate (to check the budget before allocating).
int64_t ModelDeviceBytes(const ModelConfig& config, const ModelWeights& weights);

// Copies `weights` to the GPU, converting 16/32-bit tensors to `dtype`.
absl::StatusOr<std::unique_ptr<GpuModel>> UploadModel(const ModelConfig& config,
                                                      const ModelWeights& weights,
                                                      lut::ActivationType dtype);

// Device bytes of a random model of `config`'s shape (see CreateRandomCudaBackend).
int64_t RandomModelDeviceBytes(const ModelConfig& config);

// Generates a model of `config`'s shape on the GPU (see CreateRandomCudaBackend).
absl::StatusOr<std::unique_ptr<GpuModel>> MakeRandomModel(const ModelConfig& config,
                                                          lut::ActivationType dtype, uint64_t seed);

}  // namespace flute
