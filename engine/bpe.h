// The BPE model of a Hugging Face tokenizer.json, over raw bytes: tokens are stored as the
// bytes they stand for (byte-level characters already mapped back), merges as id pairs.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace flute {

class BpeModel {
 public:
  // Adds token `bytes` with id `id` (ids may come in any order). Fails on duplicates.
  absl::Status AddToken(std::string bytes, int32_t id);
  // Call after all tokens: builds the lookup tables. Fails if a byte has no token.
  absl::Status FinishVocab();
  // Merge of rank `rank` (its index in the merges list): left + right → their concatenation,
  // which must be a token.
  absl::Status AddMerge(std::string_view left, std::string_view right, int32_t rank);

  void set_ignore_merges(bool ignore) { ignore_merges_ = ignore; }

  // Appends the ids of one pre-token `word` (raw bytes) to *ids.
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;

  // Raw bytes of token `id`, or nullptr when `id` is not a token of this model.
  const std::string* TokenBytes(int32_t id) const;
  int32_t TokenId(std::string_view bytes) const;  // -1 if absent
  int32_t max_id() const { return static_cast<int32_t>(id_to_bytes_.size()) - 1; }
  size_t num_merges() const { return merges_.size(); }

 private:
  struct MergeResult {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  const MergeResult* FindMerge(int32_t left, int32_t right) const;
  void MergeWord(std::string_view word, std::vector<int32_t>* ids) const;

  std::vector<std::string> id_to_bytes_;
  std::vector<bool> has_id_;
  std::unordered_map<std::string_view, int32_t> bytes_to_id_;  // keys view id_to_bytes_
  int32_t byte_ids_[256];
  std::unordered_map<uint64_t, MergeResult> merges_;
  bool ignore_merges_ = false;

  // Cache of merged words: word bytes → ids. Bounded; cleared when full.
  static constexpr size_t kCacheMaxWords = 200000;
  mutable absl::Mutex cache_mutex_;
  mutable std::deque<std::string> cache_keys_ ABSL_GUARDED_BY(cache_mutex_);
  mutable std::unordered_map<std::string_view, std::vector<int32_t>> cache_
      ABSL_GUARDED_BY(cache_mutex_);
};

}  // namespace flute
