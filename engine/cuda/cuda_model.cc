#include "engine/cuda/cuda_model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/dtype.h"
#include "engine/lut_linear.h"
#include "engine/status_macros.h"
#include "kernels/llama_ops.h"

namespace flute {
namespace {

using lut::ActivationType;

constexpr size_t kConvertChunk = size_t{1} << 22;  // elements converted per host pass

uint16_t ToActivation(float value, ActivationType dtype) {
  return dtype == ActivationType::kBFloat16 ? FloatToBf16(value) : FloatToHalf(value);
}

bool SameType(DType stored, ActivationType dtype) {
  return (stored == DType::kBF16 && dtype == ActivationType::kBFloat16) ||
         (stored == DType::kF16 && dtype == ActivationType::kFloat16);
}

// Copies `count` elements of a 16/32-bit host tensor to dst (act), converting in chunks.
absl::Status CopyConverted(const TensorView& view, size_t first, size_t count,
                           ActivationType dtype, uint16_t* dst) {
  const size_t esize = DTypeSize(view.dtype);
  const char* src = static_cast<const char*>(view.data) + first * esize;
  if (SameType(view.dtype, dtype)) {
    return CudaStatus(cudaMemcpy(dst, src, count * 2, cudaMemcpyHostToDevice), view.name);
  }
  std::vector<float> wide(std::min(count, kConvertChunk));
  std::vector<uint16_t> narrow(wide.size());
  for (size_t done = 0; done < count; done += wide.size()) {
    const size_t n = std::min(wide.size(), count - done);
    ConvertToFloat(view.dtype, src + done * esize, n, wide.data());
    for (size_t i = 0; i < n; ++i) narrow[i] = ToActivation(wide[i], dtype);
    RETURN_IF_ERROR(CudaStatus(cudaMemcpy(dst + done, narrow.data(), n * 2, cudaMemcpyHostToDevice),
                               view.name));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceBuffer> UploadFloats(const std::vector<float>& values, const std::string& what) {
  ASSIGN_OR_RETURN(DeviceBuffer buffer, DeviceBuffer::Allocate(values.size() * 4, what));
  RETURN_IF_ERROR(CudaStatus(
      cudaMemcpy(buffer.get(), values.data(), values.size() * 4, cudaMemcpyHostToDevice), what));
  return buffer;
}

// Dense parts stacked along n into one act matrix.
absl::StatusOr<GpuMatrix> UploadDenseStack(const std::vector<const DenseLinear*>& parts,
                                           ActivationType dtype) {
  GpuMatrix m;
  m.k = parts.front()->in_features();
  for (const DenseLinear* p : parts) m.n += p->out_features();
  ASSIGN_OR_RETURN(m.dense, DeviceBuffer::Allocate(size_t{2} * m.n * m.k, parts.front()->view().name));
  size_t row = 0;
  for (const DenseLinear* p : parts) {
    const size_t count = static_cast<size_t>(p->out_features()) * m.k;
    RETURN_IF_ERROR(CopyConverted(p->view(), 0, count, dtype, m.dense.as<uint16_t>() + row * m.k));
    row += p->out_features();
  }
  return m;
}

// LUT parts sharing k, bits, group size and table, stacked along n: the packed format is
// strip-major, so stacking is concatenating the packed bytes and the scale rows.
absl::StatusOr<GpuMatrix> UploadLutStack(const std::vector<const LutLinear*>& parts) {
  GpuMatrix m;
  m.lut = true;
  m.shape = parts.front()->shape();
  m.shape.n = 0;
  for (const LutLinear* p : parts) m.shape.n += p->shape().n;
  m.n = static_cast<int>(m.shape.n);
  m.k = static_cast<int>(m.shape.k);
  const size_t scale_cols = m.shape.k / m.shape.group_size;
  ASSIGN_OR_RETURN(m.packed, DeviceBuffer::Allocate(lut::PackedCodeBytes(m.shape), "packed codes"));
  ASSIGN_OR_RETURN(m.scales, DeviceBuffer::Allocate(2 * scale_cols * m.shape.n, "scales"));
  ASSIGN_OR_RETURN(m.table, UploadFloats(parts.front()->table(), "LUT table"));
  size_t packed_offset = 0, scale_offset = 0;
  for (const LutLinear* p : parts) {
    const size_t packed_bytes = lut::PackedCodeBytes(p->shape());
    const size_t scale_bytes = 2 * scale_cols * p->shape().n;
    RETURN_IF_ERROR(CudaStatus(cudaMemcpy(m.packed.as<char>() + packed_offset, p->packed(),
                                          packed_bytes, cudaMemcpyHostToDevice), "packed codes"));
    RETURN_IF_ERROR(CudaStatus(cudaMemcpy(m.scales.as<char>() + scale_offset, p->scales_f16(),
                                          scale_bytes, cudaMemcpyHostToDevice), "scales"));
    packed_offset += packed_bytes;
    scale_offset += scale_bytes;
  }
  return m;
}

bool LutStackable(const std::vector<const LutLinear*>& parts) {
  for (const LutLinear* p : parts) {
    if (!p) return false;
    const lut::LutShape& a = p->shape();
    const lut::LutShape& b = parts.front()->shape();
    if (a.k != b.k || a.bits != b.bits || a.group_size != b.group_size ||
        p->table() != parts.front()->table()) {
      return false;
    }
  }
  return true;
}

// Gate and up as one matrix with rows interleaved by 8 (GpuProjection::interleave): rows
// [16j, 16j + 8) gate features [8j, 8j + 8), the next 8 the matching up features. Dense rows
// are stacked (and converted to act) first, then re-ordered on the device; LUT codes are
// re-ordered on the host by moving packed pair fields (lut::InterleaveRowHalves).
absl::StatusOr<GpuMatrix> UploadInterleavedGateUp(const Linear& gate, const Linear& up, ActivationType dtype) {
  if (auto* g = dynamic_cast<const DenseLinear*>(&gate)) {
    ASSIGN_OR_RETURN(GpuMatrix stacked, UploadDenseStack({g, dynamic_cast<const DenseLinear*>(&up)}, dtype));
    GpuMatrix m;
    m.n = stacked.n;
    m.k = stacked.k;
    ASSIGN_OR_RETURN(m.dense, DeviceBuffer::Allocate(stacked.dense.bytes(), g->view().name));
    const size_t inter = m.n / 2, block = size_t{2} * m.k * 8;  // bytes of 8 rows
    for (int half = 0; half < 2; ++half) {
      RETURN_IF_ERROR(CudaStatus(cudaMemcpy2D(m.dense.as<char>() + half * block, 2 * block,
                                              stacked.dense.as<char>() + half * inter / 8 * block, block, block,
                                              inter / 8, cudaMemcpyDeviceToDevice),
                                 "gate/up interleave"));
    }
    return m;
  }
  auto* g = dynamic_cast<const LutLinear*>(&gate);
  auto* u = dynamic_cast<const LutLinear*>(&up);
  const lut::LutShape& half = g->shape();
  GpuMatrix m;
  m.lut = true;
  m.shape = {2 * half.n, half.k, half.bits, half.group_size};
  m.n = static_cast<int>(m.shape.n);
  m.k = static_cast<int>(m.shape.k);
  std::vector<uint8_t> packed(lut::PackedCodeBytes(m.shape));
  lut::InterleaveRowHalves(half, g->packed(), u->packed(), packed.data());
  const size_t scale_row_bytes = size_t{2} * (half.k / half.group_size);
  std::vector<uint8_t> scales(scale_row_bytes * m.shape.n);
  lut::InterleaveRowBlocks(g->scales_f16(), u->scales_f16(), half.n, scale_row_bytes, scales.data());
  ASSIGN_OR_RETURN(m.packed, DeviceBuffer::Allocate(packed.size(), "packed codes"));
  ASSIGN_OR_RETURN(m.scales, DeviceBuffer::Allocate(scales.size(), "scales"));
  ASSIGN_OR_RETURN(m.table, UploadFloats(g->table(), "LUT table"));
  RETURN_IF_ERROR(CudaStatus(cudaMemcpy(m.packed.get(), packed.data(), packed.size(), cudaMemcpyHostToDevice),
                             "packed codes"));
  RETURN_IF_ERROR(CudaStatus(cudaMemcpy(m.scales.get(), scales.data(), scales.size(), cudaMemcpyHostToDevice),
                             "scales"));
  return m;
}

absl::StatusOr<GpuProjection> UploadProjection(const std::vector<const Linear*>& parts,
                                               ActivationType dtype) {
  std::vector<const DenseLinear*> dense;
  std::vector<const LutLinear*> luts;
  for (const Linear* p : parts) {
    dense.push_back(dynamic_cast<const DenseLinear*>(p));
    luts.push_back(dynamic_cast<const LutLinear*>(p));
  }
  GpuProjection projection;
  if (std::all_of(dense.begin(), dense.end(), [](auto* d) { return d != nullptr; })) {
    ASSIGN_OR_RETURN(GpuMatrix m, UploadDenseStack(dense, dtype));
    projection.parts.push_back(std::move(m));
    return projection;
  }
  if (LutStackable(luts)) {
    ASSIGN_OR_RETURN(GpuMatrix m, UploadLutStack(luts));
    projection.parts.push_back(std::move(m));
    return projection;
  }
  for (size_t i = 0; i < parts.size(); ++i) {  // unfusable: one matrix per part
    if (dense[i]) {
      ASSIGN_OR_RETURN(GpuMatrix m, UploadDenseStack({dense[i]}, dtype));
      projection.parts.push_back(std::move(m));
    } else if (luts[i]) {
      ASSIGN_OR_RETURN(GpuMatrix m, UploadLutStack({luts[i]}));
      projection.parts.push_back(std::move(m));
    } else {
      return absl::UnimplementedError(absl::StrCat("CUDA backend: unsupported weight ", parts[i]->Describe()));
    }
  }
  return projection;
}

// gate_proj and up_proj: one interleaved matrix (GpuProjection::interleave = 8) when they
// stack (both dense, or LUT with one table) with the same n, a multiple of 8 (of 16 for LUT,
// the format's rule); else as UploadProjection.
absl::StatusOr<GpuProjection> UploadGateUp(const Linear& gate, const Linear& up, ActivationType dtype) {
  auto* gd = dynamic_cast<const DenseLinear*>(&gate);
  auto* ud = dynamic_cast<const DenseLinear*>(&up);
  auto* gl = dynamic_cast<const LutLinear*>(&gate);
  auto* ul = dynamic_cast<const LutLinear*>(&up);
  const bool dense = gd && ud && gd->out_features() == ud->out_features() && gd->out_features() % 8 == 0;
  const bool lut = gl && ul && LutStackable({gl, ul}) && gl->shape().n == ul->shape().n && gl->shape().n % 16 == 0;
  if (!dense && !lut) return UploadProjection({&gate, &up}, dtype);
  GpuProjection p;
  ASSIGN_OR_RETURN(GpuMatrix m, UploadInterleavedGateUp(gate, up, dtype));
  p.parts.push_back(std::move(m));
  p.interleave = 8;
  return p;
}

int64_t LinearDeviceBytes(const Linear& linear) {
  if (auto* l = dynamic_cast<const LutLinear*>(&linear)) {
    return static_cast<int64_t>(lut::PackedCodeBytes(l->shape())) +
           2 * l->shape().n * (l->shape().k / l->shape().group_size) + 64;
  }
  return int64_t{2} * linear.out_features() * linear.in_features();
}

// ---- random models ----

std::vector<float> RandomTable(int bits) {  // evenly spaced in [-1, 1]
  const int size = 1 << bits;
  std::vector<float> table(size);
  for (int i = 0; i < size; ++i) table[i] = -1.0f + 2.0f * i / (size - 1);
  return table;
}

absl::StatusOr<GpuMatrix> RandomMatrix(int n, int k, const std::optional<QuantizationConfig>& quant,
                                       bool quantized, ActivationType dtype, uint64_t seed) {
  GpuMatrix m;
  m.n = n;
  m.k = k;
  // Entries of standard deviation ~0.5/sqrt(k) keep activations of order one layer to layer.
  const float stddev = 0.5f / std::sqrt(static_cast<float>(k));
  if (!quantized) {
    ASSIGN_OR_RETURN(m.dense, DeviceBuffer::Allocate(size_t{2} * n * k, "random dense weight"));
    RETURN_IF_ERROR(gpu::LaunchFillUniform(dtype, m.dense.get(), size_t{1} * n * k,
                                           stddev * std::sqrt(3.0f), seed, nullptr));
    return m;
  }
  m.lut = true;
  m.shape = {n, k, quant->bits, quant->group_size};
  RETURN_IF_ERROR(lut::CheckShape(m.shape));
  const size_t scale_count = static_cast<size_t>(n) * (k / quant->group_size);
  ASSIGN_OR_RETURN(m.packed, DeviceBuffer::Allocate(lut::PackedCodeBytes(m.shape), "random codes"));
  ASSIGN_OR_RETURN(m.scales, DeviceBuffer::Allocate(2 * scale_count, "random scales"));
  ASSIGN_OR_RETURN(m.table, UploadFloats(RandomTable(quant->bits), "LUT table"));
  RETURN_IF_ERROR(gpu::LaunchFillBytes(m.packed.as<uint8_t>(), m.packed.bytes(), seed, nullptr));
  // Table entries have rms ~0.6, so scales near stddev / 0.6.
  RETURN_IF_ERROR(gpu::LaunchFillHalfUniform(m.scales.as<uint16_t>(), scale_count, 0.8f * stddev,
                                             1.6f * stddev, seed + 1, nullptr));
  return m;
}

absl::StatusOr<GpuProjection> RandomProjection(int n, int k, const ModelConfig& config,
                                               const char* kind, ActivationType dtype,
                                               uint64_t seed) {
  const bool quantized = config.quantization && config.quantization->IsQuantized(kind);
  GpuProjection p;
  ASSIGN_OR_RETURN(GpuMatrix m, RandomMatrix(n, k, config.quantization, quantized, dtype, seed));
  p.parts.push_back(std::move(m));
  return p;
}

absl::StatusOr<DeviceBuffer> Ones(int count, const std::string& what) {
  ASSIGN_OR_RETURN(DeviceBuffer b, DeviceBuffer::Allocate(size_t{4} * count, what));
  RETURN_IF_ERROR(gpu::LaunchFillFloat(b.as<float>(), count, 1.0f, nullptr));
  return b;
}

int64_t RandomMatrixBytes(int n, int k, const ModelConfig& config, const char* kind) {
  if (config.quantization && config.quantization->IsQuantized(kind)) {
    const lut::LutShape s{n, k, config.quantization->bits, config.quantization->group_size};
    return static_cast<int64_t>(lut::PackedCodeBytes(s)) + int64_t{2} * n * (k / s.group_size);
  }
  return int64_t{2} * n * k;
}

}  // namespace

int64_t GpuMatrix::bytes() const {
  if (!lut) return static_cast<int64_t>(dense.bytes());
  return static_cast<int64_t>(packed.bytes() + scales.bytes());
}

int GpuProjection::n() const {
  int total = 0;
  for (const GpuMatrix& m : parts) total += m.n;
  return total;
}

int64_t GpuProjection::bytes() const {
  int64_t total = 0;
  for (const GpuMatrix& m : parts) total += m.bytes();
  return total;
}

int64_t GpuModel::weight_bytes_per_step() const {
  int64_t total = lm_head.bytes();
  for (const GpuLayer& l : layers) total += l.qkv.bytes() + l.o.bytes() + l.gate_up.bytes() + l.down.bytes();
  return total;
}

int64_t ModelDeviceBytes(const ModelConfig& config, const ModelWeights& weights) {
  int64_t total = int64_t{2} * config.vocab_size * config.hidden_size;  // embedding
  for (const LayerWeights& l : weights.layers) {
    for (const Linear* p : {l.q_proj.get(), l.k_proj.get(), l.v_proj.get(), l.o_proj.get(),
                            l.gate_proj.get(), l.up_proj.get(), l.down_proj.get()}) {
      total += LinearDeviceBytes(*p);
    }
  }
  return total + LinearDeviceBytes(*weights.lm_head);
}

absl::StatusOr<std::unique_ptr<GpuModel>> UploadModel(const ModelConfig& config,
                                                      const ModelWeights& weights,
                                                      ActivationType dtype) {
  auto model = std::make_unique<GpuModel>();
  model->dtype = dtype;
  const TensorView& embed = *weights.embed_tokens;
  ASSIGN_OR_RETURN(model->embed_tokens,
                   DeviceBuffer::Allocate(size_t{2} * embed.num_elements(), embed.name));
  RETURN_IF_ERROR(CopyConverted(embed, 0, embed.num_elements(), dtype, model->embed_tokens.as<uint16_t>()));
  for (const LayerWeights& l : weights.layers) {
    GpuLayer layer;
    ASSIGN_OR_RETURN(layer.qkv, UploadProjection({l.q_proj.get(), l.k_proj.get(), l.v_proj.get()}, dtype));
    ASSIGN_OR_RETURN(layer.o, UploadProjection({l.o_proj.get()}, dtype));
    ASSIGN_OR_RETURN(layer.gate_up, UploadGateUp(*l.gate_proj, *l.up_proj, dtype));
    ASSIGN_OR_RETURN(layer.down, UploadProjection({l.down_proj.get()}, dtype));
    ASSIGN_OR_RETURN(layer.input_norm, UploadFloats(l.input_norm, "input_layernorm"));
    ASSIGN_OR_RETURN(layer.post_attention_norm, UploadFloats(l.post_attention_norm, "post_attention_layernorm"));
    model->layers.push_back(std::move(layer));
  }
  ASSIGN_OR_RETURN(model->final_norm, UploadFloats(weights.final_norm, "model.norm"));
  ASSIGN_OR_RETURN(model->lm_head, UploadProjection({weights.lm_head.get()}, dtype));
  return model;
}

int64_t RandomModelDeviceBytes(const ModelConfig& c) {
  const int h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
  int64_t per_layer = RandomMatrixBytes(q + 2 * kv, h, c, "q_proj") + RandomMatrixBytes(h, q, c, "o_proj") +
                      RandomMatrixBytes(2 * inter, h, c, "gate_proj") +
                      RandomMatrixBytes(h, inter, c, "down_proj");
  return int64_t{2} * c.vocab_size * h + per_layer * c.num_layers +
         RandomMatrixBytes(c.vocab_size, h, c, "lm_head");
}

absl::StatusOr<std::unique_ptr<GpuModel>> MakeRandomModel(const ModelConfig& c, ActivationType dtype,
                                                          uint64_t seed) {
  auto model = std::make_unique<GpuModel>();
  model->dtype = dtype;
  const int h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
  ASSIGN_OR_RETURN(model->embed_tokens, DeviceBuffer::Allocate(size_t{2} * c.vocab_size * h, "embedding"));
  RETURN_IF_ERROR(gpu::LaunchFillUniform(dtype, model->embed_tokens.get(), size_t{1} * c.vocab_size * h,
                                         1.0f, seed, nullptr));
  for (int i = 0; i < c.num_layers; ++i) {
    const uint64_t s = seed + 16 * (i + 1);
    GpuLayer layer;
    ASSIGN_OR_RETURN(layer.qkv, RandomProjection(q + 2 * kv, h, c, "q_proj", dtype, s));
    ASSIGN_OR_RETURN(layer.o, RandomProjection(h, q, c, "o_proj", dtype, s + 2));
    ASSIGN_OR_RETURN(layer.gate_up, RandomProjection(2 * inter, h, c, "gate_proj", dtype, s + 4));
    if (inter % 8 == 0) layer.gate_up.interleave = 8;  // random rows: any order is the same model
    ASSIGN_OR_RETURN(layer.down, RandomProjection(h, inter, c, "down_proj", dtype, s + 6));
    ASSIGN_OR_RETURN(layer.input_norm, Ones(h, "input_layernorm"));
    ASSIGN_OR_RETURN(layer.post_attention_norm, Ones(h, "post_attention_layernorm"));
    model->layers.push_back(std::move(layer));
  }
  ASSIGN_OR_RETURN(model->final_norm, Ones(h, "model.norm"));
  ASSIGN_OR_RETURN(model->lm_head, RandomProjection(c.vocab_size, h, c, "lm_head", dtype, seed + 7));
  RETURN_IF_ERROR(CudaStatus(cudaDeviceSynchronize(), "random model generation"));
  return model;
}

}  // namespace flute
