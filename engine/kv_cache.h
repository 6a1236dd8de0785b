// Paged KV-cache bookkeeping: fixed-size blocks shared by all sequences. A sequence's block
// table maps its position p to block table[p / block_size], slot p % block_size. The
// storage itself belongs to the backend; this class only hands out block ids.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace flute {

class KvBlockAllocator {
 public:
  KvBlockAllocator(int num_blocks, int block_size);

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  int num_free_blocks() const { return static_cast<int>(free_.size()); }
  int BlocksFor(int num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // Extends `table` so that it covers `num_tokens` positions. ResourceExhausted, leaving
  // `table` unchanged, when too few blocks are free.
  absl::Status Reserve(std::vector<int32_t>* table, int num_tokens);
  // Returns every block of `table` to the pool and clears it.
  void Release(std::vector<int32_t>* table);

 private:
  int num_blocks_;
  int block_size_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
};

}  // namespace flute
