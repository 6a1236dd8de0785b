// Sampler tests: each optimized path is compared with a plain reference (full sort, full
// softmax) on fresh random logits.
#include "engine/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace flute {
namespace {

std::vector<float> RandomLogits(int vocab_size, std::mt19937& rng, float scale = 2.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> logits(vocab_size);
  for (float& l : logits) l = normal(rng);
  return logits;
}

// The reference: penalties as vLLM applies them, written out plainly.
std::vector<float> ReferencePenalized(const std::vector<float>& logits, const SamplingParams& p,
                                      const std::vector<int32_t>& prompt,
                                      const std::vector<int32_t>& generated) {
  std::vector<float> out = logits;
  std::set<int32_t> seen(prompt.begin(), prompt.end());
  seen.insert(generated.begin(), generated.end());
  for (int32_t t : seen) out[t] = out[t] > 0 ? out[t] / p.repetition_penalty : out[t] * p.repetition_penalty;
  std::map<int32_t, int> counts;
  for (int32_t t : generated) ++counts[t];
  for (const auto& [t, c] : counts) {
    out[t] -= p.frequency_penalty * c + p.presence_penalty * (c > 0 ? 1.0f : 0.0f);
  }
  return out;
}

// The reference distribution after temperature, top-k, top-p and min-p (full sort).
std::vector<double> ReferenceProbs(const std::vector<float>& logits, const SamplingParams& p) {
  const int n = static_cast<int>(logits.size());
  std::vector<int> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  int keep = (p.top_k > 0 && p.top_k < n) ? p.top_k : n;
  std::vector<double> w(n, 0.0);
  double total = 0.0;
  for (int i = 0; i < keep; ++i) {
    w[ids[i]] = std::exp((static_cast<double>(logits[ids[i]]) - logits[ids[0]]) / p.temperature);
    total += w[ids[i]];
  }
  if (p.top_p < 1.0f) {
    double cumulative = 0.0;
    int i = 0;
    while (i < keep && cumulative < p.top_p * total) cumulative += w[ids[i++]];
    for (int j = i; j < keep; ++j) w[ids[j]] = 0.0;
    keep = i;
  }
  for (int i = 0; i < keep; ++i) {
    if (w[ids[i]] < p.min_p * w[ids[0]]) w[ids[i]] = 0.0;
  }
  const double sum = std::accumulate(w.begin(), w.end(), 0.0);
  for (double& x : w) x /= sum;
  return w;
}

// Draws `draws` tokens from the same logits (no Accept, so no penalty drift).
std::vector<int> Histogram(const std::vector<float>& logits, const SamplingParams& p, int draws) {
  Sampler sampler(p, {});
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits.data(), logits.size()).token];
  return counts;
}

// Checks the empirical counts against `probs`: nothing outside the support, every token of
// probability >= 0.5% seen, and a chi-square statistic below a generous bound (the seeds are
// fixed, so this cannot flake; a wrong distribution gives values in the hundreds).
void ExpectMatchesDistribution(const std::vector<int>& counts, const std::vector<double>& probs,
                               int draws, const std::string& what) {
  double chi_square = 0.0;
  int degrees = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << what << ": token " << i << " is outside the kept set";
      continue;
    }
    if (probs[i] >= 0.005) {
      EXPECT_GT(counts[i], 0) << what << ": kept token " << i << " never drawn";
    }
    const double expected = probs[i] * draws;
    chi_square += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++degrees;
  }
  // Mean = degrees, sd = sqrt(2·degrees); allow ~5 sd.
  EXPECT_LT(chi_square, degrees + 5.0 * std::sqrt(2.0 * std::max(degrees, 1)) + 10.0) << what;
}

int SupportSize(const std::vector<double>& probs) {
  return static_cast<int>(std::count_if(probs.begin(), probs.end(), [](double x) { return x > 0; }));
}

TEST(SamplerValidation, AcceptsDefaultsAndRejectsEachFieldByName) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}, 100).ok());
  struct Case {
    std::function<void(SamplingParams&)> set;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](SamplingParams& p) { p.temperature = -0.5f; }, "temperature"},
      {[](SamplingParams& p) { p.temperature = 101.0f; }, "temperature"},
      {[](SamplingParams& p) { p.temperature = std::nanf(""); }, "temperature"},
      {[](SamplingParams& p) { p.temperature = INFINITY; }, "temperature"},
      {[](SamplingParams& p) { p.top_k = -1; }, "top_k"},
      {[](SamplingParams& p) { p.top_p = 0.0f; }, "top_p"},
      {[](SamplingParams& p) { p.top_p = 1.5f; }, "top_p"},
      {[](SamplingParams& p) { p.top_p = std::nanf(""); }, "top_p"},
      {[](SamplingParams& p) { p.min_p = -0.1f; }, "min_p"},
      {[](SamplingParams& p) { p.min_p = 1.1f; }, "min_p"},
      {[](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty"},
      {[](SamplingParams& p) { p.repetition_penalty = 11.0f; }, "repetition_penalty"},
      {[](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty"},
      {[](SamplingParams& p) { p.frequency_penalty = -3.0f; }, "frequency_penalty"},
      {[](SamplingParams& p) { p.num_logprobs = 21; }, "num_logprobs"},
      {[](SamplingParams& p) { p.num_logprobs = -1; }, "num_logprobs"},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.set(p);
    const absl::Status status = ValidateSamplingParams(p, 100);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_EQ(std::string(status.message()).rfind(c.field + " must be", 0), 0u) << status;
  }
  SamplingParams p;
  p.top_p = 1.5f;
  EXPECT_EQ(ValidateSamplingParams(p, 100).message(), "top_p must be in (0, 1], got 1.5");
  p = SamplingParams{};
  p.temperature = 0.0f;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.repetition_penalty = 10.0f;
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 2.0f;
  p.num_logprobs = 20;
  EXPECT_TRUE(ValidateSamplingParams(p, 100).ok()) << "range ends are allowed";
}

TEST(Sampler, GreedyIsArgmaxWithTiesToLowestId) {
  std::mt19937 rng(1);
  SamplingParams p;
  p.temperature = 0.0f;
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> logits = RandomLogits(1000 + trial, rng);
    const int expected = std::max_element(logits.begin(), logits.end()) - logits.begin();
    Sampler sampler(p, {});
    EXPECT_EQ(sampler.Sample(logits.data(), logits.size()).token, expected);
  }
  std::vector<float> tied = {0.0f, 3.0f, 1.0f, 3.0f, 3.0f};
  Sampler sampler(p, {});
  EXPECT_EQ(sampler.Sample(tied.data(), tied.size()).token, 1);
}

TEST(Sampler, TopKOneIsGreedy) {
  std::mt19937 rng(2);
  SamplingParams p;
  p.top_k = 1;
  p.temperature = 1.5f;
  p.seed = 7;
  Sampler sampler(p, {});
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<float> logits = RandomLogits(3000, rng, 0.5f);
    const int expected = std::max_element(logits.begin(), logits.end()) - logits.begin();
    EXPECT_EQ(sampler.Sample(logits.data(), logits.size()).token, expected);
  }
}

std::vector<int32_t> SampleSequence(const SamplingParams& p, int steps) {
  std::mt19937 rng(3);  // the same logits every time
  Sampler sampler(p, {5, 6, 7});
  std::vector<int32_t> tokens;
  for (int i = 0; i < steps; ++i) {
    std::vector<float> logits = RandomLogits(500, rng, 1.0f);
    const int32_t token = sampler.Sample(logits.data(), logits.size()).token;
    sampler.Accept(token);
    tokens.push_back(token);
  }
  return tokens;
}

TEST(Sampler, SameSeedSameSequenceDifferentSeedsDiffer) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.95f;
  p.repetition_penalty = 1.2f;
  p.seed = 1234;
  const auto a = SampleSequence(p, 200);
  EXPECT_EQ(a, SampleSequence(p, 200));
  p.seed = 1235;
  EXPECT_NE(a, SampleSequence(p, 200));
  p.seed.reset();  // random_device seeds
  EXPECT_NE(SampleSequence(p, 200), SampleSequence(p, 200));
}

TEST(Sampler, FrequenciesFollowSoftmaxWithTemperature) {
  const std::vector<float> logits = {std::log(0.1f), std::log(0.2f), std::log(0.3f),
                                     std::log(0.4f)};
  for (float temperature : {1.0f, 0.5f, 2.0f}) {
    SamplingParams p;
    p.temperature = temperature;
    p.seed = 99;
    const int draws = 40000;
    ExpectMatchesDistribution(Histogram(logits, p, draws), ReferenceProbs(logits, p), draws,
                              "temperature " + std::to_string(temperature));
  }
}

TEST(Sampler, TopKTopPMinPKeepExactlyTheReferenceSupport) {
  std::mt19937 rng(4);
  struct Case {
    int top_k;
    float top_p, min_p, temperature;
  };
  const std::vector<Case> cases = {
      {5, 1.0f, 0.0f, 1.0f},   {0, 0.8f, 0.0f, 1.0f},  {0, 0.5f, 0.0f, 0.7f},
      {0, 1.0f, 0.2f, 1.0f},   {0, 1.0f, 0.05f, 1.3f}, {8, 0.9f, 0.0f, 1.0f},
      {10, 0.95f, 0.1f, 0.8f}, {0, 0.3f, 0.0f, 1.0f},  {0, 0.99f, 0.0f, 1.0f},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    const std::vector<float> logits = RandomLogits(60, rng, 1.5f);
    SamplingParams p;
    p.top_k = cases[c].top_k;
    p.top_p = cases[c].top_p;
    p.min_p = cases[c].min_p;
    p.temperature = cases[c].temperature;
    p.seed = 100 + c;
    const std::vector<double> probs = ReferenceProbs(logits, p);
    const std::string what = "case " + std::to_string(c);
    EXPECT_GT(SupportSize(probs), 1) << what << ": the case should keep several tokens";
    EXPECT_LT(SupportSize(probs), 60) << what << ": the case should drop tokens";
    const int draws = 30000;
    ExpectMatchesDistribution(Histogram(logits, p, draws), probs, draws, what);
  }
}

TEST(Sampler, TopPLargeVocabularyNeedsMoreThanTheFirstSortedBlock) {
  // Nearly flat logits over 5000 tokens: top_p=0.5 keeps ~2500, beyond the first 64/512 the
  // sampler sorts, so its growing partial sort must continue correctly.
  std::mt19937 rng(5);
  const std::vector<float> logits = RandomLogits(5000, rng, 0.01f);
  SamplingParams p;
  p.top_p = 0.5f;
  p.seed = 11;
  const std::vector<double> probs = ReferenceProbs(logits, p);
  EXPECT_GT(SupportSize(probs), 1000);
  // Float rounding may move the cut by the one token at the boundary; nothing further out.
  std::vector<int> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  const int boundary = ids[SupportSize(probs)];
  const std::vector<int> counts = Histogram(logits, p, 20000);
  int kept_seen = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0.0 && static_cast<int>(i) != boundary) {
      EXPECT_EQ(counts[i], 0) << "token " << i;
    }
    if (probs[i] > 0.0 && counts[i] > 0) ++kept_seen;
  }
  EXPECT_GT(kept_seen, SupportSize(probs) * 9 / 10) << "most kept tokens are drawn";
}

TEST(Sampler, PenaltiesMatchReference) {
  std::mt19937 rng(6);
  std::uniform_int_distribution<int> token(0, 39);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (int trial = 0; trial < 30; ++trial) {
    SamplingParams p;
    p.repetition_penalty = 0.5f + 2.0f * uniform(rng);
    p.frequency_penalty = -2.0f + 4.0f * uniform(rng);
    p.presence_penalty = -2.0f + 4.0f * uniform(rng);
    p.seed = trial;
    std::vector<int32_t> prompt, generated;
    for (int i = 0; i < 6; ++i) prompt.push_back(token(rng));
    for (int i = 0; i < 10; ++i) generated.push_back(token(rng));
    const std::vector<float> logits = RandomLogits(40, rng, 1.0f);
    const std::vector<float> penalized = ReferencePenalized(logits, p, prompt, generated);

    // Greedy picks the argmax of the penalized logits.
    SamplingParams greedy = p;
    greedy.temperature = 0.0f;
    Sampler greedy_sampler(greedy, prompt);
    for (int32_t t : generated) greedy_sampler.Accept(t);
    EXPECT_EQ(greedy_sampler.Sample(logits.data(), logits.size()).token,
              std::max_element(penalized.begin(), penalized.end()) - penalized.begin())
        << "trial " << trial;

    // Random sampling follows softmax of the penalized logits (few trials: it is slower).
    if (trial < 5) {
      Sampler sampler(p, prompt);
      for (int32_t t : generated) sampler.Accept(t);
      const int draws = 30000;
      std::vector<int> counts(logits.size(), 0);
      for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits.data(), logits.size()).token];
      ExpectMatchesDistribution(counts, ReferenceProbs(penalized, p), draws,
                                "penalty trial " + std::to_string(trial));
    }
  }
}

TEST(Sampler, LogprobsAreLogSoftmaxOfRawLogits) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    const std::vector<float> logits = RandomLogits(2000, rng, 3.0f);
    SamplingParams p;
    p.num_logprobs = 1 + trial % 20;
    p.repetition_penalty = 1.5f;  // must not change the reported numbers
    p.frequency_penalty = 1.0f;
    p.temperature = 0.7f;
    p.top_k = 20;
    p.seed = trial;
    Sampler sampler(p, {1, 2, 3});
    sampler.Accept(4);
    const SampledToken sampled = sampler.Sample(logits.data(), logits.size());

    double max_logit = *std::max_element(logits.begin(), logits.end()), sum = 0.0;
    for (float l : logits) sum += std::exp(l - max_logit);
    const double lse = max_logit + std::log(sum);
    std::vector<int> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::sort(ids.begin(), ids.end(), [&](int a, int b) { return logits[a] > logits[b]; });

    EXPECT_NEAR(sampled.logprob, logits[sampled.token] - lse, 1e-5);
    ASSERT_EQ(static_cast<int>(sampled.top.size()), p.num_logprobs);
    for (int i = 0; i < p.num_logprobs; ++i) {
      EXPECT_EQ(sampled.top[i].token, ids[i]) << "rank " << i;
      EXPECT_NEAR(sampled.top[i].logprob, logits[ids[i]] - lse, 1e-5) << "rank " << i;
    }
  }
}

TEST(Sampler, MaskedTokensAreNeverDrawn) {
  // -inf logits (banned tokens) must never come out, whatever the settings.
  std::mt19937 rng(9);
  std::vector<float> logits = RandomLogits(300, rng, 1.0f);
  for (size_t i = 0; i < logits.size(); i += 2) logits[i] = -INFINITY;
  const std::vector<SamplingParams> settings = [] {
    std::vector<SamplingParams> all(5);
    all[1].top_k = 250;
    all[2].top_p = 0.999f;
    all[3].min_p = 0.0001f;
    all[4].temperature = 5.0f;
    for (size_t i = 0; i < all.size(); ++i) all[i].seed = i;
    return all;
  }();
  for (const SamplingParams& p : settings) {
    const std::vector<int> counts = Histogram(logits, p, 3000);
    for (size_t i = 0; i < logits.size(); i += 2) EXPECT_EQ(counts[i], 0) << "masked token " << i;
  }
  // Only one token allowed: it is the answer.
  std::vector<float> one(50, -INFINITY);
  one[17] = 0.5f;
  SamplingParams p;
  p.seed = 3;
  Sampler sampler(p, {});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sampler.Sample(one.data(), one.size()).token, 17);
}

TEST(Sampler, LargeVocabularyIsFast) {
  // LLaMA-3 vocabulary with typical settings; reports the time per sample.
  std::mt19937 rng(8);
  const std::vector<float> logits = RandomLogits(128256, rng, 3.0f);
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  p.top_k = 0;
  p.repetition_penalty = 1.1f;
  p.num_logprobs = 5;
  p.seed = 1;
  std::vector<int32_t> prompt(500);
  std::iota(prompt.begin(), prompt.end(), 0);
  Sampler sampler(p, prompt);
  const int iterations = 50;
  const auto start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();
  for (int i = 0; i < iterations; ++i) {
    const SampledToken t = sampler.Sample(logits.data(), logits.size());
    ASSERT_GE(t.token, 0);
    ASSERT_LT(t.token, 128256);
    sampler.Accept(t.token);
  }
  const double wall_ms = std::chrono::duration<double, std::milli>(
                             std::chrono::steady_clock::now() - start).count() / iterations;
  const double cpu_ms = 1000.0 * (std::clock() - cpu_start) / CLOCKS_PER_SEC / iterations;
  std::printf("[ info ] sampling over 128256 logits (T=0.8, top_p=0.9, rep 1.1, logprobs=5): "
              "%.3f ms CPU, %.3f ms wall per token\n", cpu_ms, wall_ms);
}

}  // namespace
}  // namespace flute
