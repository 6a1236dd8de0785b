#include "engine/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace flute {

KvBlockAllocator::KvBlockAllocator(int num_blocks, int block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  free_.reserve(num_blocks);
  for (int i = num_blocks - 1; i >= 0; --i) free_.push_back(i);
}

absl::Status KvBlockAllocator::Reserve(std::vector<int32_t>* table, int num_tokens) {
  const int needed = BlocksFor(num_tokens) - static_cast<int>(table->size());
  if (needed <= 0) return absl::OkStatus();
  if (needed > num_free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache: ", needed, " more blocks of ", block_size_, " tokens needed for ", num_tokens,
        " tokens, ", num_free_blocks(), " of ", num_blocks_, " free"));
  }
  for (int i = 0; i < needed; ++i) {
    table->push_back(free_.back());
    free_.pop_back();
  }
  return absl::OkStatus();
}

void KvBlockAllocator::Release(std::vector<int32_t>* table) {
  for (auto it = table->rbegin(); it != table->rend(); ++it) free_.push_back(*it);
  table->clear();
}

}  // namespace flute
