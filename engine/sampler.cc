// Token sampling in vLLM's order: repetition penalty (prompt + generated tokens), frequency and
// presence penalties (generated tokens), then greedy, or temperature → top-k → softmax →
// top-p → min-p → renormalise → draw. Reported log-probabilities are of the raw logits.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace flute {
namespace {

absl::Status OutOfRange(const char* field, const std::string& range, double value) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be in ", range, ", got ", value));
}

// Uniform double in [0, 1) from the top 53 bits of one draw: the same on every platform
// (std::uniform_real_distribution is not specified bit for bit).
double UniformDouble(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

uint64_t NondeterministicSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

// Greedy choice: the highest logit, ties to the lowest id (NaN never wins).
int32_t ArgMax(const float* logits, int vocab_size) {
  int32_t best = 0;
  for (int32_t i = 1; i < vocab_size; ++i) {
    if (logits[i] > logits[best] || std::isnan(logits[best])) best = i;
  }
  return best;
}

// log(sum(exp(logits))), computed stably.
double LogSumExp(const float* logits, int vocab_size) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < vocab_size; ++i) max_logit = std::max(max_logit, logits[i]);
  if (!std::isfinite(max_logit)) return max_logit;
  double sum = 0.0;
  for (int i = 0; i < vocab_size; ++i) sum += std::exp(logits[i] - max_logit);
  return max_logit + std::log(sum);
}

// A rank key per id: a larger key is a higher logit, ties to the lower id. Selecting and
// sorting these contiguous integers is much faster than sorting ids through a comparator
// that reads logits, and the strict total order makes the selected sets independent of the
// standard library.
uint64_t RankKey(const float* logits, int32_t id) {
  float value = logits[id];
  if (value == 0.0f) value = 0.0f;  // -0 ranks as +0
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);  // monotone in the float
  return (static_cast<uint64_t>(bits) << 32) | (0xffffffffu - static_cast<uint32_t>(id));
}

int32_t KeyId(uint64_t key) {
  return static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key));
}

void FillRankKeys(const float* logits, int vocab_size, std::vector<uint64_t>* keys) {
  keys->resize(vocab_size);
  for (int32_t id = 0; id < vocab_size; ++id) (*keys)[id] = RankKey(logits, id);
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int vocab_size) {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size must be positive, got ", vocab_size));
  }
  if (!(std::isfinite(p.temperature) && p.temperature >= 0.0f && p.temperature <= 100.0f)) {
    return OutOfRange("temperature", "[0, 100]", p.temperature);
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be >= 0 (0 = off), got ", p.top_k));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return OutOfRange("top_p", "(0, 1]", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return OutOfRange("min_p", "[0, 1]", p.min_p);
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= 10.0f)) {
    return OutOfRange("repetition_penalty", "(0, 10]", p.repetition_penalty);
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return OutOfRange("presence_penalty", "[-2, 2]", p.presence_penalty);
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return OutOfRange("frequency_penalty", "[-2, 2]", p.frequency_penalty);
  }
  if (p.num_logprobs < 0 || p.num_logprobs > 20) {
    return OutOfRange("num_logprobs", "[0, 20]", p.num_logprobs);
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, const std::vector<int32_t>& prompt)
    : params_(params), rng_(params.seed ? *params.seed : NondeterministicSeed()) {
  if (params_.repetition_penalty != 1.0f) {
    for (int32_t token : prompt) ++prompt_counts_[token];
  }
}

void Sampler::Accept(int32_t token) { ++generated_counts_[token]; }

SampledToken Sampler::Sample(const float* raw_logits, int vocab_size) {
  // 1. Penalties, on a copy of the logits (only when one is active).
  const bool repetition = params_.repetition_penalty != 1.0f;
  const bool additive = params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f;
  const float* logits = raw_logits;
  if ((repetition && (!prompt_counts_.empty() || !generated_counts_.empty())) ||
      (additive && !generated_counts_.empty())) {
    scratch_.assign(raw_logits, raw_logits + vocab_size);
    const float penalty = params_.repetition_penalty;
    const auto penalize = [&](int32_t token) {
      float& l = scratch_[token];
      l = l > 0.0f ? l / penalty : l * penalty;
    };
    if (repetition) {
      for (const auto& [token, count] : prompt_counts_) {
        if (token >= 0 && token < vocab_size) penalize(token);
      }
      for (const auto& [token, count] : generated_counts_) {
        if (token >= 0 && token < vocab_size && prompt_counts_.count(token) == 0) penalize(token);
      }
    }
    if (additive) {
      for (const auto& [token, count] : generated_counts_) {
        if (token < 0 || token >= vocab_size) continue;
        scratch_[token] -= params_.frequency_penalty * static_cast<float>(count) +
                           params_.presence_penalty * (count > 0 ? 1.0f : 0.0f);
      }
    }
    logits = scratch_.data();
  }

  SampledToken result;
  result.token = params_.temperature == 0.0f ? ArgMax(logits, vocab_size)
                                             : Draw(logits, vocab_size);

  // 2. Log-probabilities of the raw logits.
  const double log_normalizer = LogSumExp(raw_logits, vocab_size);
  result.logprob = static_cast<float>(raw_logits[result.token] - log_normalizer);
  if (params_.num_logprobs > 0) {
    const int k = std::min(params_.num_logprobs, vocab_size);
    FillRankKeys(raw_logits, vocab_size, &order_);
    const std::greater<uint64_t> higher;
    std::nth_element(order_.begin(), order_.begin() + (k - 1), order_.end(), higher);
    std::sort(order_.begin(), order_.begin() + k, higher);
    for (int i = 0; i < k; ++i) {
      const int32_t id = KeyId(order_[i]);
      result.top.push_back({id, static_cast<float>(raw_logits[id] - log_normalizer)});
    }
  }
  return result;
}

int32_t Sampler::Draw(const float* logits, int vocab_size) {
  const std::greater<uint64_t> higher;
  const float inv_temperature = 1.0f / params_.temperature;

  // Candidates order_[0, count): all ids, or the top_k highest (temperature keeps the order).
  FillRankKeys(logits, vocab_size, &order_);
  size_t count = static_cast<size_t>(vocab_size);
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < count) {
    count = static_cast<size_t>(params_.top_k);
    std::nth_element(order_.begin(), order_.begin() + (count - 1), order_.end(), higher);
  }
  const int32_t best = KeyId(*std::max_element(order_.begin(), order_.begin() + count));
  const float max_logit = logits[best];
  if (!std::isfinite(max_logit)) return ArgMax(logits, vocab_size);

  // Unnormalised softmax weights exp((logit - max) / T) of the candidates, by id; the best
  // token has weight 1.
  weights_.resize(vocab_size);
  for (size_t i = 0; i < count; ++i) {
    const int32_t id = KeyId(order_[i]);
    weights_[id] = std::exp((logits[id] - max_logit) * inv_temperature);
  }
  // After top-k and top-p the kept candidates are order_[0, kept).
  size_t kept = count;
  if (params_.top_p < 1.0f) kept = TopPCount(count);

  // Min-p (a token's probability against the best one's, whose weight is 1) and the draw,
  // walking ids in increasing order so the result depends only on the seed and the kept set:
  // over the kept ids sorted, or, when most of the vocabulary is kept, over all ids with a
  // rank test (cheaper than sorting).
  const float min_weight = params_.min_p;
  kept_ids_.clear();
  if (kept * 8 < static_cast<size_t>(vocab_size)) {
    for (size_t i = 0; i < kept; ++i) {
      const int32_t id = KeyId(order_[i]);
      if (weights_[id] >= min_weight) kept_ids_.push_back(id);
    }
    std::sort(kept_ids_.begin(), kept_ids_.end());
  } else {
    const bool all = kept == static_cast<size_t>(vocab_size);
    const uint64_t cut = all ? 0 : *std::min_element(order_.begin(), order_.begin() + kept);
    for (int32_t id = 0; id < vocab_size; ++id) {
      if ((all || RankKey(logits, id) >= cut) && weights_[id] >= min_weight) {
        kept_ids_.push_back(id);
      }
    }
  }
  double total = 0.0;
  for (int32_t id : kept_ids_) total += weights_[id];
  if (kept_ids_.empty() || !(total > 0.0) || !std::isfinite(total)) return best;
  const double u = UniformDouble(rng_) * total;
  double cumulative = 0.0;
  int32_t last_positive = best;
  for (int32_t id : kept_ids_) {
    cumulative += weights_[id];
    if (weights_[id] > 0.0f) last_positive = id;
    if (u < cumulative) return id;
  }
  return last_positive;  // rounding: u landed at the very top
}

size_t Sampler::TopPCount(size_t count) {
  // The smallest highest-first prefix of order_[0, count) whose weight reaches top_p of the
  // total, found by repeated halving with nth_element (O(count) expected, no full sort).
  // Afterwards order_[0, keep) holds the kept keys, order_[keep - 1] the lowest-ranked one.
  const std::greater<uint64_t> higher;
  const auto mass = [&](size_t begin, size_t end) {
    double sum = 0.0;
    for (size_t i = begin; i < end; ++i) sum += weights_[KeyId(order_[i])];
    return sum;
  };
  const double target = static_cast<double>(params_.top_p) * mass(0, count);
  size_t lo = 0, hi = count;  // the cut index (keep - 1) lies in [lo, hi)
  double above = 0.0;         // weight of order_[0, lo), all ranked above order_[lo, hi)
  while (hi - lo > 64) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(order_.begin() + lo, order_.begin() + mid, order_.begin() + hi, higher);
    const double upper = mass(lo, mid);
    if (above + upper >= target) {
      hi = mid;
    } else {
      above += upper;
      lo = mid;
    }
  }
  std::sort(order_.begin() + lo, order_.begin() + hi, higher);
  for (size_t i = lo; i < hi; ++i) {
    above += weights_[KeyId(order_[i])];
    if (above >= target) return i + 1;
  }
  return hi;  // rounding kept the target out of reach: keep everything examined
}

}  // namespace flute
