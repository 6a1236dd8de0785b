// The CUDA backend's sampling: the per-row parameters and penalty counts go to the GPU, the
// sampling kernel runs on the logits rows, and only tokens and log-probabilities come back.
#include <algorithm>

#include "engine/cuda/cuda_backend_impl.h"
#include "engine/status_macros.h"

namespace flute {
namespace {

bool HasPenalties(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
}

// Appends the sampler's distinct penalised tokens as (id, prompt count, generated count)
// columns of `flat` ([3, total] is built later); returns how many.
int AppendPenaltyTokens(const Sampler& sampler, std::vector<int32_t>* ids, std::vector<int32_t>* prompt,
                        std::vector<int32_t>* generated) {
  const auto& p_counts = sampler.prompt_counts();
  const auto& g_counts = sampler.generated_counts();
  int added = 0;
  for (const auto& [token, count] : p_counts) {
    const auto it = g_counts.find(token);
    ids->push_back(token);
    prompt->push_back(count);
    generated->push_back(it == g_counts.end() ? 0 : it->second);
    ++added;
  }
  for (const auto& [token, count] : g_counts) {
    if (p_counts.count(token)) continue;
    ids->push_back(token);
    prompt->push_back(0);
    generated->push_back(count);
    ++added;
  }
  return added;
}

}  // namespace

absl::Status CudaBackend::SampleRows(const std::vector<SampleSlot>& slots, std::vector<SampledToken>* tokens) {
  tokens->clear();
  const int rows = static_cast<int>(slots.size());
  if (rows == 0) return Synchronize();
  auto* params = sample_host_.as<gpu::SamplingRow>();
  auto* results = reinterpret_cast<gpu::SampleResult*>(params + max_rows_);
  std::vector<int32_t> ids, prompt, generated;
  for (int i = 0; i < rows; ++i) {
    Sampler& sampler = *slots[i].sampler;
    const SamplingParams& p = sampler.params();
    gpu::SamplingRow& row = params[i];
    row = gpu::SamplingRow{};
    row.temperature = p.temperature;
    row.top_k = p.top_k;
    row.top_p = p.top_p;
    row.min_p = p.min_p;
    row.repetition_penalty = p.repetition_penalty;
    row.presence_penalty = p.presence_penalty;
    row.frequency_penalty = p.frequency_penalty;
    row.num_logprobs = std::min(p.num_logprobs, gpu::kMaxLogprobs);
    row.penalty_begin = static_cast<int32_t>(ids.size());
    if (HasPenalties(p)) AppendPenaltyTokens(sampler, &ids, &prompt, &generated);
    row.penalty_end = static_cast<int32_t>(ids.size());
    row.random_bits = p.temperature > 0.0f ? sampler.NextRandomBits() : 0;
  }
  RETURN_IF_ERROR(gpu::ValidateSamplingRows(params, rows, config_.vocab_size));
  // Penalty columns [ids | prompt counts | generated counts], grown as needed (never inside
  // a graph: sampling runs after the replayed forward pass).
  const size_t total = ids.size();
  if (penalty_buffer_.bytes() < 3 * total * 4) {
    ASSIGN_OR_RETURN(penalty_buffer_, DeviceBuffer::Allocate(std::max<size_t>(3 * total * 4, 1 << 16), "penalty tokens"));
  }
  penalty_host_.clear();
  penalty_host_.insert(penalty_host_.end(), ids.begin(), ids.end());
  penalty_host_.insert(penalty_host_.end(), prompt.begin(), prompt.end());
  penalty_host_.insert(penalty_host_.end(), generated.begin(), generated.end());
  int32_t* penalty_dev = penalty_buffer_.as<int32_t>();
  if (total > 0) {
    RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(penalty_dev, penalty_host_.data(), penalty_host_.size() * 4,
                                               cudaMemcpyHostToDevice, stream_), "penalty upload"));
  }
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(sample_params_.get(), params, sizeof(gpu::SamplingRow) * rows,
                                             cudaMemcpyHostToDevice, stream_), "sampling parameters upload"));
  // In chunks of kSampleChunk rows: the kernel's workspace grows with the rows.
  const size_t vocab = config_.vocab_size;
  for (int first = 0; first < rows; first += kSampleChunk) {
    const int count = std::min(kSampleChunk, rows - first);
    if (Ablated("sampling")) {  // bench e2e --ablate sampling: token 0 for every row, timing only
      RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(sample_results_.as<gpu::SampleResult>() + first, 0,
                                                 sizeof(gpu::SampleResult) * count, stream_),
                                 "ablated sampling"));
      continue;
    }
    RETURN_IF_ERROR(gpu::LaunchSampling(logits_.as<float>() + first * vocab, count, config_.vocab_size,
                                        sample_params_.as<gpu::SamplingRow>() + first, penalty_dev,
                                        penalty_dev + total, penalty_dev + 2 * total,
                                        sample_results_.as<gpu::SampleResult>() + first, sample_ws_.get(),
                                        sample_ws_.bytes(), stream_));
  }
  if (profiler_) profiler_->Mark("sampling");
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(results, sample_results_.get(), sizeof(gpu::SampleResult) * rows,
                                             cudaMemcpyDeviceToHost, stream_), "sampling results copy"));
  RETURN_IF_ERROR(Synchronize());
  for (int i = 0; i < rows; ++i) {
    SampledToken token;
    token.token = results[i].token;
    token.logprob = results[i].logprob;
    for (int j = 0; j < params[i].num_logprobs; ++j) {
      token.top.push_back({results[i].top_tokens[j], results[i].top_logprobs[j]});
    }
    tokens->push_back(std::move(token));
  }
  return absl::OkStatus();
}

}  // namespace flute
