// The CPU reference backend against Hugging Face transformers (references made by
// tests/reference/make_tiny_llama.py and make_manpage_reference.py on the GPU machine),
// and against itself: prefill vs decode vs chunked prefill vs batched.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/generation.h"
#include "engine/kv_cache.h"
#include "engine/perplexity.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/backend_test_util.h"
#include "tests/test_util.h"

namespace flute {
namespace {

struct Reference {
  std::unique_ptr<SafetensorsFile> file;
  std::vector<int32_t> ids;
  const float* logits = nullptr;  // [ids.size(), vocab]
  float range = 0.0f;
};

Reference LoadReference(const std::string& path, int vocab) {
  Reference ref;
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return ref;
  ref.file = std::move(file).value();
  const TensorView& ids = ref.file->tensors().at("input_ids");
  const TensorView& logits = ref.file->tensors().at("logits");
  const auto* id_data = static_cast<const int32_t*>(ids.data);
  ref.ids.assign(id_data, id_data + ids.num_elements());
  EXPECT_EQ(logits.shape, (std::vector<int64_t>{static_cast<int64_t>(ref.ids.size()), vocab}));
  ref.logits = static_cast<const float*>(logits.data);
  const auto [lo, hi] = std::minmax_element(ref.logits, ref.logits + logits.num_elements());
  ref.range = *hi - *lo;
  return ref;
}

// Largest |a - b| over n values.
float MaxAbsDiff(const float* a, const float* b, size_t n) {
  float worst = 0.0f;
  for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

std::unique_ptr<Backend> MakeBackend(const std::string& dir) {
  BackendOptions options;
  options.kv_cache_bytes = 64 << 20;
  auto backend = CreateBackend(dir, options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? std::move(backend).value() : nullptr;
}

using flute::testing::RunChunked;

class TinyLlamaParity : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = flute::testing::TestDataPath("reference/data/tiny-llama");
    backend_ = MakeBackend(dir_);
    ASSERT_NE(backend_, nullptr);
    vocab_ = backend_->config().vocab_size;
    ref_ = LoadReference(dir_ + "/reference_logits.safetensors", vocab_);
    ASSERT_FALSE(ref_.ids.empty());
  }
  // The bound: max |error| <= 1e-4 x the logit range.
  float Tolerance() const { return 1e-4f * ref_.range; }

  std::string dir_;
  std::unique_ptr<Backend> backend_;
  int vocab_ = 0;
  Reference ref_;
};

TEST_F(TinyLlamaParity, ConfigIsTheLlama3Shape) {
  const ModelConfig& c = backend_->config();
  EXPECT_EQ(c.vocab_size, 1003);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope.type, RopeConfig::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 32);
}

TEST_F(TinyLlamaParity, PrefillLogitsMatchTransformers) {
  const std::vector<float> logits = RunChunked(*backend_, ref_.ids, static_cast<int>(ref_.ids.size()));
  ASSERT_EQ(logits.size(), ref_.ids.size() * vocab_);
  EXPECT_LE(MaxAbsDiff(logits.data(), ref_.logits, logits.size()), Tolerance());
}

TEST_F(TinyLlamaParity, TokenByTokenDecodeMatchesTransformers) {
  const std::vector<float> logits = RunChunked(*backend_, ref_.ids, 1);
  ASSERT_EQ(logits.size(), ref_.ids.size() * vocab_);
  for (size_t t = 0; t < ref_.ids.size(); ++t) {
    EXPECT_LE(MaxAbsDiff(&logits[t * vocab_], &ref_.logits[t * vocab_], vocab_), Tolerance())
        << "position " << t;
  }
}

TEST_F(TinyLlamaParity, ChunkedPrefillEqualsOnePass) {
  const std::vector<float> one_pass = RunChunked(*backend_, ref_.ids, static_cast<int>(ref_.ids.size()));
  const std::vector<float> chunked = RunChunked(*backend_, ref_.ids, 7);
  ASSERT_EQ(one_pass.size(), chunked.size());
  // Different matmul paths (row dots vs sgemm) only reorder fp32 sums.
  EXPECT_LE(MaxAbsDiff(one_pass.data(), chunked.data(), one_pass.size()), 1e-5f * ref_.range);
}

TEST_F(TinyLlamaParity, RaggedBatchEqualsSequencesAlone) {
  KvBlockAllocator kv(backend_->num_kv_blocks(), backend_->kv_block_size());
  const std::vector<int32_t> a(ref_.ids.begin(), ref_.ids.begin() + 23);
  const std::vector<int32_t> b(ref_.ids.rbegin(), ref_.ids.rbegin() + 9);
  std::vector<int32_t> table_a, table_b;
  ASSERT_TRUE(kv.Reserve(&table_a, 24).ok());
  ASSERT_TRUE(kv.Reserve(&table_b, 9).ok());
  BatchEntry ea{a, 0, &table_a, false};
  BatchEntry eb{b, 0, &table_b, true};
  ForwardOutput out;
  ASSERT_TRUE(backend_->Forward({ea, eb}, &out).ok());
  ASSERT_EQ(out.first_row, (std::vector<int>{0, 1}));
  ASSERT_EQ(out.logits.size(), static_cast<size_t>(1 + 9) * vocab_);
  const std::vector<float> batched = out.logits;
  // The batched sequence a decodes on from its cache like the reference (before anything
  // else reuses those KV blocks).
  BatchEntry next{{ref_.ids[23]}, 23, &table_a, false};
  ASSERT_TRUE(backend_->Forward({next}, &out).ok());
  EXPECT_LE(MaxAbsDiff(out.logits.data(), &ref_.logits[23 * vocab_], vocab_), Tolerance());
  // RunChunked uses blocks of its own allocator, which may be a and b's: compare last.
  const std::vector<float> alone_a = RunChunked(*backend_, a, 23);
  const std::vector<float> alone_b = RunChunked(*backend_, b, 9);
  EXPECT_LE(MaxAbsDiff(batched.data(), &alone_a[22 * vocab_], vocab_), 1e-5f * ref_.range);
  EXPECT_LE(MaxAbsDiff(&batched[vocab_], alone_b.data(), 9 * vocab_), 1e-5f * ref_.range);
}

TEST_F(TinyLlamaParity, RejectsBadBatches) {
  std::vector<int32_t> table;
  KvBlockAllocator kv(backend_->num_kv_blocks(), backend_->kv_block_size());
  ASSERT_TRUE(kv.Reserve(&table, 4).ok());
  ForwardOutput out;
  BatchEntry bad_token{{5, 1003}, 0, &table, false};
  EXPECT_EQ(backend_->Forward({bad_token}, &out).code(), absl::StatusCode::kInvalidArgument);
  BatchEntry short_table{std::vector<int32_t>(40, 3), 0, &table, false};
  EXPECT_EQ(backend_->Forward({short_table}, &out).code(), absl::StatusCode::kInvalidArgument);
  BatchEntry past_context{{3}, backend_->config().max_position_embeddings, &table, false};
  const absl::Status status = backend_->Forward({past_context}, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("context"), std::string::npos) << status;
}

// ---- The trained man-page model (../shared) --------------------------------------------

class ManpageModel : public ::testing::Test {
 protected:
  void SetUp() override {
    FLUTE_REQUIRE_SHARED();
    model_dir_ = flute::testing::SharedDir() + "/models/manpage-llama-22m";
    backend_ = MakeBackend(model_dir_);
    ASSERT_NE(backend_, nullptr);
    std::ifstream in(flute::testing::TestDataPath("reference/data/manpage_reference.json"));
    reference_ = nlohmann::json::parse(in);
  }
  std::string model_dir_;
  std::unique_ptr<Backend> backend_;
  nlohmann::json reference_;
};

TEST_F(ManpageModel, LogitsMatchTransformers) {
  const int vocab = backend_->config().vocab_size;
  const Reference ref = LoadReference(flute::testing::TestDataPath("reference/data/manpage_logits.safetensors"), vocab);
  ASSERT_FALSE(ref.ids.empty());
  const std::vector<float> logits = RunChunked(*backend_, ref.ids, static_cast<int>(ref.ids.size()));
  EXPECT_LE(MaxAbsDiff(logits.data(), ref.logits, logits.size()), 1e-4f * ref.range);
}

TEST_F(ManpageModel, GreedyGenerationMatchesTransformers) {
  for (const auto& case_json : reference_["greedy"]) {
    const std::vector<int32_t> prompt = case_json["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> expected = case_json["output_ids"].get<std::vector<int32_t>>();
    GenerationOptions options;
    options.max_new_tokens = static_cast<int>(expected.size());
    options.sampling.temperature = 0.0f;
    auto result = GenerateSequence(*backend_, prompt, options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->tokens, expected) << "prompt: " << case_json["prompt"];
  }
}

TEST_F(ManpageModel, TokenizerEncodesPromptsLikeTransformers) {
  auto tokenizer = LoadTokenizer(model_dir_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  for (const auto& case_json : reference_["greedy"]) {
    auto ids = (*tokenizer)->Encode(case_json["prompt"].get<std::string>(), true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, case_json["prompt_ids"].get<std::vector<int32_t>>()) << case_json["prompt"];
  }
}

TEST_F(ManpageModel, PerplexityOfFirstWindowsMatchesTransformers) {
  auto ids = ReadTokenFile(flute::testing::SharedDir() + "/data/manpage-val.u16", "u16");
  ASSERT_TRUE(ids.ok()) << ids.status();
  const auto& slice = reference_["ppl_first_windows"]["16"];
  auto result = ComputePerplexity(*backend_, *ids, 512, 16);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->num_scored, slice["scored_tokens"].get<int64_t>());
  EXPECT_NEAR(result->perplexity, slice["ppl"].get<double>(), 1e-3 * slice["ppl"].get<double>());
}

}  // namespace
}  // namespace flute
