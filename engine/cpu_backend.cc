#include "engine/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/linear.h"
#include "engine/rope.h"
#include "engine/status_macros.h"
#include "engine/thread_pool.h"
#include "engine/vector_ops.h"

namespace flute {
namespace {

// Where each token of the flattened batch comes from.
struct TokenSlot {
  int entry;     // index into the batch
  int position;  // absolute position in its sequence
};

// Activations of one step, T = number of tokens in the batch.
struct StepBuffers {
  std::vector<float> hidden;     // [T, hidden]  the residual stream
  std::vector<float> normed;     // [T, hidden]
  std::vector<float> q;          // [T, q_dim]
  std::vector<float> k;          // [T, kv_dim]
  std::vector<float> v;          // [T, kv_dim]
  std::vector<float> attention;  // [T, q_dim]
  std::vector<float> gate;       // [T, intermediate]
  std::vector<float> up;         // [T, intermediate]
  std::vector<float> out;        // [T, hidden]
};

class CpuBackend : public Backend {
 public:
  CpuBackend(ModelConfig config, std::unique_ptr<ModelWeights> weights, const BackendOptions& options)
      : config_(std::move(config)),
        weights_(std::move(weights)),
        pool_(options.num_threads),
        block_size_(options.kv_block_size),
        inv_freq_(RopeInverseFrequencies(config_.rope, config_.head_dim)) {
    const int64_t bytes_per_block = static_cast<int64_t>(config_.num_layers) * 2 * block_size_ *
                                    config_.kv_dim() * static_cast<int64_t>(sizeof(float));
    num_blocks_ = static_cast<int>(std::max<int64_t>(1, options.kv_cache_bytes / bytes_per_block));
    const size_t per_layer = static_cast<size_t>(num_blocks_) * block_size_ * config_.kv_dim();
    // Left uninitialised (pages are touched only when written): a position is read only
    // after its K/V were stored.
    key_cache_.reset(new float[static_cast<size_t>(config_.num_layers) * per_layer]);
    value_cache_.reset(new float[static_cast<size_t>(config_.num_layers) * per_layer]);
  }

  const ModelConfig& config() const override { return config_; }
  int kv_block_size() const override { return block_size_; }
  int num_kv_blocks() const override { return num_blocks_; }
  std::string Describe() const override {
    return absl::StrCat("cpu (", pool_.num_threads(), " threads, fp32 compute; projections ",
                        weights_->layers.empty() ? "-" : weights_->layers[0].q_proj->Describe(),
                        "; lm_head ", weights_->lm_head->Describe(), ")");
  }

  absl::Status Forward(const std::vector<BatchEntry>& batch, ForwardOutput* out) override;

 private:
  absl::Status Validate(const std::vector<BatchEntry>& batch) const;
  void Embed(const std::vector<int32_t>& tokens, float* hidden);
  void AttentionBlock(int layer, const std::vector<BatchEntry>& batch,
                      const std::vector<TokenSlot>& slots, StepBuffers& b);
  void MlpBlock(int layer, int num_tokens, StepBuffers& b);
  void WriteKv(int layer, const BatchEntry& entry, int position, const float* k, const float* v);
  void Attend(int layer, const BatchEntry& entry, int position, const float* q, float* out,
              std::vector<float>& scores) const;
  float* KeyAt(int layer, int block, int slot) {
    return key_cache_.get() + CacheOffset(layer, block, slot);
  }
  float* ValueAt(int layer, int block, int slot) {
    return value_cache_.get() + CacheOffset(layer, block, slot);
  }
  size_t CacheOffset(int layer, int block, int slot) const {
    return ((static_cast<size_t>(layer) * num_blocks_ + block) * block_size_ + slot) * config_.kv_dim();
  }

  ModelConfig config_;
  std::unique_ptr<ModelWeights> weights_;
  ThreadPool pool_;
  int block_size_;
  int num_blocks_ = 0;
  std::vector<float> inv_freq_;    // [head_dim / 2]
  std::unique_ptr<float[]> key_cache_;    // [layers, blocks, block_size, kv_dim]
  std::unique_ptr<float[]> value_cache_;  // [layers, blocks, block_size, kv_dim]
};

absl::Status CpuBackend::Validate(const std::vector<BatchEntry>& batch) const {
  return ValidateBatch(config_, block_size_, num_blocks_, batch);
}

void CpuBackend::Embed(const std::vector<int32_t>& tokens, float* hidden) {
  const TensorView& table = *weights_->embed_tokens;
  const size_t h = config_.hidden_size;
  const size_t row_bytes = h * DTypeSize(table.dtype);
  for (size_t t = 0; t < tokens.size(); ++t) {
    ConvertToFloat(table.dtype, static_cast<const char*>(table.data) + tokens[t] * row_bytes, h,
                   hidden + t * h);
  }
}

void CpuBackend::WriteKv(int layer, const BatchEntry& entry, int position, const float* k,
                         const float* v) {
  const int block = (*entry.block_table)[position / block_size_];
  const int slot = position % block_size_;
  std::copy(k, k + config_.kv_dim(), KeyAt(layer, block, slot));
  std::copy(v, v + config_.kv_dim(), ValueAt(layer, block, slot));
}

// out[q_dim] = causal GQA attention of one token's query heads over positions [0, position].
void CpuBackend::Attend(int layer, const BatchEntry& entry, int position, const float* q,
                        float* out, std::vector<float>& scores) const {
  const int d = config_.head_dim;
  const int group = config_.num_heads / config_.num_kv_heads;
  const int context = position + 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  scores.resize(context);
  for (int head = 0; head < config_.num_heads; ++head) {
    const int kv_offset = (head / group) * d;
    const float* qh = q + head * d;
    float max_score = -INFINITY;
    for (int p = 0; p < context; ++p) {
      const int block = (*entry.block_table)[p / block_size_];
      const float* key = key_cache_.get() + CacheOffset(layer, block, p % block_size_) + kv_offset;
      scores[p] = Dot(qh, key, d) * scale;
      max_score = std::max(max_score, scores[p]);
    }
    float sum = 0.0f;
    for (int p = 0; p < context; ++p) {
      scores[p] = std::exp(scores[p] - max_score);
      sum += scores[p];
    }
    float* oh = out + head * d;
    std::fill(oh, oh + d, 0.0f);
    const float inv_sum = 1.0f / sum;
    for (int p = 0; p < context; ++p) {
      const int block = (*entry.block_table)[p / block_size_];
      const float* value = value_cache_.get() + CacheOffset(layer, block, p % block_size_) + kv_offset;
      Axpy(scores[p] * inv_sum, value, oh, d);
    }
  }
}

void CpuBackend::AttentionBlock(int layer, const std::vector<BatchEntry>& batch,
                                const std::vector<TokenSlot>& slots, StepBuffers& b) {
  const LayerWeights& w = weights_->layers[layer];
  const int num_tokens = static_cast<int>(slots.size());
  const int h = config_.hidden_size;
  const int q_dim = config_.q_dim();
  const int kv_dim = config_.kv_dim();
  const float eps = static_cast<float>(config_.rms_norm_eps);
  for (int t = 0; t < num_tokens; ++t) {
    RmsNorm(&b.hidden[t * h], w.input_norm.data(), eps, h, &b.normed[t * h]);
  }
  LinearForward(*w.q_proj, b.normed.data(), num_tokens, b.q.data(), pool_);
  LinearForward(*w.k_proj, b.normed.data(), num_tokens, b.k.data(), pool_);
  LinearForward(*w.v_proj, b.normed.data(), num_tokens, b.v.data(), pool_);
  const int d = config_.head_dim;
  for (int t = 0; t < num_tokens; ++t) {
    for (int head = 0; head < config_.num_heads; ++head) ApplyRope(inv_freq_, slots[t].position, d, &b.q[t * q_dim + head * d]);
    for (int head = 0; head < config_.num_kv_heads; ++head) ApplyRope(inv_freq_, slots[t].position, d, &b.k[t * kv_dim + head * d]);
    WriteKv(layer, batch[slots[t].entry], slots[t].position, &b.k[t * kv_dim], &b.v[t * kv_dim]);
  }
  // Every token's keys and values are cached before any token attends (causal order is
  // enforced by attending to positions <= its own only).
  pool_.ParallelFor(num_tokens, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    for (int64_t t = begin; t < end; ++t) {
      Attend(layer, batch[slots[t].entry], slots[t].position, &b.q[t * q_dim], &b.attention[t * q_dim], scores);
    }
  });
  LinearForward(*w.o_proj, b.attention.data(), num_tokens, b.out.data(), pool_);
  for (size_t i = 0; i < static_cast<size_t>(num_tokens) * h; ++i) b.hidden[i] += b.out[i];
}

void CpuBackend::MlpBlock(int layer, int num_tokens, StepBuffers& b) {
  const LayerWeights& w = weights_->layers[layer];
  const int h = config_.hidden_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  for (int t = 0; t < num_tokens; ++t) {
    RmsNorm(&b.hidden[t * h], w.post_attention_norm.data(), eps, h, &b.normed[t * h]);
  }
  LinearForward(*w.gate_proj, b.normed.data(), num_tokens, b.gate.data(), pool_);
  LinearForward(*w.up_proj, b.normed.data(), num_tokens, b.up.data(), pool_);
  const size_t n = static_cast<size_t>(num_tokens) * config_.intermediate_size;
  for (size_t i = 0; i < n; ++i) {
    const float g = b.gate[i];
    b.gate[i] = g / (1.0f + std::exp(-g)) * b.up[i];  // SiLU(gate) * up
  }
  LinearForward(*w.down_proj, b.gate.data(), num_tokens, b.out.data(), pool_);
  for (size_t i = 0; i < static_cast<size_t>(num_tokens) * h; ++i) b.hidden[i] += b.out[i];
}

absl::Status CpuBackend::Forward(const std::vector<BatchEntry>& batch, ForwardOutput* out) {
  RETURN_IF_ERROR(Validate(batch));
  std::vector<int32_t> tokens;
  std::vector<TokenSlot> slots;
  for (int e = 0; e < static_cast<int>(batch.size()); ++e) {
    for (size_t i = 0; i < batch[e].tokens.size(); ++i) {
      tokens.push_back(batch[e].tokens[i]);
      slots.push_back({e, batch[e].start_position + static_cast<int>(i)});
    }
  }
  const size_t t = tokens.size();
  StepBuffers b;
  b.hidden.resize(t * config_.hidden_size);
  b.normed.resize(t * config_.hidden_size);
  b.q.resize(t * config_.q_dim());
  b.k.resize(t * config_.kv_dim());
  b.v.resize(t * config_.kv_dim());
  b.attention.resize(t * config_.q_dim());
  b.gate.resize(t * config_.intermediate_size);
  b.up.resize(t * config_.intermediate_size);
  b.out.resize(t * config_.hidden_size);
  Embed(tokens, b.hidden.data());
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    AttentionBlock(layer, batch, slots, b);
    MlpBlock(layer, static_cast<int>(t), b);
  }

  // Final norm on the rows that need logits, then the LM head.
  const int h = config_.hidden_size;
  std::vector<float> rows;
  out->first_row.clear();
  int token_index = 0;
  int num_rows = 0;
  for (const BatchEntry& e : batch) {
    out->first_row.push_back(num_rows);
    const int n = static_cast<int>(e.tokens.size());
    const int first = e.all_logits ? 0 : n - 1;
    for (int i = first; i < n; ++i) {
      rows.resize(static_cast<size_t>(num_rows + 1) * h);
      RmsNorm(&b.hidden[static_cast<size_t>(token_index + i) * h], weights_->final_norm.data(),
              static_cast<float>(config_.rms_norm_eps), h, &rows[static_cast<size_t>(num_rows) * h]);
      ++num_rows;
    }
    token_index += n;
  }
  out->logits.resize(static_cast<size_t>(num_rows) * config_.vocab_size);
  LinearForward(*weights_->lm_head, rows.data(), num_rows, out->logits.data(), pool_);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(ModelConfig config,
                                                           std::unique_ptr<ModelWeights> weights,
                                                           const BackendOptions& options) {
  if (options.kv_block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("kv_block_size must be positive, got ", options.kv_block_size));
  }
  return std::unique_ptr<Backend>(new CpuBackend(std::move(config), std::move(weights), options));
}

}  // namespace flute
