#include "engine/bpe.h"

#include <algorithm>
#include <queue>

#include "absl/strings/str_cat.h"

namespace flute {

absl::Status BpeModel::AddToken(std::string bytes, int32_t id) {
  if (id < 0) return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.vocab id ", id, " is negative"));
  if (static_cast<size_t>(id) >= id_to_bytes_.size()) {
    id_to_bytes_.resize(id + 1);
    has_id_.resize(id + 1, false);
  }
  if (has_id_[id]) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.vocab has id ", id, " twice"));
  }
  has_id_[id] = true;
  id_to_bytes_[id] = std::move(bytes);
  return absl::OkStatus();
}

absl::Status BpeModel::FinishVocab() {
  bytes_to_id_.reserve(id_to_bytes_.size() * 2);
  for (size_t id = 0; id < id_to_bytes_.size(); ++id) {
    if (has_id_[id]) bytes_to_id_.emplace(id_to_bytes_[id], static_cast<int32_t>(id));
  }
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    byte_ids_[b] = TokenId(std::string_view(&c, 1));
    if (byte_ids_[b] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.json: model.vocab lacks the byte-level token for byte 0x", absl::Hex(b),
          "; every byte needs one"));
    }
  }
  return absl::OkStatus();
}

absl::Status BpeModel::AddMerge(std::string_view left, std::string_view right, int32_t rank) {
  const int32_t left_id = TokenId(left), right_id = TokenId(right);
  const int32_t merged_id = TokenId(std::string(left) + std::string(right));
  if (left_id < 0 || right_id < 0 || merged_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.json: model.merges[", rank, "] uses a token that is not in model.vocab"));
  }
  // The first (lowest-rank) occurrence of a pair wins, as in Hugging Face.
  merges_.emplace(PairKey(left_id, right_id), MergeResult{rank, merged_id});
  return absl::OkStatus();
}

const BpeModel::MergeResult* BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

const std::string* BpeModel::TokenBytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_bytes_.size() || !has_id_[id]) return nullptr;
  return &id_to_bytes_[id];
}

int32_t BpeModel::TokenId(std::string_view bytes) const {
  auto it = bytes_to_id_.find(bytes);
  return it == bytes_to_id_.end() ? -1 : it->second;
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int32_t whole = TokenId(word);
    if (whole >= 0) {
      ids->push_back(whole);
      return;
    }
  }
  if (word.size() == 1) {
    ids->push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
    return;
  }
  {
    absl::MutexLock lock(&cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> merged;
  MergeWord(word, &merged);
  ids->insert(ids->end(), merged.begin(), merged.end());
  absl::MutexLock lock(&cache_mutex_);
  if (cache_.size() >= kCacheMaxWords) {
    cache_.clear();
    cache_keys_.clear();
  }
  cache_keys_.emplace_back(word);
  cache_.emplace(cache_keys_.back(), std::move(merged));
}

// Merges the bytes of `word` by rank: repeatedly the lowest-rank adjacent pair, the leftmost
// one among equals (Hugging Face's order), over a doubly linked list of symbols with a heap
// of candidate pairs. Stale heap entries are recognised by their recorded ids.
void BpeModel::MergeWord(std::string_view word, std::vector<int32_t>* ids) const {
  const int n = static_cast<int>(word.size());
  std::vector<int32_t> id(n), prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    id[i] = byte_ids_[static_cast<uint8_t>(word[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank, pos, left_id, right_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    if (const MergeResult* m = FindMerge(id[pos], id[next[pos]])) {
      heap.push({m->rank, pos, id[pos], id[next[pos]]});
    }
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int right = next[c.pos];
    if (!alive[c.pos] || right < 0 || id[c.pos] != c.left_id || id[right] != c.right_id) continue;
    id[c.pos] = FindMerge(c.left_id, c.right_id)->merged_id;
    alive[right] = false;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  for (int i = 0; i >= 0; i = next[i]) ids->push_back(id[i]);
}

}  // namespace flute
