// A tiny deterministic model and tokenizer for scheduler tests. The fake backend keeps a
// token per KV slot in its own paged storage, written and read through each entry's block
// table, and predicts the next token from a hash of everything cached before it: a wrong
// block table, a lost prefix after preemption or a mixed-up batch row changes the output.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "engine/backend.h"
#include "engine/tokenizer.h"

namespace flute::testing {

class FakeBackend : public Backend {
 public:
  FakeBackend(int vocab_size, int context_length, int num_blocks, int block_size);

  const ModelConfig& config() const override { return config_; }
  std::string Describe() const override { return "fake"; }
  int kv_block_size() const override { return block_size_; }
  int num_kv_blocks() const override { return num_blocks_; }
  absl::Status Forward(const std::vector<BatchEntry>& batch, ForwardOutput* out) override;

  // Each Forward sleeps this long (lets tests cancel mid-stream).
  void set_step_delay_ms(int ms) { step_delay_ms_ = ms; }
  // While closed, Forward blocks (lets tests fill the queue deterministically).
  void SetGate(bool open);
  int64_t num_steps() const;
  int max_batch_seen() const;
  // Every entry of every Forward so far: the sequence's block table (its identity while it
  // runs), the first position and the number of tokens.
  struct EntrySeen {
    const std::vector<int32_t>* block_table;
    int start_position;
    int num_tokens;
  };
  std::vector<EntrySeen> entries_seen() const;

 private:
  ModelConfig config_;
  int num_blocks_;
  int block_size_;
  std::vector<int32_t> storage_;   // [num_blocks * block_size] cached tokens, -1 = unwritten
  int step_delay_ms_ = 0;
  mutable absl::Mutex mu_;
  bool gate_open_ ABSL_GUARDED_BY(mu_) = true;
  int64_t num_steps_ ABSL_GUARDED_BY(mu_) = 0;
  int max_batch_seen_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<EntrySeen> entries_seen_ ABSL_GUARDED_BY(mu_);
};

// Token 0 = BOS, 1 = EOS (both special); token i >= 2 is the letter 'a' + (i - 2) % 26.
class FakeTokenizer : public Tokenizer {
 public:
  explicit FakeTokenizer(int vocab_size) : vocab_size_(vocab_size) {}
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const override;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override;
  std::string TokenBytes(int32_t id) const override;
  int vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return 0; }
  std::vector<int32_t> eos_ids() const override { return eos_ids_; }
  bool IsSpecial(int32_t id) const override { return id == 0 || id == 1; }
  void set_eos_ids(std::vector<int32_t> ids) { eos_ids_ = std::move(ids); }

 private:
  int vocab_size_;
  std::vector<int32_t> eos_ids_{1};
};

// The fake model's greedy continuation of `prompt`, computed directly (no cache, no batch).
std::vector<int32_t> FakeGreedyReference(const std::vector<int32_t>& prompt, int vocab_size,
                                         int num_new_tokens);

// ---- implementation (header-only: the test suite globs only *_test.cc) ----

// The token that follows `cached` (positions 0..p): a hash, never BOS or EOS.
inline int32_t FakeNextToken(const std::vector<int32_t>& cached, int vocab_size) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : cached) h = (h ^ static_cast<uint64_t>(t + 1)) * 1099511628211ull;
  return 2 + static_cast<int32_t>((h >> 17) % static_cast<uint64_t>(vocab_size - 2));
}

inline FakeBackend::FakeBackend(int vocab_size, int context_length, int num_blocks,
                                int block_size)
    : num_blocks_(num_blocks), block_size_(block_size),
      storage_(static_cast<size_t>(num_blocks) * block_size, -1) {
  config_.model_type = "llama";
  config_.vocab_size = vocab_size;
  config_.max_position_embeddings = context_length;
  config_.eos_token_ids = {1};
  config_.bos_token_id = 0;
}

inline void FakeBackend::SetGate(bool open) {
  absl::MutexLock lock(&mu_);
  gate_open_ = open;
}

inline int64_t FakeBackend::num_steps() const {
  absl::MutexLock lock(&mu_);
  return num_steps_;
}

inline int FakeBackend::max_batch_seen() const {
  absl::MutexLock lock(&mu_);
  return max_batch_seen_;
}

inline std::vector<FakeBackend::EntrySeen> FakeBackend::entries_seen() const {
  absl::MutexLock lock(&mu_);
  return entries_seen_;
}

inline absl::Status FakeBackend::Forward(const std::vector<BatchEntry>& batch,
                                         ForwardOutput* out) {
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&gate_open_));
    ++num_steps_;
    max_batch_seen_ = std::max(max_batch_seen_, static_cast<int>(batch.size()));
    for (const BatchEntry& e : batch) {
      entries_seen_.push_back({e.block_table, e.start_position, static_cast<int>(e.tokens.size())});
    }
  }
  if (step_delay_ms_ > 0) absl::SleepFor(absl::Milliseconds(step_delay_ms_));
  const int vocab = config_.vocab_size;
  out->logits.clear();
  out->first_row.clear();
  std::vector<bool> used_blocks(num_blocks_, false);
  for (const BatchEntry& e : batch) {
    const int end = e.start_position + static_cast<int>(e.tokens.size());
    if (e.block_table == nullptr ||
        static_cast<int>(e.block_table->size()) * block_size_ < end) {
      return absl::InvalidArgumentError("block table too short");
    }
    if (end > config_.max_position_embeddings) return absl::InvalidArgumentError("past context");
    for (int32_t b : *e.block_table) {
      if (b < 0 || b >= num_blocks_ || used_blocks[b]) {
        return absl::InvalidArgumentError(absl::StrCat("block ", b, " shared or invalid"));
      }
      used_blocks[b] = true;
    }
    const auto slot = [&](int p) {
      return static_cast<size_t>((*e.block_table)[p / block_size_]) * block_size_ +
             p % block_size_;
    };
    for (size_t i = 0; i < e.tokens.size(); ++i) {
      if (e.tokens[i] < 0 || e.tokens[i] >= vocab) return absl::InvalidArgumentError("token");
      storage_[slot(e.start_position + static_cast<int>(i))] = e.tokens[i];
    }
    out->first_row.push_back(static_cast<int>(out->logits.size() / vocab));
    const int first = e.all_logits ? e.start_position : end - 1;
    for (int p = first; p < end; ++p) {
      std::vector<int32_t> cached;
      for (int q = 0; q <= p; ++q) {
        const int32_t t = storage_[slot(q)];
        if (t < 0) return absl::InternalError("read of an unwritten KV slot");
        cached.push_back(t);
      }
      std::vector<float> row(vocab, 0.0f);
      row[FakeNextToken(cached, vocab)] = 10.0f;
      out->logits.insert(out->logits.end(), row.begin(), row.end());
    }
  }
  return absl::OkStatus();
}

inline absl::StatusOr<std::vector<int32_t>> FakeTokenizer::Encode(std::string_view text,
                                                                  bool add_special_tokens) const {
  std::vector<int32_t> ids;
  if (add_special_tokens) ids.push_back(0);
  for (char c : text) {
    if (c < 'a' || c > 'z') return absl::InvalidArgumentError("fake tokenizer: a-z only");
    ids.push_back(2 + (c - 'a'));
  }
  return ids;
}

inline std::string FakeTokenizer::TokenBytes(int32_t id) const {
  if (id == 0) return "<s>";
  if (id == 1) return "</s>";
  return std::string(1, static_cast<char>('a' + (id - 2) % 26));
}

inline std::string FakeTokenizer::Decode(const std::vector<int32_t>& ids,
                                         bool skip_special_tokens) const {
  std::string text;
  for (int32_t id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    text += TokenBytes(id);
  }
  return text;
}

inline std::vector<int32_t> FakeGreedyReference(const std::vector<int32_t>& prompt,
                                                int vocab_size, int num_new_tokens) {
  std::vector<int32_t> tokens = prompt;
  std::vector<int32_t> generated;
  for (int i = 0; i < num_new_tokens; ++i) {
    generated.push_back(FakeNextToken(tokens, vocab_size));
    tokens.push_back(generated.back());
  }
  return generated;
}

}  // namespace flute::testing
