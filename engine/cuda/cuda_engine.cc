// The CUDA engine plugin (libflute_cuda.so): building the backend, memory planning, and what
// is not the forward pass. Its entry points are the extern "C" functions at the end, which
// engine/cuda_plugin.cc finds with dlsym.
#include "engine/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "engine/cuda/cuda_backend_impl.h"
#include "engine/cuda_plugin.h"
#include "engine/rope.h"
#include "engine/status_macros.h"
#include "kernels/llama_ops.h"

namespace flute {
namespace {

constexpr int64_t kGraphReserveBytes = int64_t{256} << 20;  // graphs, cuBLAS, CUDA context growth
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

absl::StatusOr<lut::ActivationType> ResolveDtype(const std::string& requested,
                                                 const ModelConfig& config) {
  if (requested == "float16") return lut::ActivationType::kFloat16;
  if (requested == "bfloat16") return lut::ActivationType::kBFloat16;
  if (requested == "auto") {
    return config.torch_dtype == "float16" ? lut::ActivationType::kFloat16
                                           : lut::ActivationType::kBFloat16;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "dtype must be \"auto\", \"float16\" or \"bfloat16\", got \"", requested, "\""));
}

absl::Status CheckOptions(const BackendOptions& o) {
  if (!(o.gpu_memory_fraction > 0.0 && o.gpu_memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("gpu_memory_fraction must be in (0, 1], got ",
                                                   o.gpu_memory_fraction));
  }
  if (o.kv_block_size < 8 || o.kv_block_size > 64 || (o.kv_block_size & (o.kv_block_size - 1))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv_block_size on CUDA must be a power of two in [8, 64], got ", o.kv_block_size));
  }
  if (o.max_batch < 1 || o.max_tokens_per_step < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch and max_tokens_per_step must be >= 1, got ",
                                                   o.max_batch, " and ", o.max_tokens_per_step));
  }
  return absl::OkStatus();
}

// Memory the backend may use: the fraction of the GPU's total, less what others already hold.
struct GpuMemory {
  int64_t budget = 0;        // bytes this backend may allocate in all
  int64_t free_before = 0;   // free bytes before the weights were loaded
  std::string gpu_name;
};

absl::StatusOr<GpuMemory> MemoryBudget(const BackendOptions& o) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError("device \"cuda\": no CUDA GPU is visible to this process");
  }
  cudaDeviceProp prop;
  RETURN_IF_ERROR(CudaStatus(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties"));
  if (prop.major < 9) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device \"cuda\": the kernels are built for sm_90a (H100/H200); this GPU (", prop.name,
        ") is sm_", prop.major, prop.minor));
  }
  size_t free_bytes = 0, total_bytes = 0;
  RETURN_IF_ERROR(CudaStatus(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo"));
  GpuMemory memory;
  memory.gpu_name = prop.name;
  memory.free_before = static_cast<int64_t>(free_bytes);
  memory.budget = static_cast<int64_t>(o.gpu_memory_fraction * static_cast<double>(total_bytes)) -
                  static_cast<int64_t>(total_bytes - free_bytes);
  return memory;
}

absl::Status CheckWeightsFit(int64_t weight_bytes, int64_t budget, const BackendOptions& o) {
  if (weight_bytes + kGraphReserveBytes <= budget) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the model's weights need ", FormatBytes(weight_bytes), " of GPU memory, but only ",
      FormatBytes(std::max<int64_t>(0, budget)), " is available with --gpu-memory-fraction ",
      o.gpu_memory_fraction, " (after what other processes hold); use a GPU with more memory, "
      "fewer bits, or a higher fraction"));
}

absl::StatusOr<std::unique_ptr<Backend>> Finish(ModelConfig config, const BackendOptions& options,
                                               lut::ActivationType dtype,
                                               std::unique_ptr<GpuModel> model, const GpuMemory& memory) {
  auto backend = std::make_unique<CudaBackend>(std::move(config), options, dtype, std::move(model));
  RETURN_IF_ERROR(backend->Init(memory.budget, memory.free_before, memory.gpu_name));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace

CudaBackend::CudaBackend(ModelConfig config, const BackendOptions& options,
                         lut::ActivationType dtype, std::unique_ptr<GpuModel> model)
    : config_(std::move(config)), options_(options), dtype_(dtype), model_(std::move(model)) {}

bool CudaBackend::Ablated(const char* kind) const {
  if (options_.ablate.empty()) return false;
  for (absl::string_view ablated : absl::StrSplit(options_.ablate, ',')) {
    if (ablated == kind) return true;
  }
  return false;
}

void CudaBackend::DestroyGraphs() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

CudaBackend::~CudaBackend() {
  DestroyGraphs();
  profiler_.reset();
  dense_gemm_.reset();
  if (stream_) cudaStreamDestroy(stream_);
}

absl::Status CudaBackend::Init(int64_t budget_bytes, int64_t free_before, std::string gpu_name) {
  initial_free_ = free_before;
  gpu_name_ = std::move(gpu_name);
  if (config_.head_dim != 64 && config_.head_dim != 128) {
    return absl::UnimplementedError(absl::StrCat(
        "device \"cuda\": the attention kernels support head_dim 64 or 128; this model has head_dim ",
        config_.head_dim, "; use --device cpu"));
  }
  RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream"));
  if (options_.profile) profiler_ = std::make_unique<StepProfiler>();
  max_rows_ = (std::max({options_.max_tokens_per_step, options_.max_batch, 32}) + 7) / 8 * 8;
  max_context_ = config_.max_position_embeddings;
  for (GpuLayer& layer : model_->layers) {
    for (GpuProjection* p : {&layer.qkv, &layer.o, &layer.gate_up, &layer.down}) {
      for (GpuMatrix& m : p->parts) {
        if (!m.lut) continue;
        RETURN_IF_ERROR(lut::IsSupportedByCuda(m.shape));
        m.invariant_splits = lut::LutGemmPlannedSplits(m.shape, 1);
      }
    }
  }
  ASSIGN_OR_RETURN(cublas_ws_, DeviceBuffer::Allocate(kCublasWorkspaceBytes, "cuBLAS workspace"));
  ASSIGN_OR_RETURN(dense_gemm_, gpu::DenseGemm::Create(stream_, cublas_ws_.get(), cublas_ws_.bytes()));
  const char* gemv_env = std::getenv("FLUTE_DENSE_GEMV");
  dense_gemv_ = !options_.batch_invariant && (gemv_env == nullptr || std::string(gemv_env) != "off");
  const char* variant_env = std::getenv("FLUTE_DENSE_GEMV_VARIANT");
  if (variant_env != nullptr) dense_gemv_variant_ = std::atoi(variant_env);
  const char* max_rows_env = std::getenv("FLUTE_DENSE_GEMV_MAX_ROWS");
  if (max_rows_env != nullptr) {
    dense_gemv_max_rows_ = std::clamp(std::atoi(max_rows_env), 1, static_cast<int>(gpu::kDenseGemvMaxM));
  }
  const char* lut_rows_env = std::getenv("FLUTE_LUT_KERNEL_MAX_ROWS");
  if (lut_rows_env != nullptr) lut_kernel_max_rows_ = std::max(0, std::atoi(lut_rows_env));
  const char* cluster_env = std::getenv("FLUTE_DENSE_GEMV_CLUSTER");
  if (cluster_env != nullptr) dense_gemv_cluster_ = std::atoi(cluster_env);
  const char* epilogues_env = std::getenv("FLUTE_DENSE_GEMV_EPILOGUES");
  dense_epilogues_ = epilogues_env == nullptr || std::string(epilogues_env) != "off";
  const char* strips_env = std::getenv("FLUTE_DENSE_GEMV_STRIPS");
  if (dense_gemv_ && (strips_env == nullptr || std::string(strips_env) != "static")) {
    ASSIGN_OR_RETURN(gemv_strip_counter_, DeviceBuffer::Allocate(sizeof(unsigned int), "dense GEMV strip counter"));
  }
  for (GpuMatrix& m : model_->lm_head.parts) {
    if (m.lut) m.invariant_splits = lut::LutGemmPlannedSplits(m.shape, 1);
  }
  RETURN_IF_ERROR(AllocateActivations());
  RETURN_IF_ERROR(AllocateKvCache(budget_bytes));
  RETURN_IF_ERROR(CaptureDecodeGraphs());
  size_t free_bytes = 0, total_bytes = 0;
  RETURN_IF_ERROR(CudaStatus(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo"));
  device_bytes_ = static_cast<int64_t>(total_bytes - free_bytes);
  return absl::OkStatus();
}

size_t CudaBackend::LutWorkspaceBytes() const {
  size_t bytes = 0;
  const auto consider = [&](const GpuMatrix& m) {
    if (!m.lut) return;
    if (options_.batch_invariant) {
      const int splits = lut::LutGemmPlannedSplits(m.shape, 1);
      bytes = std::max(bytes, lut::LutGemmWorkspaceBytesForSplits(m.shape, max_rows_, splits));
      return;
    }
    // Only the passes the LUT kernel runs: above lut_kernel_max_rows_ the weights are dequantized
    // for cuBLAS (UsesLutKernel; dequant_ is allocated first), and the tensor-core kernel's Stream-K
    // partials at 2048 rows had taken ~400 MB more of the 8B model's KV budget.
    for (int rows = 1; rows <= max_rows_ && UsesLutKernel(rows); ++rows) {
      bytes = std::max(bytes, lut::LutGemmWorkspaceBytes(m.shape, rows));
    }
  };
  for (const GpuLayer& layer : model_->layers) {
    for (const GpuProjection* p : {&layer.qkv, &layer.o, &layer.gate_up, &layer.down}) {
      for (const GpuMatrix& m : p->parts) consider(m);
    }
  }
  for (const GpuMatrix& m : model_->lm_head.parts) consider(m);
  return bytes;
}

absl::Status CudaBackend::AllocateActivations() {
  const size_t rows = max_rows_, h = config_.hidden_size, inter = config_.intermediate_size;
  const size_t qkv = config_.q_dim() + 2 * config_.kv_dim(), vocab = config_.vocab_size;
  size_t largest_part = 0, largest_lut = 0;
  for (const GpuLayer& layer : model_->layers) {
    for (const GpuProjection* p : {&layer.qkv, &layer.o, &layer.gate_up, &layer.down}) {
      for (const GpuMatrix& m : p->parts) {
        if (p->parts.size() > 1) largest_part = std::max<size_t>(largest_part, m.n);
        if (m.lut) largest_lut = std::max<size_t>(largest_lut, size_t{1} * m.n * m.k);
      }
    }
  }
  ASSIGN_OR_RETURN(residual_, DeviceBuffer::Allocate(4 * rows * h, "residual stream"));
  ASSIGN_OR_RETURN(norm_sumsq_, DeviceBuffer::Allocate(4 * rows * ((h + 15) / 16), "residual sums of squares"));
  ASSIGN_OR_RETURN(normed_, DeviceBuffer::Allocate(2 * rows * h, "normed activations"));
  ASSIGN_OR_RETURN(qkv_, DeviceBuffer::Allocate(2 * rows * qkv, "q/k/v activations"));
  ASSIGN_OR_RETURN(attn_, DeviceBuffer::Allocate(2 * rows * config_.q_dim(), "attention output"));
  ASSIGN_OR_RETURN(proj_, DeviceBuffer::Allocate(2 * rows * h, "projection output"));
  ASSIGN_OR_RETURN(gate_up_, DeviceBuffer::Allocate(4 * rows * inter, "gate/up activations"));
  ASSIGN_OR_RETURN(mlp_, DeviceBuffer::Allocate(2 * rows * inter, "MLP activations"));
  ASSIGN_OR_RETURN(part_, DeviceBuffer::Allocate(2 * rows * largest_part, "unfused projection part"));
  ASSIGN_OR_RETURN(head_in_, DeviceBuffer::Allocate(2 * rows * h, "LM head input"));
  if (model_->lm_head.parts.front().lut) {
    ASSIGN_OR_RETURN(head_act_, DeviceBuffer::Allocate(2 * rows * vocab, "LM head output"));
  }
  ASSIGN_OR_RETURN(logits_, DeviceBuffer::Allocate(4 * rows * vocab, "logits"));
  if (!options_.batch_invariant && largest_lut > 0 && max_rows_ > lut_kernel_max_rows_) {
    ASSIGN_OR_RETURN(dequant_, DeviceBuffer::Allocate(2 * largest_lut, "dequantized weight (prefill)"));
  }
  ASSIGN_OR_RETURN(lut_ws_, DeviceBuffer::Allocate(LutWorkspaceBytes(), "LUT-GEMM workspace"));
  ASSIGN_OR_RETURN(attn_ws_, DeviceBuffer::Allocate(
      gpu::PagedAttentionWorkspaceBytes(max_rows_, config_.num_heads, config_.head_dim, max_context_),
      "attention workspace"));
  ASSIGN_OR_RETURN(sample_ws_, DeviceBuffer::Allocate(gpu::SamplingWorkspaceBytes(kSampleChunk, vocab),
                                                      "sampling workspace"));
  const std::vector<float> inv_freq = RopeInverseFrequencies(config_.rope, config_.head_dim);
  ASSIGN_OR_RETURN(inv_freq_, DeviceBuffer::Allocate(4 * inv_freq.size(), "RoPE frequencies"));
  RETURN_IF_ERROR(CudaStatus(cudaMemcpy(inv_freq_.get(), inv_freq.data(), 4 * inv_freq.size(),
                                        cudaMemcpyHostToDevice), "RoPE frequencies"));

  // Step inputs: six [max_rows_] int arrays (+1 for query_start), then the block tables, then
  // (16-byte aligned) up to max_rows_ sampling rows.
  const size_t max_blocks = (max_context_ + options_.kv_block_size - 1) / options_.kv_block_size;
  block_tables_offset_ = 4 * (6 * rows + 8);
  const size_t step_bytes = block_tables_offset_ + 4 * rows * max_blocks + 16 + sizeof(gpu::SamplingRow) * rows;
  ASSIGN_OR_RETURN(staging_, AllocatePinned(step_bytes, "step inputs"));
  ASSIGN_OR_RETURN(step_buffer_, DeviceBuffer::Allocate(step_bytes, "step inputs"));
  int32_t* base = step_buffer_.as<int32_t>();
  step_ = {base, base + rows, base + 2 * rows, base + 3 * rows, base + 4 * rows + 4, base + 5 * rows + 4,
           base + block_tables_offset_ / 4};
  ASSIGN_OR_RETURN(sample_results_, AllocatePinned(sizeof(gpu::SampleResult) * rows, "sampling results"));
  void* results_dev = nullptr;
  RETURN_IF_ERROR(CudaStatus(cudaHostGetDevicePointer(&results_dev, sample_results_.get(), 0),
                             "sampling results (pinned host memory mapped for the GPU)"));
  sample_results_dev_ = static_cast<gpu::SampleResult*>(results_dev);
  penalty_capacity_ = 4096;  // grown (and the graphs captured again) when a step needs more
  ASSIGN_OR_RETURN(penalty_buffer_, DeviceBuffer::Allocate(3 * 4 * penalty_capacity_, "penalty tokens"));
  const char* trace_out = std::getenv("FLUTE_KERNEL_TRACE_OUT");
  if (trace_out != nullptr && *trace_out != '\0' && trace::Compiled()) {
    ASSIGN_OR_RETURN(trace_, DeviceBuffer::Allocate(trace::BufferBytes(), "kernel trace"));
    RETURN_IF_ERROR(trace::Enable(trace_.get()));
    trace_out_ = trace_out;
  }
  return absl::OkStatus();
}

// The records of the step just synchronized, as CSV (tools/trace_timeline.py reads it).
absl::Status CudaBackend::WriteTrace() const {
  uint32_t count = 0;
  RETURN_IF_ERROR(CudaStatus(cudaMemcpy(&count, trace_.get(), 4, cudaMemcpyDeviceToHost), "kernel trace count"));
  count = std::min(count, trace::kMaxRecords);
  std::vector<trace::Record> records(count);
  RETURN_IF_ERROR(CudaStatus(cudaMemcpy(records.data(), trace_.as<char>() + trace::kHeaderBytes,
                                        count * sizeof(trace::Record), cudaMemcpyDeviceToHost),
                             "kernel trace records"));
  std::FILE* f = std::fopen(trace_out_.c_str(), "w");
  if (f == nullptr) return absl::InternalError(absl::StrCat("kernel trace: cannot write ", trace_out_));
  std::fprintf(f, "grid,kind,block,start_ns,waited_ns,end_ns,aux0,aux1\n");
  for (const trace::Record& r : records) {
    std::fprintf(f, "%llu,%u,%u,%llu,%llu,%llu,%d,%d\n", static_cast<unsigned long long>(r.grid), r.kind, r.block,
                 static_cast<unsigned long long>(r.start), static_cast<unsigned long long>(r.waited),
                 static_cast<unsigned long long>(r.end), r.aux0, r.aux1);
  }
  std::fclose(f);
  return absl::OkStatus();
}

int64_t CudaBackend::KvBytesPerToken() const {
  return int64_t{2} * 2 * config_.num_layers * config_.kv_dim();
}

absl::Status CudaBackend::AllocateKvCache(int64_t budget_bytes) {
  size_t free_bytes = 0, total_bytes = 0;
  RETURN_IF_ERROR(CudaStatus(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo"));
  // budget_bytes was measured before the weights were loaded: everything allocated since
  // (weights, activations, workspaces) counts against it.
  const int64_t allocated_since = initial_free_ - static_cast<int64_t>(free_bytes);
  const int64_t block_bytes = KvBytesPerToken() * options_.kv_block_size;
  int64_t kv_bytes = std::min<int64_t>(budget_bytes - allocated_since, static_cast<int64_t>(free_bytes)) -
                     kGraphReserveBytes;
  if (options_.gpu_kv_cache_bytes > 0) kv_bytes = std::min(kv_bytes, options_.gpu_kv_cache_bytes);
  const int64_t blocks = kv_bytes / block_bytes - 1;  // one more block pads graph batches
  const int64_t needed = (max_context_ + options_.kv_block_size - 1) / options_.kv_block_size;
  if (blocks < needed) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache: after weights and activations, --gpu-memory-fraction ", options_.gpu_memory_fraction,
        " leaves ", FormatBytes(std::max<int64_t>(0, kv_bytes)), " = ", std::max<int64_t>(0, blocks),
        " blocks of ", options_.kv_block_size, " tokens, fewer than one full context of ",
        max_context_, " tokens (", needed, " blocks); raise --gpu-memory-fraction, shorten the context "
        "with --max-model-len, or use a smaller model"));
  }
  num_kv_blocks_ = static_cast<int>(std::min<int64_t>(blocks, 1 << 30));
  const int64_t physical = num_kv_blocks_ + 1;
  ASSIGN_OR_RETURN(kv_storage_, DeviceBuffer::Allocate(static_cast<size_t>(physical * block_bytes), "KV cache"));
  const int64_t half = physical * options_.kv_block_size * config_.kv_dim() * 2;  // bytes of K (or V) per layer
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    gpu::PagedKvLayer kv;
    kv.k = kv_storage_.as<char>() + (2 * layer) * half;
    kv.v = kv_storage_.as<char>() + (2 * layer + 1) * half;
    kv.num_blocks = static_cast<int>(physical);
    kv.block_size = options_.kv_block_size;
    kv.num_kv_heads = config_.num_kv_heads;
    kv.head_dim = config_.head_dim;
    kv.dtype = dtype_;
    kv_layers_.push_back(kv);
  }
  return absl::OkStatus();
}

std::string CudaBackend::Describe() const {
  const GpuMatrix& sample = model_->layers.front().gate_up.parts.front();
  std::string weights = sample.lut ? absl::StrCat("lut ", sample.shape.bits, "-bit g", sample.shape.group_size)
                                   : std::string("dense 16-bit");
  return absl::StrCat("cuda (", gpu_name_, "), ", dtype_ == lut::ActivationType::kBFloat16 ? "bf16" : "fp16",
                      " activations, ", weights, " weights, LM head ",
                      model_->lm_head.parts.front().lut ? "lut" : "dense", ", ", num_kv_blocks_,
                      " KV blocks of ", options_.kv_block_size, " tokens, ",
                      options_.batch_invariant ? "batch-invariant" : "LUT kernel by batch", ", CUDA graphs ",
                      options_.cuda_graphs ? "on" : "off");
}

absl::Status CudaBackend::FillKvCacheRandom(uint64_t seed) {
  RETURN_IF_ERROR(gpu::LaunchFillUniform(dtype_, kv_storage_.get(), kv_storage_.bytes() / 2, 1.0f, seed, stream_));
  return Synchronize();
}

absl::Status CudaBackend::Synchronize() {
  RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), "CUDA stream"));
  staging_in_flight_ = false;
  return absl::OkStatus();
}

absl::StatusOr<double> CudaBackend::MeasureCopyBandwidth() {
  constexpr size_t kBytes = size_t{1} << 30;
  ASSIGN_OR_RETURN(DeviceBuffer a, DeviceBuffer::Allocate(kBytes, "bandwidth probe"));
  ASSIGN_OR_RETURN(DeviceBuffer b, DeviceBuffer::Allocate(kBytes, "bandwidth probe"));
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> ms;
  for (int i = 0; i < 11; ++i) {
    cudaEventRecord(start, stream_);
    cudaMemcpyAsync(b.get(), a.get(), kBytes, cudaMemcpyDeviceToDevice, stream_);
    cudaEventRecord(stop, stream_);
    RETURN_IF_ERROR(CudaStatus(cudaEventSynchronize(stop), "bandwidth probe"));
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    if (i > 0) ms.push_back(t);  // the first copy warms up
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return 2.0 * kBytes / (ms[ms.size() / 2] * 1e-3);
}

namespace {

absl::StatusOr<std::unique_ptr<Backend>> CreateFromCheckpoint(ModelConfig config,
                                                              std::unique_ptr<ModelWeights> weights,
                                                              const BackendOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  ASSIGN_OR_RETURN(lut::ActivationType dtype, ResolveDtype(options.dtype, config));
  ASSIGN_OR_RETURN(GpuMemory memory, MemoryBudget(options));
  RETURN_IF_ERROR(CheckWeightsFit(ModelDeviceBytes(config, *weights), memory.budget, options));
  ASSIGN_OR_RETURN(std::unique_ptr<GpuModel> model, UploadModel(config, *weights, dtype));
  weights.reset();  // the host copy (a mapping) is no longer needed
  return Finish(std::move(config), options, dtype, std::move(model), memory);
}

absl::StatusOr<std::unique_ptr<Backend>> CreateRandom(const ModelConfig& config,
                                                     const BackendOptions& options, uint64_t seed) {
  RETURN_IF_ERROR(CheckOptions(options));
  ASSIGN_OR_RETURN(lut::ActivationType dtype, ResolveDtype(options.dtype, config));
  ASSIGN_OR_RETURN(GpuMemory memory, MemoryBudget(options));
  RETURN_IF_ERROR(CheckWeightsFit(RandomModelDeviceBytes(config), memory.budget, options));
  ASSIGN_OR_RETURN(std::unique_ptr<GpuModel> model, MakeRandomModel(config, dtype, seed));
  return Finish(config, options, dtype, std::move(model), memory);
}

}  // namespace
}  // namespace flute

// ---- the plugin's entry points (engine/cuda_plugin.h declares their types) ----
extern "C" {

int flute_cuda_plugin_version() { return flute::kCudaPluginVersion; }

void flute_cuda_create_backend(flute::ModelConfig* config, flute::ModelWeights* weights,
                               const flute::BackendOptions* options,
                               absl::StatusOr<std::unique_ptr<flute::Backend>>* out) {
  *out = flute::CreateFromCheckpoint(std::move(*config), std::unique_ptr<flute::ModelWeights>(weights),
                                     *options);
}

void flute_cuda_create_random_backend(const flute::ModelConfig* config, const flute::BackendOptions* options,
                                      uint64_t seed, absl::StatusOr<std::unique_ptr<flute::Backend>>* out) {
  *out = flute::CreateRandom(*config, *options, seed);
}

flute::CudaBenchHooks* flute_cuda_as_bench(flute::Backend* backend) {
  return dynamic_cast<flute::CudaBackend*>(backend);
}

}  // extern "C"
