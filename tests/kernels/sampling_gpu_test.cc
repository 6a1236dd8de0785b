// The GPU sampler against a plain full-sort CPU reference of the same semantics (see
// kernels/sampling.h), on fresh random logits every run: greedy with planted ties, raw
// logprobs and top logprobs, penalties, top-k / top-p / min-p alone and combined (with ties
// at the top-k threshold), the draw's inverse CDF for given random_bits, reproducibility, a
// chi-square check of the distribution, and argument errors. Skips with a message when the
// build has no CUDA or the machine has no GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/sampling.h"
#include "tests/kernels/gpu_test_util.h"

#ifdef FLUTE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace flute::gpu {
namespace {

TEST(SamplingRowsTest, ValidationNamesTheField) {
  SamplingRow row;
  EXPECT_TRUE(ValidateSamplingRows(&row, 1, 100).ok());
  row.num_logprobs = kMaxLogprobs + 1;
  absl::Status status = ValidateSamplingRows(&row, 1, 100);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(status.message()).find("num_logprobs"), std::string::npos) << status;
  row = SamplingRow();
  row.top_p = 0.0f;
  EXPECT_EQ(ValidateSamplingRows(&row, 1, 100).code(), absl::StatusCode::kInvalidArgument);
  row = SamplingRow();
  row.temperature = -1.0f;
  EXPECT_EQ(ValidateSamplingRows(&row, 1, 100).code(), absl::StatusCode::kInvalidArgument);
  row = SamplingRow();
  row.penalty_end = -1;
  EXPECT_EQ(ValidateSamplingRows(&row, 1, 100).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateSamplingRows(&row, 1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateSamplingRows(&row, -1, 100).code(), absl::StatusCode::kInvalidArgument);
}

#ifndef FLUTE_HAVE_CUDA
TEST(SamplingGpuTest, SkippedWithoutCuda) {
  EXPECT_EQ(LaunchSampling(nullptr, 1, 1, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0,
                           nullptr)
                .code(),
            absl::StatusCode::kUnimplemented);
  GTEST_SKIP() << "built without CUDA: the GPU sampling tests need nvcc at build time";
}
#else

#define REQUIRE_GPU() REQUIRE_GPU_FOR("sampling")

// ---------------- CPU reference (full sorts, written for clarity) ----------------

constexpr double kFixedScale = 1099511627776.0;  // 2^40
// Relative distance treated as too close to call: GPU and CPU expf differ by at most ~3 ulps
// (3.6e-7), so a weight, and a sum of weights, may differ by that much relative to itself.
constexpr double kAmbiguity = 2e-6;

uint64_t RankKey(float value, int32_t id) {
  if (value == 0.0f) value = 0.0f;
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(bits) << 32) | (0xffffffffu - static_cast<uint32_t>(id));
}

// Ids sorted by decreasing rank key (higher logit first, ties to the lower id).
std::vector<int32_t> RankOrder(const std::vector<float>& logits) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(),
            [&](int32_t a, int32_t b) { return RankKey(logits[a], a) > RankKey(logits[b], b); });
  return ids;
}

struct RowInput {
  SamplingRow params;
  std::vector<int32_t> tokens, prompt_counts, generated_counts;  // penalty entries
  std::vector<float> logits;
};

struct Expected {
  int32_t token = -1;
  bool draw_checkable = true;  // false when a float boundary is too close to call
  float logprob = 0;
  double log_normalizer = 0;
  std::vector<int32_t> top_tokens;
  std::vector<float> top_logprobs;
  std::vector<double> probabilities;  // of the draw, by id (empty for greedy)
  std::vector<int32_t> alternatives;  // also acceptable: a boundary too close to call
};

float Penalize(float l, const SamplingRow& p, int prompt, int generated) {
  if (p.repetition_penalty != 1.0f && (prompt > 0 || generated > 0)) {
    l = l > 0.0f ? l / p.repetition_penalty : l * p.repetition_penalty;
  }
  if (generated > 0) {
    const float frequency = p.frequency_penalty * static_cast<float>(generated);
    const float amount = frequency + p.presence_penalty;
    l = l - amount;
  }
  return l;
}

int32_t ArgMax(const std::vector<float>& l) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(l.size()); ++i) {
    if (l[i] > l[best] || std::isnan(l[best])) best = i;
  }
  return best;
}

bool Near(double a, double b, double scale) { return std::fabs(a - b) <= kAmbiguity * scale; }

// Min-p over the `kept` best of `order`, then the inverse-CDF draw in increasing id order
// (sampling.h). Clears *checkable when a weight is too close to min_p to call; when t is too
// close to either end of the chosen token's interval, adds the neighbouring kept id to
// *alternatives. Fills probabilities[vocab] with the draw's distribution.
int32_t DrawAmongTopRanked(const std::vector<int32_t>& order, size_t kept,
                           const std::vector<float>& w, const std::vector<uint64_t>& fixed,
                           const SamplingRow& p, bool* checkable,
                           std::vector<double>* probabilities,
                           std::vector<int32_t>* alternatives) {
  std::vector<int32_t> ids(order.begin(), order.begin() + kept);
  std::sort(ids.begin(), ids.end());
  std::vector<int32_t> final_ids;
  uint64_t total = 0;
  for (int32_t id : ids) {
    if (p.min_p > 0.0f && Near(w[id], p.min_p, p.min_p)) *checkable = false;
    if (w[id] >= p.min_p) {
      final_ids.push_back(id);
      total += fixed[id];
    }
  }
  probabilities->assign(order.size(), 0.0);
  for (int32_t id : final_ids) (*probabilities)[id] = static_cast<double>(fixed[id]) / total;
  const double u = static_cast<double>(p.random_bits >> 11) * 0x1.0p-53;
  uint64_t t = static_cast<uint64_t>(std::floor(u * static_cast<double>(total)));
  if (t >= total) t = total - 1;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < final_ids.size(); ++i) {
    const uint64_t before = cumulative;
    cumulative += fixed[final_ids[i]];
    if (cumulative > t) {
      if (i > 0 && Near(before, t, total)) alternatives->push_back(final_ids[i - 1]);
      if (i + 1 < final_ids.size() && Near(cumulative, t, total)) {
        alternatives->push_back(final_ids[i + 1]);
      }
      return final_ids[i];
    }
  }
  return -1;  // unreachable: t < total
}

Expected Reference(const RowInput& in) {
  const SamplingRow& p = in.params;
  const std::vector<float>& raw = in.logits;
  const int vocab = static_cast<int>(raw.size());
  Expected e;

  // Raw log-softmax and top logprobs.
  float max_raw = -std::numeric_limits<float>::infinity();
  for (float x : raw) max_raw = std::max(max_raw, x);
  double sum = 0;
  for (float x : raw) sum += std::exp(x - max_raw);
  const double log_normalizer = max_raw + std::log(sum);
  e.log_normalizer = log_normalizer;
  const std::vector<int32_t> raw_order = RankOrder(raw);
  for (int i = 0; i < std::min(p.num_logprobs, vocab); ++i) {
    e.top_tokens.push_back(raw_order[i]);
    e.top_logprobs.push_back(static_cast<float>(raw[raw_order[i]] - log_normalizer));
  }

  // Penalties.
  std::vector<float> l = raw;
  for (size_t j = 0; j < in.tokens.size(); ++j) {
    l[in.tokens[j]] = Penalize(l[in.tokens[j]], p, in.prompt_counts[j], in.generated_counts[j]);
  }

  e.token = ArgMax(l);
  if (p.temperature != 0.0f) {
    const float max_logit = l[e.token];
    const float inv_t = 1.0f / p.temperature;
    const std::vector<int32_t> order = RankOrder(l);
    // Top-k, then fixed-point weights.
    size_t count = order.size();
    if (p.top_k > 0 && p.top_k < vocab) count = p.top_k;
    std::vector<float> w(vocab, 0.0f);
    std::vector<uint64_t> fixed(vocab, 0);
    for (size_t i = 0; i < count; ++i) {
      const int32_t id = order[i];
      w[id] = std::exp((l[id] - max_logit) * inv_t);
      fixed[id] = static_cast<uint64_t>(std::nearbyint(static_cast<double>(w[id]) * kFixedScale));
    }
    // Top-p: the shortest prefix reaching ceil(top_p * total). When the sum at the cut is
    // too close to the target to call, the neighbouring cut is an acceptable alternative.
    size_t kept = count;
    std::vector<size_t> other_cuts;
    if (p.top_p < 1.0f) {
      uint64_t total = 0;
      for (size_t i = 0; i < count; ++i) total += fixed[order[i]];
      const double target = std::min<double>(
          static_cast<double>(total), std::ceil(static_cast<double>(p.top_p) * total));
      uint64_t cumulative = 0;
      for (kept = 0; kept < count;) {
        const uint64_t before = cumulative;
        cumulative += fixed[order[kept]];
        ++kept;
        if (cumulative >= target) {
          if (kept > 1 && Near(before, target, total)) other_cuts.push_back(kept - 1);
          if (kept < count && Near(cumulative, target, total)) other_cuts.push_back(kept + 1);
          break;
        }
      }
    }
    e.token = DrawAmongTopRanked(order, kept, w, fixed, p, &e.draw_checkable, &e.probabilities,
                                 &e.alternatives);
    for (size_t cut : other_cuts) {
      std::vector<double> unused;
      e.alternatives.push_back(DrawAmongTopRanked(order, cut, w, fixed, p, &e.draw_checkable,
                                                  &unused, &e.alternatives));
    }
  }
  e.logprob = static_cast<float>(raw[e.token] - log_normalizer);
  return e;
}

// ---------------- running the kernel ----------------

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t n) {
    if (cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) ptr = nullptr;
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

template <typename T>
void Upload(const std::vector<T>& host, DeviceBuffer<T>& device) {
  if (!host.empty()) {
    ASSERT_EQ(cudaMemcpy(device.ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
}

// Runs the kernel on the rows (all of one vocab) and returns the results.
void RunRows(const std::vector<RowInput>& rows, int vocab, std::vector<SampleResult>* results,
             bool batch_invariant = false) {
  const int n = static_cast<int>(rows.size());
  std::vector<float> logits;
  std::vector<SamplingRow> params;
  std::vector<int32_t> tokens, prompt, generated;
  for (const RowInput& r : rows) {
    logits.insert(logits.end(), r.logits.begin(), r.logits.end());
    SamplingRow p = r.params;
    p.penalty_begin = static_cast<int32_t>(tokens.size());
    tokens.insert(tokens.end(), r.tokens.begin(), r.tokens.end());
    prompt.insert(prompt.end(), r.prompt_counts.begin(), r.prompt_counts.end());
    generated.insert(generated.end(), r.generated_counts.begin(), r.generated_counts.end());
    p.penalty_end = static_cast<int32_t>(tokens.size());
    params.push_back(p);
  }
  ASSERT_TRUE(ValidateSamplingRows(params.data(), n, vocab).ok());
  DeviceBuffer<float> d_logits(logits.size());
  DeviceBuffer<SamplingRow> d_params(params.size());
  DeviceBuffer<int32_t> d_tokens(tokens.size()), d_prompt(prompt.size()), d_generated(generated.size());
  DeviceBuffer<SampleResult> d_results(n);
  const size_t workspace_bytes = SamplingWorkspaceBytes(n, vocab);
  DeviceBuffer<char> d_workspace(workspace_bytes);
  ASSERT_TRUE(d_logits.ptr && d_params.ptr && d_tokens.ptr && d_results.ptr && d_workspace.ptr);
  Upload(logits, d_logits);
  Upload(params, d_params);
  Upload(tokens, d_tokens);
  Upload(prompt, d_prompt);
  Upload(generated, d_generated);
  CUDA_OK(cudaMemset(d_results.ptr, 0xff, n * sizeof(SampleResult)));  // poison
  const absl::Status status =
      LaunchSampling(d_logits.ptr, n, vocab, d_params.ptr, d_tokens.ptr, d_prompt.ptr,
                     d_generated.ptr, d_results.ptr, d_workspace.ptr, workspace_bytes, nullptr, batch_invariant);
  ASSERT_TRUE(status.ok()) << status;
  CUDA_OK(cudaDeviceSynchronize());
  results->resize(n);
  CUDA_OK(cudaMemcpy(results->data(), d_results.ptr, n * sizeof(SampleResult),
                     cudaMemcpyDeviceToHost));
}

// ---------------- random inputs ----------------

uint64_t Seed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

std::vector<float> RandomLogits(std::mt19937_64& rng, int vocab) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale_dist(0.5f, 4.0f);
  const float scale = scale_dist(rng);
  std::vector<float> logits(vocab);
  for (float& x : logits) x = normal(rng) * scale;
  // A few peaked tokens, as a language model produces.
  std::uniform_int_distribution<int> id(0, vocab - 1);
  for (int i = 0; i < 5; ++i) logits[id(rng)] += 3.0f * scale;
  return logits;
}

// Copies the value at `rank` (0 = highest) onto `copies` other random ids: ties there.
void PlantTies(std::mt19937_64& rng, std::vector<float>* logits, int rank, int copies) {
  const std::vector<int32_t> order = RankOrder(*logits);
  std::uniform_int_distribution<int> id(0, static_cast<int>(logits->size()) - 1);
  const float value = (*logits)[order[std::min<size_t>(rank, order.size() - 1)]];
  for (int i = 0; i < copies; ++i) (*logits)[id(rng)] = value;
}

RowInput RandomRow(std::mt19937_64& rng, int vocab, int kind) {
  RowInput row;
  row.logits = RandomLogits(rng, vocab);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::uniform_int_distribution<int> logprobs(0, kMaxLogprobs);
  SamplingRow& p = row.params;
  p.random_bits = rng();
  p.num_logprobs = logprobs(rng);
  p.temperature = kind == 0 ? 0.0f : 0.3f + 1.5f * unit(rng);
  const int k = 1 + static_cast<int>(unit(rng) * std::min(vocab - 1, 200));
  switch (kind) {
    case 0: break;                                    // greedy
    case 1: break;                                    // plain temperature
    case 2: p.top_k = k; break;                       // top-k
    case 3: p.top_p = 0.5f + 0.45f * unit(rng); break;  // top-p
    case 4: p.min_p = 0.01f + 0.2f * unit(rng); break;  // min-p
    default:                                          // all three
      p.top_k = k;
      p.top_p = 0.6f + 0.35f * unit(rng);
      p.min_p = 0.02f * unit(rng);
      break;
  }
  // Ties: at the top (greedy) and at the top-k threshold.
  PlantTies(rng, &row.logits, 0, static_cast<int>(unit(rng) * 3));
  if (p.top_k > 0) PlantTies(rng, &row.logits, p.top_k - 1, 1 + static_cast<int>(unit(rng) * 4));
  // Penalties on half the rows, on some of the best tokens (so they matter) and others.
  if (unit(rng) < 0.5f) {
    p.repetition_penalty = 0.8f + 1.2f * unit(rng);
    p.presence_penalty = -1.0f + 2.0f * unit(rng);
    p.frequency_penalty = -1.0f + 2.0f * unit(rng);
    const std::vector<int32_t> order = RankOrder(row.logits);
    std::vector<char> used(vocab, 0);
    std::uniform_int_distribution<int> id(0, vocab - 1);
    std::uniform_int_distribution<int> count(0, 3);
    const int entries = 1 + static_cast<int>(unit(rng) * 100);
    for (int j = 0; j < entries; ++j) {
      const int32_t token = j < 4 ? order[j] : id(rng);
      if (used[token]) continue;
      used[token] = 1;
      int prompt_count = count(rng), generated_count = count(rng);
      if (prompt_count + generated_count == 0) generated_count = 1;
      row.tokens.push_back(token);
      row.prompt_counts.push_back(prompt_count);
      row.generated_counts.push_back(generated_count);
    }
  }
  return row;
}

void ExpectMatches(const RowInput& row, const SampleResult& got, const Expected& want,
                   const std::string& where, int* checked_draws) {
  const bool greedy = row.params.temperature == 0.0f;
  const bool alternative = std::find(want.alternatives.begin(), want.alternatives.end(),
                                     got.token) != want.alternatives.end();
  if (greedy || want.draw_checkable) {
    if (!alternative) {
      EXPECT_EQ(got.token, want.token) << where;
    }
    if (!greedy) ++*checked_draws;
  }
  if (got.token >= 0 && got.token < static_cast<int>(row.logits.size())) {
    if (!want.probabilities.empty() && !alternative) {
      EXPECT_GT(want.probabilities[got.token], 0.0) << where << ": drew a token outside the kept set";
    }
    // The logprob of whatever token was chosen, against the raw log-softmax.
    const float expected_logprob = static_cast<float>(row.logits[got.token] - want.log_normalizer);
    EXPECT_NEAR(got.logprob, expected_logprob, 1e-4) << where;
  } else {
    ADD_FAILURE() << where << ": token " << got.token << " out of range";
  }
  for (size_t i = 0; i < want.top_tokens.size(); ++i) {
    EXPECT_EQ(got.top_tokens[i], want.top_tokens[i]) << where << " top " << i;
    EXPECT_NEAR(got.top_logprobs[i], want.top_logprobs[i], 1e-4) << where << " top " << i;
  }
}

class SamplingGpuTest : public ::testing::TestWithParam<int> {};

TEST_P(SamplingGpuTest, MatchesReferenceOnMixedBatches) {
  REQUIRE_GPU();
  const int vocab = GetParam();
  const uint64_t seed = Seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << ", vocab " << vocab);
  std::mt19937_64 rng(seed);
  int checked_draws = 0, draws = 0;
  // Batches 0-1 with the kernels' own split of rows into slices (128 per row at 1 row, 8 at
  // 32), batch 2 with one slice per row, batch 3 with 37 (FLUTE_SAMPLING_SLICES).
  const char* const forced_slices[] = {nullptr, nullptr, "1", "37"};
  for (int batch = 0; batch < 4; ++batch) {
    const int rows = batch == 0 ? 1 : 32;
    std::vector<RowInput> inputs;
    for (int r = 0; r < rows; ++r) inputs.push_back(RandomRow(rng, vocab, (r + batch) % 6));
    std::vector<SampleResult> results;
    if (forced_slices[batch] != nullptr) setenv("FLUTE_SAMPLING_SLICES", forced_slices[batch], 1);
    RunRows(inputs, vocab, &results);
    unsetenv("FLUTE_SAMPLING_SLICES");
    if (HasFatalFailure()) return;
    for (int r = 0; r < rows; ++r) {
      const Expected want = Reference(inputs[r]);
      draws += inputs[r].params.temperature != 0.0f;
      ExpectMatches(inputs[r], results[r], want,
                    (::testing::Message() << "batch " << batch << " row " << r << " kind "
                                        << (r + batch) % 6)
                        .GetString(),
                    &checked_draws);
    }
  }
  // Boundary skips must stay rare, or the test checks nothing.
  EXPECT_GE(checked_draws * 10, draws * 8) << checked_draws << " of " << draws << " draws checked";
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, SamplingGpuTest, ::testing::Values(1003, 4096, 128256));

// Top-p after top-k only narrows the top-k set. Regression: with k = 1 and the two best
// logits sharing their high key bits (7.82 and 7.49: same exponent and first mantissa bits),
// the top-p select stopped on a prefix below the top-k cut and the second token was drawn.
TEST(SamplingGpuCutTest, TopPNeverWidensTheTopKSet) {
  REQUIRE_GPU();
  const uint64_t seed = Seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int vocab = 4096;
  std::vector<RowInput> rows;
  for (int i = 0; i < 64; ++i) {
    RowInput row;
    row.logits.resize(vocab);
    for (float& x : row.logits) x = normal(rng);
    row.logits[100] = 7.82f;
    row.logits[200] = 7.49f;
    row.params.temperature = 0.5f;
    // k = 1; or k = 2 with a top-p that the best token alone reaches (weights 1 and 0.52).
    row.params.top_k = i % 2 == 0 ? 1 : 2;
    row.params.top_p = i % 2 == 0 ? 0.73f : 0.5f;
    row.params.random_bits = rng();
    rows.push_back(row);
  }
  std::vector<SampleResult> results;
  RunRows(rows, vocab, &results);
  if (HasFatalFailure()) return;
  for (int i = 0; i < 64; ++i) EXPECT_EQ(results[i].token, 100) << "row " << i << " top_k " << rows[i].params.top_k;
}

// Penalties that decide the result: the best token, heavily penalised, must lose.
TEST(SamplingGpuPenaltyTest, PenaltiesChangeTheChoiceAsTheReference) {
  REQUIRE_GPU();
  const uint64_t seed = Seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int vocab = 4096;
  std::vector<RowInput> rows;
  for (int kind = 0; kind < 4; ++kind) {
    RowInput row;
    row.logits = RandomLogits(rng, vocab);
    const int32_t best = ArgMax(row.logits);
    row.params.temperature = 0.0f;
    row.params.num_logprobs = 3;
    row.tokens = {best};
    row.prompt_counts = {kind == 1 ? 2 : 0};
    row.generated_counts = {kind == 1 ? 0 : 3};
    if (kind == 0 || kind == 1) row.params.repetition_penalty = 10.0f;
    if (kind == 2) row.params.frequency_penalty = 2.0f;
    if (kind == 3) row.params.presence_penalty = 2.0f;
    // Make the penalty decisive: the runner-up is close behind.
    const std::vector<int32_t> order = RankOrder(row.logits);
    row.logits[order[1]] = row.logits[best] - 0.5f;
    rows.push_back(row);
  }
  std::vector<SampleResult> results;
  RunRows(rows, vocab, &results);
  if (HasFatalFailure()) return;
  for (size_t r = 0; r < rows.size(); ++r) {
    const Expected want = Reference(rows[r]);
    EXPECT_NE(want.token, rows[r].tokens[0]) << "reference: the penalty should decide, row " << r;
    EXPECT_EQ(results[r].token, want.token) << "row " << r;
    // Logprobs stay those of the raw logits: the penalised best is still reported first.
    EXPECT_EQ(results[r].top_tokens[0], rows[r].tokens[0]) << "row " << r;
    EXPECT_NEAR(results[r].logprob, want.logprob, 1e-4) << "row " << r;
  }
}

TEST(SamplingGpuDrawTest, SameBitsGiveTheSameToken) {
  REQUIRE_GPU();
  const uint64_t seed = Seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int vocab = 128256;
  std::vector<RowInput> rows;
  for (int r = 0; r < 16; ++r) rows.push_back(RandomRow(rng, vocab, 1 + r % 5));
  std::vector<SampleResult> first, second;
  RunRows(rows, vocab, &first);
  if (HasFatalFailure()) return;
  RunRows(rows, vocab, &second);
  if (HasFatalFailure()) return;
  for (size_t r = 0; r < rows.size(); ++r) EXPECT_EQ(first[r].token, second[r].token) << "row " << r;
}

// Chi-square upper quantile by the Wilson-Hilferty approximation (z = 4.265: p = 1e-5).
double ChiSquareCritical(int dof) {
  const double z = 4.265;
  const double a = 2.0 / (9.0 * dof);
  return dof * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}

TEST(SamplingGpuDrawTest, DistributionMatchesTheReference) {
  REQUIRE_GPU();
  const uint64_t seed = Seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int vocab = 24, draws = 20000;
  RowInput base;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  base.logits.resize(vocab);
  for (float& x : base.logits) x = normal(rng);
  base.params.temperature = 0.9f;
  base.params.top_k = 16;
  base.params.top_p = 0.95f;
  base.params.min_p = 0.02f;
  std::vector<RowInput> rows(draws, base);
  for (RowInput& row : rows) row.params.random_bits = rng();
  std::vector<SampleResult> results;
  RunRows(rows, vocab, &results);
  if (HasFatalFailure()) return;
  const Expected want = Reference(base);
  std::vector<int> counts(vocab, 0);
  for (const SampleResult& r : results) {
    ASSERT_TRUE(r.token >= 0 && r.token < vocab) << r.token;
    ++counts[r.token];
  }
  double chi2 = 0;
  int cells = 0;
  for (int id = 0; id < vocab; ++id) {
    const double expected = want.probabilities[id] * draws;
    if (expected == 0) {
      EXPECT_EQ(counts[id], 0) << "token " << id << " is outside the kept set";
      continue;
    }
    chi2 += (counts[id] - expected) * (counts[id] - expected) / expected;
    ++cells;
  }
  ASSERT_GE(cells, 2);
  EXPECT_LT(chi2, ChiSquareCritical(cells - 1)) << cells << " kept tokens";
}

// The engine's batch-invariant mode: a row sampled alone and the same row among 32 give the
// same token and the same bits of its logprob and top logprobs (the slices a row is cut into
// no longer depend on the rows of the launch). Rows of every kind, penalties included, on the
// LLaMA-3 vocabulary (128 slices per row alone, 8 among 32 without the mode).
TEST(SamplingGpuInvariantTest, RowAloneEqualsTheSameRowAmong32Bitwise) {
  REQUIRE_GPU();
  std::mt19937_64 rng(Seed());
  constexpr int kVocab = 128256;
  std::vector<RowInput> rows;
  for (int i = 0; i < 32; ++i) rows.push_back(RandomRow(rng, kVocab, i % 6));
  for (RowInput& row : rows) row.params.num_logprobs = 5;
  std::vector<SampleResult> together, together_default, alone;
  RunRows(rows, kVocab, &together, /*batch_invariant=*/true);
  RunRows(rows, kVocab, &together_default);
  int default_mode_differences = 0;
  for (int i = 0; i < 32; ++i) {
    RunRows({rows[i]}, kVocab, &alone, /*batch_invariant=*/true);
    EXPECT_EQ(alone[0].token, together[i].token) << "row " << i;
    EXPECT_EQ(0, std::memcmp(&alone[0].logprob, &together[i].logprob, sizeof(float)))
        << "row " << i << ": logprob " << alone[0].logprob << " alone, " << together[i].logprob << " among 32";
    EXPECT_EQ(0, std::memcmp(alone[0].top_logprobs, together[i].top_logprobs, 5 * sizeof(float))) << "row " << i;
    if (std::memcmp(&alone[0].logprob, &together_default[i].logprob, sizeof(float)) != 0) ++default_mode_differences;
  }
  std::printf("without the mode (128 slices alone, 8 among 32): %d of 32 logprobs differ in their bits\n",
              default_mode_differences);
}

// Not a check: prints the time of one launch on 32 rows of the LLaMA-3 vocabulary, each row
// with top-k 50, top-p 0.9, 5 logprobs and 64 penalty tokens (the logits are penalised again
// on every launch, which changes nothing of the work done).
TEST(SamplingGpuTimingTest, Reports32RowsOf128256) {
  REQUIRE_GPU();
  std::mt19937_64 rng(Seed());
  const int rows = 32, vocab = 128256, entries = 64;
  std::vector<float> logits;
  std::vector<SamplingRow> params(rows);
  std::vector<int32_t> tokens, counts;
  for (int r = 0; r < rows; ++r) {
    const std::vector<float> row = RandomLogits(rng, vocab);
    logits.insert(logits.end(), row.begin(), row.end());
    params[r].temperature = 0.8f;
    params[r].top_k = 50;
    params[r].top_p = 0.9f;
    params[r].num_logprobs = 5;
    params[r].repetition_penalty = 1.1f;
    params[r].penalty_begin = r * entries;
    params[r].penalty_end = (r + 1) * entries;
    params[r].random_bits = rng();
    for (int j = 0; j < entries; ++j) tokens.push_back(j * 997 % vocab);
  }
  counts.assign(tokens.size(), 1);
  DeviceBuffer<float> d_logits(logits.size());
  DeviceBuffer<SamplingRow> d_params(rows);
  DeviceBuffer<int32_t> d_tokens(tokens.size()), d_counts(counts.size());
  DeviceBuffer<SampleResult> d_results(rows);
  const size_t workspace_bytes = SamplingWorkspaceBytes(rows, vocab);
  DeviceBuffer<char> d_workspace(workspace_bytes);
  Upload(logits, d_logits);
  Upload(params, d_params);
  Upload(tokens, d_tokens);
  Upload(counts, d_counts);
  const auto launch = [&] {
    return LaunchSampling(d_logits.ptr, rows, vocab, d_params.ptr, d_tokens.ptr, d_counts.ptr,
                          d_counts.ptr, d_results.ptr, d_workspace.ptr, workspace_bytes, nullptr);
  };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(launch().ok());
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  const int iterations = 20;
  CUDA_OK(cudaEventRecord(start));
  for (int i = 0; i < iterations; ++i) ASSERT_TRUE(launch().ok());
  CUDA_OK(cudaEventRecord(stop));
  CUDA_OK(cudaEventSynchronize(stop));
  float ms = 0;
  CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
  std::printf("sampling 32 x 128256 (top-k 50, top-p 0.9, 5 logprobs, 64 penalties): %.1f us\n",
              1000.0 * ms / iterations);
  // Greedy rows without logprobs or penalties (a decode step's usual case), 1 and 16 rows.
  for (int r = 0; r < rows; ++r) {
    params[r] = SamplingRow{};
    params[r].temperature = 0.0f;
  }
  Upload(params, d_params);
  for (int greedy_rows : {1, 16}) {
    const auto greedy = [&] {
      return LaunchSampling(d_logits.ptr, greedy_rows, vocab, d_params.ptr, d_tokens.ptr, d_counts.ptr,
                            d_counts.ptr, d_results.ptr, d_workspace.ptr, workspace_bytes, nullptr);
    };
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(greedy().ok());
    CUDA_OK(cudaEventRecord(start));
    for (int i = 0; i < iterations; ++i) ASSERT_TRUE(greedy().ok());
    CUDA_OK(cudaEventRecord(stop));
    CUDA_OK(cudaEventSynchronize(stop));
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    std::printf("sampling %d x 128256 greedy (no logprobs, no penalties): %.1f us\n", greedy_rows,
                1000.0 * ms / iterations);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

TEST(SamplingGpuArgsTest, BadArgumentsAreInvalid) {
  // The checks come before any CUDA call, so this runs without a GPU too.
  float logits = 0;
  SamplingRow params;
  SampleResult result;
  char workspace[64];
  const auto launch = [&](int rows, int vocab, size_t workspace_bytes) {
    return LaunchSampling(&logits, rows, vocab, &params, nullptr, nullptr, nullptr, &result,
                          workspace, workspace_bytes, nullptr)
        .code();
  };
  EXPECT_EQ(launch(1, 0, 64), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(1, -5, 64), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(-1, 4, 64), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(4, 1000, SamplingWorkspaceBytes(4, 1000) - 1), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(LaunchSampling(&logits, 0, 4, &params, nullptr, nullptr, nullptr, &result, nullptr, 0,
                             nullptr)
                  .ok());
  // num_logprobs lives in device memory: the host check is ValidateSamplingRows.
  params.num_logprobs = kMaxLogprobs + 1;
  EXPECT_EQ(ValidateSamplingRows(&params, 1, 4).code(), absl::StatusCode::kInvalidArgument);
}

#endif  // FLUTE_HAVE_CUDA

}  // namespace
}  // namespace flute::gpu
