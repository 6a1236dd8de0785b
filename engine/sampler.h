// Chooses the next token from logits: greedy, temperature, top-k, top-p, min-p, and the
// repetition / presence / frequency penalties, with a per-request seeded generator.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace flute {

struct SamplingParams {
  float temperature = 1.0f;        // 0 = greedy (argmax, ties to the lowest id)
  int top_k = 0;                   // 0 = off
  float top_p = 1.0f;              // (0, 1]; 1 = off
  float min_p = 0.0f;              // [0, 1]; 0 = off
  float repetition_penalty = 1.0f; // > 0; 1 = off. HF/vLLM: on prompt and generated tokens
  float presence_penalty = 0.0f;   // [-2, 2]; OpenAI/vLLM: on generated tokens
  float frequency_penalty = 0.0f;  // [-2, 2]; OpenAI/vLLM: on generated tokens
  std::optional<uint64_t> seed;    // same seed + same request = same output
  int num_logprobs = 0;            // top alternatives to report, [0, 20]
};

// InvalidArgument naming the field, its value and the allowed range.
absl::Status ValidateSamplingParams(const SamplingParams& params, int vocab_size);

struct TokenLogprob {
  int32_t token;
  float logprob;  // log-softmax of the raw (unpenalized, untempered) logits
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;                  // of the chosen token, as in TokenLogprob
  std::vector<TokenLogprob> top;         // num_logprobs best, highest first
};

// One per request; owns the request's random generator and token counts.
class Sampler {
 public:
  // prompt: the request's prompt ids (repetition penalty applies to them too).
  Sampler(const SamplingParams& params, const std::vector<int32_t>& prompt);

  // Picks the next token from logits[vocab_size]; `scratch` may be reused between calls.
  SampledToken Sample(const float* logits, int vocab_size);

  // Records a generated token (the one Sample returned, or one forced by the caller).
  void Accept(int32_t token);

  const SamplingParams& params() const { return params_; }

  // For samplers that run elsewhere (the GPU): the counts the penalties use, and the next
  // 64 random bits of this request's generator (what a seeded request reproduces).
  const std::unordered_map<int32_t, int>& prompt_counts() const { return prompt_counts_; }
  const std::unordered_map<int32_t, int>& generated_counts() const { return generated_counts_; }
  uint64_t NextRandomBits() { return rng_(); }

 private:
  // Temperature, top-k, top-p, min-p and the draw over (penalized) logits[vocab_size].
  int32_t Draw(const float* logits, int vocab_size);
  // Top-p over the candidates order_[0, count) (weights_ filled): how many to keep.
  size_t TopPCount(size_t count);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, int> prompt_counts_;
  std::unordered_map<int32_t, int> generated_counts_;
  std::vector<float> scratch_;
  std::vector<uint64_t> order_;  // rank keys (logit bits, id) being selected / sorted
  std::vector<int32_t> kept_ids_;  // the ids a draw chooses among, increasing
  std::vector<float> weights_;  // by id: softmax weights of the current candidates
};

}  // namespace flute
