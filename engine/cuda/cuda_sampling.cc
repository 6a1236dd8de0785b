// The CUDA backend's sampling: the per-row parameters (with the step's inputs) and penalty
// counts go to the GPU, the sampling kernels run on the logits rows, and only tokens and
// log-probabilities come back (written by the kernel into pinned host memory).
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

absl::Status CudaBackend::PrepareSampling(const std::vector<SampleSlot>& slots, StepPlan* plan) {
  const int rows = static_cast<int>(slots.size());
  // A graph step samples its padding rows too (its kernels' grid is the padded batch).
  const int padded = plan->graph ? std::max<int>(rows, plan->logit_rows.size()) : rows;
  gpu::SamplingRow padding;
  padding.temperature = 0.0f;
  plan->sampling.assign(padded, padding);
  std::vector<int32_t> ids, prompt, generated;
  for (int i = 0; i < rows; ++i) {
    Sampler& sampler = *slots[i].sampler;
    const SamplingParams& p = sampler.params();
    gpu::SamplingRow& row = plan->sampling[i];
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
  RETURN_IF_ERROR(gpu::ValidateSamplingRows(plan->sampling.data(), padded, config_.vocab_size));
  const size_t total = ids.size();
  if (total == 0) return absl::OkStatus();
  if (total > penalty_capacity_) {
    // The graphs hold the old columns' addresses (nothing is in flight: every step ends with
    // a synchronization).
    DestroyGraphs();
    penalty_buffer_ = DeviceBuffer();
    penalty_capacity_ = std::max(2 * penalty_capacity_, total);
    ASSIGN_OR_RETURN(penalty_buffer_, DeviceBuffer::Allocate(3 * 4 * penalty_capacity_, "penalty tokens"));
  }
  penalty_host_.clear();
  penalty_host_.insert(penalty_host_.end(), ids.begin(), ids.end());
  penalty_host_.insert(penalty_host_.end(), prompt.begin(), prompt.end());
  penalty_host_.insert(penalty_host_.end(), generated.begin(), generated.end());
  // Three rows of `total` entries into the columns, penalty_capacity_ apart.
  return CudaStatus(cudaMemcpy2DAsync(penalty_buffer_.get(), 4 * penalty_capacity_, penalty_host_.data(), 4 * total,
                                      4 * total, 3, cudaMemcpyHostToDevice, stream_),
                    "penalty upload");
}

absl::Status CudaBackend::LaunchSampling(const StepPlan& plan) {
  const int rows = static_cast<int>(plan.sampling.size());
  const int32_t* columns = penalty_buffer_.as<int32_t>();
  // In chunks of kSampleChunk rows: the kernels' workspace grows with the rows.
  const size_t vocab = config_.vocab_size;
  for (int first = 0; first < rows; first += kSampleChunk) {
    const int count = std::min(kSampleChunk, rows - first);
    RETURN_IF_ERROR(gpu::LaunchSampling(logits_.as<float>() + first * vocab, count, config_.vocab_size,
                                        sample_params_ + first, columns, columns + penalty_capacity_,
                                        columns + 2 * penalty_capacity_, sample_results_dev_ + first,
                                        sample_ws_.get(), sample_ws_.bytes(), stream_, options_.batch_invariant));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::CollectSamples(const StepPlan& plan, int rows, std::vector<SampledToken>* tokens) {
  tokens->clear();
  RETURN_IF_ERROR(Synchronize());
  const gpu::SampleResult* results = sample_results_.as<gpu::SampleResult>();
  for (int i = 0; i < rows; ++i) {
    SampledToken token;
    // bench e2e --ablate sampling (timing only): token 0 for every row.
    token.token = Ablated("sampling") ? 0 : results[i].token;
    token.logprob = Ablated("sampling") ? 0.0f : results[i].logprob;
    for (int j = 0; j < plan.sampling[i].num_logprobs; ++j) {
      token.top.push_back({results[i].top_tokens[j], results[i].top_logprobs[j]});
    }
    tokens->push_back(std::move(token));
  }
  return absl::OkStatus();
}

}  // namespace flute
