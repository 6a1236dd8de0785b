// The CUDA backend's forward pass: planning a step on the host, uploading its inputs, and
// the kernel sequence of the LLaMA decoder, replayed from CUDA graphs for decode steps.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_backend_impl.h"
#include "engine/status_macros.h"
#include "kernels/dense_gemv.h"
#include "kernels/llama_ops.h"
#include "kernels/rope_kv_write.h"
#include "kernels/row_ops.h"

namespace flute {
namespace {

// Tokens [begin, end) of batch entry `entry`, run in one pass.
struct Piece {
  int entry;
  int begin;
  int end;
};

// Cuts the batch into passes of at most max_rows tokens, in order; a long entry continues in
// the next pass, so each pass holds at most one piece of any entry.
std::vector<std::vector<Piece>> SplitIntoPasses(const std::vector<BatchEntry>& batch, int max_rows) {
  std::vector<std::vector<Piece>> passes(1);
  int used = 0;
  for (int e = 0; e < static_cast<int>(batch.size()); ++e) {
    const int n = static_cast<int>(batch[e].tokens.size());
    for (int begin = 0; begin < n;) {
      if (used == max_rows) {
        passes.emplace_back();
        used = 0;
      }
      const int end = std::min(n, begin + (max_rows - used));
      passes.back().push_back({e, begin, end});
      used += end - begin;
      begin = end;
    }
  }
  return passes;
}

// Shared memory per SM that the decode attention keeps while the O projection starts (PDL) at
// batch 1: its CTAs use under 48 KB of static shared memory (kernels/attention_decode.cu), one per SM.
constexpr int kDecodeAttentionSmem = 48 * 1024;

// Padded batch sizes that decode graphs are captured for: 1, 2, 4, 8, then multiples of 8.
int GraphBatchSize(int seqs) {
  if (seqs <= 8) {
    int p = 1;
    while (p < seqs) p *= 2;
    return p;
  }
  return (seqs + 7) / 8 * 8;
}

// Context bound of a decode graph: a power of two >= the longest context (at least 256).
int ContextBucket(int context, int max_context) {
  int bucket = 256;
  while (bucket < context) bucket *= 2;
  return std::min(bucket, max_context);
}

}  // namespace

StepPlan CudaBackend::PlanPass(const std::vector<BatchEntry>& batch, const std::vector<int>& entries,
                               const std::vector<std::pair<int, int>>& ranges,
                               const std::vector<bool>& wants_logits, bool allow_graph) const {
  const int bs = options_.kv_block_size;
  StepPlan plan;
  bool decode_only = true;
  for (size_t i = 0; i < entries.size(); ++i) {
    const BatchEntry& e = batch[entries[i]];
    const auto [begin, end] = ranges[i];
    const int context = e.start_position + end;
    plan.max_query_len = std::max(plan.max_query_len, end - begin);
    plan.max_context_len = std::max(plan.max_context_len, context);
    const bool last_piece = end == static_cast<int>(e.tokens.size());
    decode_only &= end - begin == 1 && last_piece && !e.all_logits && wants_logits[entries[i]];
  }
  plan.graph = allow_graph && options_.cuda_graphs && decode_only &&
               static_cast<int>(entries.size()) <= options_.max_batch;
  const int padded = plan.graph ? GraphBatchSize(static_cast<int>(entries.size())) : 0;
  if (plan.graph) plan.max_context_len = ContextBucket(plan.max_context_len, max_context_);
  plan.block_stride = std::max(1, (plan.max_context_len + bs - 1) / bs);
  const int seqs = std::max<int>(padded, entries.size());
  plan.block_tables.assign(static_cast<size_t>(seqs) * plan.block_stride, num_kv_blocks_);
  plan.query_start.push_back(0);
  for (size_t i = 0; i < entries.size(); ++i) {
    const BatchEntry& e = batch[entries[i]];
    const auto [begin, end] = ranges[i];
    const std::vector<int32_t>& table = *e.block_table;
    for (int t = begin; t < end; ++t) {
      const int pos = e.start_position + t;
      if (e.all_logits || (t == end - 1 && end == static_cast<int>(e.tokens.size()) && wants_logits[entries[i]])) {
        plan.logit_rows.push_back(plan.rows());
      }
      plan.tokens.push_back(e.tokens[t]);
      plan.positions.push_back(pos);
      plan.slots.push_back(table[pos / bs] * bs + pos % bs);
    }
    const int context = e.start_position + end;
    plan.query_start.push_back(plan.rows());
    plan.context_len.push_back(context);
    const int blocks = (context + bs - 1) / bs;
    std::copy(table.begin(), table.begin() + blocks, plan.block_tables.begin() + i * plan.block_stride);
  }
  // Padding sequences of a graph batch: one token at position 0 that reads the padding block
  // and writes nowhere.
  for (int i = static_cast<int>(entries.size()); i < padded; ++i) {
    plan.logit_rows.push_back(plan.rows());
    plan.tokens.push_back(0);
    plan.positions.push_back(0);
    plan.slots.push_back(-1);
    plan.query_start.push_back(plan.rows());
    plan.context_len.push_back(1);
  }
  return plan;
}

absl::Status CudaBackend::CaptureDecodeGraphs() {
  // Without this, the first decode step of each (batch size, context bucket) runs eagerly and
  // is captured then (several milliseconds): a time-to-first-token outlier for the requests
  // that wait behind it (40-55 ms at p99 in `bench serve` at concurrency 32 on the man-page
  // model). A padding row attends to the padding block only and writes no KV slot.
  if (!options_.cuda_graphs || profiler_) return absl::OkStatus();
  std::vector<int> sizes;
  for (int n = 1; n <= options_.max_batch; ++n) {
    if (sizes.empty() || sizes.back() != GraphBatchSize(n)) sizes.push_back(GraphBatchSize(n));
  }
  std::vector<int> buckets;
  for (int context = 1;; context = buckets.back() + 1) {
    buckets.push_back(ContextBucket(context, max_context_));
    if (buckets.back() >= max_context_) break;
  }
  const int bs = options_.kv_block_size;
  for (const int seqs : sizes) {
    for (const int bucket : buckets) {
      StepPlan plan;
      plan.graph = true;
      plan.max_query_len = 1;
      plan.max_context_len = bucket;
      plan.block_stride = std::max(1, (bucket + bs - 1) / bs);
      plan.block_tables.assign(static_cast<size_t>(seqs) * plan.block_stride, num_kv_blocks_);
      plan.query_start.push_back(0);
      for (int i = 0; i < seqs; ++i) {
        plan.logit_rows.push_back(i);
        plan.tokens.push_back(0);
        plan.positions.push_back(0);
        plan.slots.push_back(-1);
        plan.query_start.push_back(i + 1);
        plan.context_len.push_back(1);
      }
      RETURN_IF_ERROR(PrepareSampling({}, &plan));  // every row a greedy padding row
      RETURN_IF_ERROR(RunStep(plan));  // runs it eagerly, then captures it
      if (!options_.cuda_graphs) return Synchronize();  // a capture failed: graphs are off
    }
  }
  return Synchronize();
}

absl::Status CudaBackend::UploadInputs(const StepPlan& plan) {
  // The previous upload must have left staging_ before it is overwritten.
  if (staging_in_flight_) RETURN_IF_ERROR(Synchronize());
  char* host = staging_.as<char>();
  const auto put = [&](const int32_t* device_dst, const std::vector<int32_t>& values) {
    const size_t offset = reinterpret_cast<const char*>(device_dst) - step_buffer_.as<char>();
    std::memcpy(host + offset, values.data(), values.size() * 4);
  };
  put(step_.tokens, plan.tokens);
  put(step_.positions, plan.positions);
  put(step_.slots, plan.slots);
  put(step_.query_start, plan.query_start);
  put(step_.context_len, plan.context_len);
  put(step_.logit_rows, plan.logit_rows);
  put(step_.block_tables, plan.block_tables);
  size_t bytes = block_tables_offset_ + plan.block_tables.size() * 4;
  if (!plan.sampling.empty()) {
    bytes = (bytes + 15) / 16 * 16;
    std::memcpy(host + bytes, plan.sampling.data(), plan.sampling.size() * sizeof(gpu::SamplingRow));
    sample_params_ = reinterpret_cast<const gpu::SamplingRow*>(step_buffer_.as<char>() + bytes);
    bytes += plan.sampling.size() * sizeof(gpu::SamplingRow);
  }
  staging_in_flight_ = true;
  return CudaStatus(cudaMemcpyAsync(step_buffer_.get(), host, bytes, cudaMemcpyHostToDevice, stream_),
                    "step input upload");
}

gpu::DenseGemvParams CudaBackend::DenseParams(const GpuMatrix& w, const void* x, int m, void* y) const {
  gpu::DenseGemvParams params;
  params.dtype = dtype_;
  params.m = m;
  params.n = w.n;
  params.k = w.k;
  params.x = x;
  params.w = w.dense.get();
  params.y = y;
  params.pdl = true;  // it loads its first weights while the kernel before finishes
  params.variant = dense_gemv_variant_;
  params.cluster = m > 8 && (dense_gemv_cluster_ != 2 || m <= 16) ? dense_gemv_cluster_ : 0;
  params.strip_counter = gemv_strip_counter_.as<unsigned int>();  // (null: fixed shares)
  params.prefer_l1 = gemv_prefer_l1_;
  return params;
}

bool CudaBackend::DenseEpiloguesApply(int m) const {
  if (!dense_gemv_ || !dense_epilogues_ || m > dense_gemv_max_rows_) return false;
  // The wgmma kernel's epilogues (where a call of m rows with an epilogue runs it) or the cluster
  // kernel's (9-16 rows, not the flat variant); the m <= 8 strip kernel has none.
  gpu::DenseGemvParams call;
  call.m = m;
  call.variant = dense_gemv_variant_;
  call.swiglu = true;
  return gpu::DenseGemvRunsWgmma(call) || (m >= 9 && m <= 16 && dense_gemv_variant_ != 2);
}

absl::Status CudaBackend::MatMul(const GpuMatrix& w, const void* x, int m, void* y, bool y_fp32) {
  if (!w.lut) {
    if (dense_gemv_ && m <= dense_gemv_max_rows_ && gpu::DenseGemvSupports(m, w.n, w.k)) {
      // Decode-sized: a stream of the weights (cuBLAS reaches 58-70 % of the bandwidth at
      // m = 1 on the 4096-wide shapes).
      gpu::DenseGemvParams params = DenseParams(w, x, m, y);
      params.y_fp32 = y_fp32;
      return gpu::LaunchDenseGemv(params, stream_);
    }
    // Batch-invariant: below 32 rows every call runs at 32, so cuBLAS picks one algorithm
    // (one summation order) whatever the batch. Buffers have >= 32 rows; extra rows are junk.
    const int rows = options_.batch_invariant ? std::max(m, 32) : m;
    return dense_gemm_->Run(dtype_, y_fp32, rows, w.n, w.k, x, w.dense.get(), y);
  }
  if (UsesLutKernel(m)) {
    lut::LutGemmParams params = LutParams(w, x, m, y);
    if (params.split_k <= 1) return lut::LaunchLutGemm(params, stream_);
    // Batch-invariant (forced splits): the call's output tiles must fit the workspace's counter
    // prefix, so long prefill passes go in pieces of rows (a row's sums do not change).
    const int64_t piece = lut::LutGemmMaxRowsForForcedSplits(w.shape);
    if (piece < 1) return lut::LaunchLutGemm(params, stream_);  // (its InvalidArgument says why)
    for (int64_t r0 = 0; r0 < m; r0 += piece) {
      params.m = std::min<int64_t>(piece, m - r0);
      params.x = static_cast<const char*>(x) + r0 * w.k * 2;
      params.y = static_cast<char*>(y) + r0 * w.n * 2;
      RETURN_IF_ERROR(lut::LaunchLutGemm(params, stream_));
    }
    return absl::OkStatus();
  }
  // Large m (prefill) in the fastest mode: dequantize once, then a tensor-core GEMM.
  RETURN_IF_ERROR(gpu::LaunchLutDequantize(w.shape, dtype_, w.packed.as<uint8_t>(), w.scales.as<uint16_t>(),
                                           w.table.as<float>(), dequant_.get(), stream_));
  return dense_gemm_->Run(dtype_, y_fp32, m, w.n, w.k, x, dequant_.get(), y);
}

lut::LutGemmParams CudaBackend::LutParams(const GpuMatrix& w, const void* x, int m, void* y) const {
  lut::LutGemmParams p;
  p.shape = w.shape;
  p.dtype = dtype_;
  p.m = m;
  p.x = x;
  p.packed = w.packed.as<uint8_t>();
  p.scales = w.scales.as<uint16_t>();
  p.table = w.table.as<float>();
  p.y = y;
  p.workspace = lut_ws_.get();
  p.workspace_bytes = lut_ws_.bytes();
  p.split_k = options_.batch_invariant ? w.invariant_splits : 0;
  // The previous kernel never writes weights: let the LUT kernels load their codes, scales
  // and pair table while that kernel (a chain of small ones in a decode step) finishes.
  p.pdl = true;
  p.early_weights = true;
  return p;
}

CudaBackend::NormFusion CudaBackend::PlanNormFusion(int m) const {
  NormFusion fusion;
  if (options_.batch_invariant || !UsesLutKernel(m)) return fusion;
  bool attention_pair = true, mlp_pair = true;
  const auto on_strip = [&](const GpuProjection& p, const DeviceBuffer* norm_weight) {
    if (p.parts.size() != 1 || !p.parts.front().lut) return false;
    lut::LutGemmParams params = LutParams(p.parts.front(), nullptr, m, nullptr);
    if (norm_weight != nullptr) AddNormPrologue(*norm_weight, &params);
    return lut::UsesStripKernel(params);
  };
  for (const GpuLayer& layer : model_->layers) {
    attention_pair &= on_strip(layer.o, nullptr) && on_strip(layer.gate_up, &layer.post_attention_norm) &&
                      layer.gate_up.interleave == 8;
    mlp_pair &= on_strip(layer.down, nullptr) && on_strip(layer.qkv, &layer.input_norm);
  }
  fusion.after_attention = attention_pair;
  fusion.after_mlp = mlp_pair;
  fusion.deferred = !attention_pair && !mlp_pair && DeferredNormApplies(m);
  return fusion;
}

bool CudaBackend::DeferredNormApplies(int m) const {
  // bf16 only: prenorm_out holds weight * residual before the 1 / rms factor, which in fp16
  // could overflow where the normalized value would not.
  if (dtype_ != lut::ActivationType::kBFloat16 || options_.batch_invariant) return false;
  // LUT models from 5 rows: where the plain products run on the tensor-core kernel too
  // (lut_gemm.h: kAuto). 16-bit models where the dense GEMV's kernel has the epilogues (the
  // wgmma kernel at 1-32 rows; under FLUTE_DENSE_GEMV_VARIANT=1 the cluster kernel, 9-16).
  if (model_->layers.empty() || model_->layers.front().qkv.parts.empty()) return false;
  const bool lut = model_->layers.front().qkv.parts.front().lut;
  if (lut ? m < 5 || !UsesLutKernel(m) : !DenseEpiloguesApply(m) || config_.hidden_size % 64 != 0) return false;
  const char* env = std::getenv("FLUTE_DEFERRED_NORM");
  if (env != nullptr && std::string(env) == "0") return false;
  // Every projection one matrix of the kind the path runs (LUT or 16-bit).
  const auto single = [&](const GpuProjection& p) {
    return p.parts.size() == 1 && p.parts.front().lut == lut &&
           (lut || gpu::DenseGemvSupports(m, p.parts.front().n, p.parts.front().k));
  };
  for (const GpuLayer& layer : model_->layers) {
    if (!single(layer.qkv) || !single(layer.o) || !single(layer.gate_up) || !single(layer.down) ||
        layer.gate_up.interleave != 8) {
      return false;
    }
  }
  return true;
}

void CudaBackend::AddResidualEpilogue(lut::LutGemmParams* params) const {
  params->y = nullptr;
  params->residual_out = residual_.as<float>();
  params->sumsq_out = norm_sumsq_.as<float>();
}

void CudaBackend::AddNormPrologue(const DeviceBuffer& norm_weight, lut::LutGemmParams* params) const {
  params->x = nullptr;
  params->residual_in = residual_.as<float>();
  params->sumsq_in = norm_sumsq_.as<float>();
  params->norm_weight = norm_weight.as<float>();
  params->norm_eps = static_cast<float>(config_.rms_norm_eps);
}

absl::Status CudaBackend::ProjectNormed(const GpuProjection& p, const DeviceBuffer& norm_weight, int m, void* y) {
  lut::LutGemmParams params = LutParams(p.parts.front(), nullptr, m, y);
  AddNormPrologue(norm_weight, &params);
  return lut::LaunchLutGemm(params, stream_);
}

absl::Status CudaBackend::ProjectDeferredNorm(const GpuProjection& p, int m, void* y) {
  if (!p.parts.front().lut) {
    gpu::DenseGemvParams params = DenseParams(p.parts.front(), normed_.get(), m, y);
    params.deferred_sumsq = norm_sumsq_.as<float>();
    params.norm_eps = static_cast<float>(config_.rms_norm_eps);
    return gpu::LaunchDenseGemv(params, stream_);
  }
  lut::LutGemmParams params = LutParams(p.parts.front(), normed_.get(), m, y);
  params.deferred_sumsq = norm_sumsq_.as<float>();
  params.norm_eps = static_cast<float>(config_.rms_norm_eps);
  return lut::LaunchLutGemm(params, stream_);
}

absl::Status CudaBackend::ProjectIntoResidual(const GpuProjection& p, const void* x, int m, int coresident_smem,
                                              const DeviceBuffer* prenorm_weight) {
  if (!p.parts.front().lut) {  // the dense GEMV's residual epilogue (DenseEpiloguesApply)
    gpu::DenseGemvParams params = DenseParams(p.parts.front(), x, m, nullptr);
    params.residual = residual_.as<float>();
    params.sumsq_out = norm_sumsq_.as<float>();
    if (prenorm_weight != nullptr) {
      params.prenorm_out = normed_.get();
      params.prenorm_weight = prenorm_weight->as<float>();
    }
    return gpu::LaunchDenseGemv(params, stream_);
  }
  lut::LutGemmParams params = LutParams(p.parts.front(), x, m, nullptr);
  params.coresident_smem = coresident_smem;
  AddResidualEpilogue(&params);
  if (prenorm_weight != nullptr) {
    params.prenorm_out = normed_.get();
    params.prenorm_weight = prenorm_weight->as<float>();
  }
  return lut::LaunchLutGemm(params, stream_);
}

absl::Status CudaBackend::GateUpSwiGlu(const GpuProjection& p, const void* x, int m, void* out,
                                       const DeviceBuffer* norm_weight, bool deferred_norm) {
  const GpuMatrix& w = p.parts.front();
  if (p.interleave == 8 && w.lut && UsesLutKernel(m)) {
    // The LUT kernels' epilogue applies SwiGLU (one launch, no [m, 2 inter] round trip).
    lut::LutGemmParams params = LutParams(w, x, m, out);
    params.swiglu = true;
    if (norm_weight != nullptr) AddNormPrologue(*norm_weight, &params);
    if (deferred_norm) {
      params.deferred_sumsq = norm_sumsq_.as<float>();
      params.norm_eps = static_cast<float>(config_.rms_norm_eps);
    }
    return lut::LaunchLutGemm(params, stream_);
  }
  if (p.interleave == 8 && !w.lut && norm_weight == nullptr && DenseEpiloguesApply(m) &&
      gpu::DenseGemvSupports(m, w.n, w.k)) {
    // The dense GEMV's cluster kernel applies SwiGLU in its epilogue (and the deferred norm).
    gpu::DenseGemvParams params = DenseParams(w, x, m, out);
    params.swiglu = true;
    if (deferred_norm) {
      params.deferred_sumsq = norm_sumsq_.as<float>();
      params.norm_eps = static_cast<float>(config_.rms_norm_eps);
    }
    return gpu::LaunchDenseGemv(params, stream_);
  }
  if (norm_weight != nullptr || deferred_norm) {
    return absl::InternalError("GateUpSwiGlu: fused norm without the fused LUT path");
  }
  RETURN_IF_ERROR(Project(p, x, m, gate_up_.get(), false));
  return gpu::LaunchSwiGlu(dtype_, gate_up_.get(), m, p.n() / 2, out, stream_, p.interleave);
}

absl::Status CudaBackend::Project(const GpuProjection& p, const void* x, int m, void* y, bool y_fp32) {
  if (p.parts.size() == 1) return MatMul(p.parts.front(), x, m, y, y_fp32);
  // Unfused parts: each into part_, then copied into its columns of y.
  const size_t row_bytes = size_t{2} * p.n();
  size_t column_bytes = 0;
  for (const GpuMatrix& w : p.parts) {
    RETURN_IF_ERROR(MatMul(w, x, m, part_.get(), false));
    RETURN_IF_ERROR(CudaStatus(cudaMemcpy2DAsync(static_cast<char*>(y) + column_bytes, row_bytes, part_.get(),
                                                 size_t{2} * w.n, size_t{2} * w.n, m,
                                                 cudaMemcpyDeviceToDevice, stream_),
                               "projection part copy"));
    column_bytes += size_t{2} * w.n;
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::LaunchLmHead(const void* x, int rows) {
  const GpuMatrix& head = model_->lm_head.parts.front();
  if (!head.lut) return MatMul(head, x, rows, logits_.get(), true);
  RETURN_IF_ERROR(MatMul(head, x, rows, head_act_.get(), false));
  return gpu::LaunchWidenToFloat(dtype_, head_act_.get(), size_t{1} * rows * head.n, logits_.as<float>(), stream_);
}

absl::Status CudaBackend::LaunchForward(const StepPlan& plan) {
  const int t = plan.rows(), h = config_.hidden_size;
  const int q_dim = config_.q_dim(), kv_dim = config_.kv_dim(), qkv_n = q_dim + 2 * kv_dim;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  gpu::AttentionBatch attention;
  attention.num_seqs = plan.seqs();
  attention.query_start = step_.query_start;
  attention.context_len = step_.context_len;
  attention.block_tables = step_.block_tables;
  attention.max_blocks_per_seq = plan.block_stride;
  attention.max_query_len = plan.max_query_len;
  attention.max_context_len = plan.max_context_len;
  const float scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim));
  // Decode-only passes (one query row per sequence): RoPE and the KV-cache write run inside the
  // decode attention (one kernel less per layer); otherwise LaunchRopeKvWrite before it.
  const bool fuse_rope_kv = plan.max_query_len == 1;
  gpu::FusedRopeKv rope_kv;
  rope_kv.positions = step_.positions;
  rope_kv.slots = step_.slots;
  rope_kv.inv_freq = inv_freq_.as<float>();
  rope_kv.k_offset = q_dim;
  rope_kv.v_offset = q_dim + kv_dim;
  // Where the decode attention runs its columns kernel (which leaves the SMs at the largest
  // shared-memory carveout), this step's dense GEMVs ask for their L1 back.
  gemv_prefer_l1_ = fuse_rope_kv && gpu::PagedAttentionDecodeColumns(dtype_, config_.head_dim, config_.num_heads,
                                                                     config_.num_kv_heads, plan.seqs(),
                                                                     plan.max_context_len) > 0;

  // LAUNCH(kind, launch): runs `launch` unless `kind` is ablated (bench e2e --ablate), then,
  // with --profile, charges the time since the previous launch to `kind`.
#define LAUNCH(kind, launch)                                  \
  do {                                                        \
    if (!Ablated(kind)) RETURN_IF_ERROR(launch);              \
    if (profiler_) profiler_->Mark(kind);                     \
  } while (0)
  const auto add_rms_norm = [&](const void* x, const DeviceBuffer& weight) {
    return gpu::LaunchAddRmsNorm(dtype_, t, h, eps, x, residual_.as<float>(), weight.as<float>(), normed_.get(),
                                 stream_);
  };
  // Residual add + RMSNorm inside the projections where they all run on the strip kernel
  // (decode steps of a few rows): the residual then never goes through proj_ and normed_.
  const NormFusion fuse = PlanNormFusion(t);
  if (profiler_) profiler_->Begin(stream_);
  LAUNCH("embedding", gpu::LaunchEmbedding(dtype_, step_.tokens, t, model_->embed_tokens.get(), config_.vocab_size,
                                           h, residual_.as<float>(), stream_));
  for (int l = 0; l < config_.num_layers; ++l) {
    const GpuLayer& layer = model_->layers[l];
    if (l > 0 && fuse.after_mlp) {  // the previous down projection left residual_ and its sums
      LAUNCH("qkv proj", ProjectNormed(layer.qkv, layer.input_norm, t, qkv_.get()));
    } else if (l > 0 && fuse.deferred) {  // ... and normed_ = input_norm * residual_
      LAUNCH("qkv proj", ProjectDeferredNorm(layer.qkv, t, qkv_.get()));
    } else {
      LAUNCH("add+rmsnorm", add_rms_norm(l == 0 ? nullptr : proj_.get(), layer.input_norm));
      LAUNCH("qkv proj", Project(layer.qkv, normed_.get(), t, qkv_.get(), false));
    }
    if (!fuse_rope_kv) {
      LAUNCH("rope+kv write", gpu::LaunchRopeKvWrite(qkv_.get(), t, qkv_n, config_.num_heads, q_dim, q_dim + kv_dim,
                                                     kv_layers_[l], step_.positions, step_.slots,
                                                     inv_freq_.as<float>(), stream_));
    }
    LAUNCH("attention",  // with the RoPE + KV write when fused
           gpu::LaunchPagedAttention(kv_layers_[l], qkv_.get(), qkv_n, config_.num_heads, scale, attention,
                                     attn_.get(), attn_ws_.get(), attn_ws_.bytes(), stream_,
                                     fuse_rope_kv ? &rope_kv : nullptr));
    if (fuse.after_attention) {
      // At batch 1, beside the decode attention's CTAs (one per SM), so that the O matrix
      // streams into shared memory during attention (8B: -0.01 ms per step; at batch 4 the
      // attention holds several CTAs per SM and the O projection would get one block per SM).
      LAUNCH("o proj", ProjectIntoResidual(layer.o, attn_.get(), t, t == 1 ? kDecodeAttentionSmem : 0));
      LAUNCH("gate_up+swiglu", GateUpSwiGlu(layer.gate_up, nullptr, t, mlp_.get(), &layer.post_attention_norm));
    } else if (fuse.deferred) {
      LAUNCH("o proj", ProjectIntoResidual(layer.o, attn_.get(), t, 0, &layer.post_attention_norm));
      LAUNCH("gate_up+swiglu", GateUpSwiGlu(layer.gate_up, normed_.get(), t, mlp_.get(), nullptr, true));
    } else {
      LAUNCH("o proj", Project(layer.o, attn_.get(), t, proj_.get(), false));
      LAUNCH("add+rmsnorm", add_rms_norm(proj_.get(), layer.post_attention_norm));
      LAUNCH("gate_up+swiglu", GateUpSwiGlu(layer.gate_up, normed_.get(), t, mlp_.get()));
    }
    if (fuse.deferred) {  // the last layer's down projection leaves the final norm to its kernel
      const bool last = l + 1 == config_.num_layers;
      LAUNCH("down proj", ProjectIntoResidual(layer.down, mlp_.get(), t, 0,
                                              last ? nullptr : &model_->layers[l + 1].input_norm));
    } else {
      LAUNCH("down proj", fuse.after_mlp ? ProjectIntoResidual(layer.down, mlp_.get(), t)
                                         : Project(layer.down, mlp_.get(), t, proj_.get(), false));
    }
  }
  // (After a fused down projection the residual is already complete: nothing to add.)
  LAUNCH("add+rmsnorm",
         add_rms_norm(fuse.after_mlp || fuse.deferred ? nullptr : proj_.get(), model_->final_norm));
  const int rows = static_cast<int>(plan.logit_rows.size());
  if (rows > 0) {
    // Decode steps want every row's logits, in order: the LM head reads normed_ itself.
    bool every_row = rows == t;
    for (int i = 0; every_row && i < rows; ++i) every_row = plan.logit_rows[i] == i;
    if (!every_row) {
      LAUNCH("lm head", gpu::LaunchGatherRows(normed_.get(), size_t{2} * h, step_.logit_rows, rows,
                                              head_in_.get(), stream_));
    }
    LAUNCH("lm head", LaunchLmHead(every_row ? normed_.get() : head_in_.get(), rows));
  }
  if (!plan.sampling.empty()) LAUNCH("sampling", LaunchSampling(plan));
#undef LAUNCH
  return absl::OkStatus();  // the caller ends the profiled step (after sampling or the copy)
}

absl::Status CudaBackend::RunStep(StepPlan& plan) {
  RETURN_IF_ERROR(UploadInputs(plan));
  const std::pair<int, int> key{plan.seqs(), plan.max_context_len};
  if (plan.graph) {
    auto it = graphs_.find(key);
    if (it != graphs_.end()) return CudaStatus(cudaGraphLaunch(it->second, stream_), "decode graph launch");
  }
  RETURN_IF_ERROR(LaunchForward(plan));
  if (!plan.graph || profiler_) return absl::OkStatus();
  // First step of this shape ran eagerly (loading any lazily loaded kernels); capture it
  // now for the next ones. A capture failure turns graphs off rather than failing the step.
  cudaGraph_t graph = nullptr;
  RETURN_IF_ERROR(CudaStatus(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "graph capture"));
  const absl::Status launched = LaunchForward(plan);
  const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
  cudaGraphExec_t exec = nullptr;
  if (launched.ok() && ended == cudaSuccess && graph &&
      cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess) {
    graphs_[key] = exec;
  } else {
    cudaGetLastError();
    options_.cuda_graphs = false;
  }
  if (graph) cudaGraphDestroy(graph);
  return absl::OkStatus();
}

absl::Status CudaBackend::Forward(const std::vector<BatchEntry>& batch, ForwardOutput* out) {
  RETURN_IF_ERROR(ValidateBatch(config_, options_.kv_block_size, num_kv_blocks_, batch));
  const size_t vocab = config_.vocab_size;
  out->logits.clear();
  out->first_row.assign(batch.size(), -1);
  const std::vector<bool> wants(batch.size(), true);
  int rows_out = 0;
  for (const std::vector<Piece>& pass : SplitIntoPasses(batch, max_rows_)) {
    std::vector<int> entries;
    std::vector<std::pair<int, int>> ranges;
    for (const Piece& p : pass) {
      entries.push_back(p.entry);
      ranges.push_back({p.begin, p.end});
    }
    // Logits go back to the host: not the decode fast path, no graph.
    StepPlan plan = PlanPass(batch, entries, ranges, wants, /*allow_graph=*/false);
    RETURN_IF_ERROR(RunStep(plan));
    const size_t rows = plan.logit_rows.size();
    out->logits.resize((rows_out + rows) * vocab);
    RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(out->logits.data() + rows_out * vocab, logits_.get(),
                                               rows * vocab * 4, cudaMemcpyDeviceToHost, stream_),
                               "logits copy"));
    if (profiler_) {
      profiler_->Mark("logits copy");
      profiler_->End();
    }
    RETURN_IF_ERROR(Synchronize());
    // first_row: this pass's logit rows follow its pieces in order.
    int row = rows_out;
    for (const Piece& p : pass) {
      const BatchEntry& e = batch[p.entry];
      const bool last = p.end == static_cast<int>(e.tokens.size());
      if (e.all_logits && p.begin == 0) out->first_row[p.entry] = row;
      if (!e.all_logits && last) out->first_row[p.entry] = row;
      row += e.all_logits ? p.end - p.begin : (last ? 1 : 0);
    }
    rows_out += static_cast<int>(rows);
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::ForwardAndSample(const std::vector<BatchEntry>& batch,
                                           const std::vector<SampleSlot>& slots,
                                           std::vector<SampledToken>* tokens) {
  RETURN_IF_ERROR(ValidateBatch(config_, options_.kv_block_size, num_kv_blocks_, batch));
  std::vector<bool> wants(batch.size(), false);
  std::vector<int> slot_of(batch.size(), -1);
  for (size_t i = 0; i < slots.size(); ++i) {
    if (batch[slots[i].entry].all_logits) {
      return absl::InvalidArgumentError(absl::StrCat("batch entry ", slots[i].entry,
                                                     ": all_logits entries cannot be sampled"));
    }
    wants[slots[i].entry] = true;
    slot_of[slots[i].entry] = static_cast<int>(i);
  }
  tokens->assign(slots.size(), SampledToken{});
  for (const std::vector<Piece>& pass : SplitIntoPasses(batch, max_rows_)) {
    std::vector<int> entries;
    std::vector<std::pair<int, int>> ranges;
    std::vector<SampleSlot> pass_slots;  // in logit-row order
    std::vector<int> pass_slot_index;
    for (const Piece& p : pass) {
      entries.push_back(p.entry);
      ranges.push_back({p.begin, p.end});
      if (wants[p.entry] && p.end == static_cast<int>(batch[p.entry].tokens.size())) {
        pass_slots.push_back(slots[slot_of[p.entry]]);
        pass_slot_index.push_back(slot_of[p.entry]);
      }
    }
    StepPlan plan = PlanPass(batch, entries, ranges, wants, /*allow_graph=*/true);
    if (!trace_out_.empty()) {
      RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(trace_.get(), 0, trace::kHeaderBytes, stream_), "kernel trace reset"));
    }
    RETURN_IF_ERROR(PrepareSampling(pass_slots, &plan));
    RETURN_IF_ERROR(RunStep(plan));
    std::vector<SampledToken> sampled;
    RETURN_IF_ERROR(CollectSamples(plan, static_cast<int>(pass_slots.size()), &sampled));
    if (profiler_) profiler_->End();
    if (!trace_out_.empty()) RETURN_IF_ERROR(WriteTrace());
    for (size_t i = 0; i < sampled.size(); ++i) (*tokens)[pass_slot_index[i]] = std::move(sampled[i]);
  }
  return absl::OkStatus();
}

}  // namespace flute
