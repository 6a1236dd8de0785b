// Helpers shared by the backend test suites (CPU and CUDA).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "gtest/gtest.h"

namespace flute::testing {

// All logits of `ids` run as one sequence, prefilled in chunks of `chunk` tokens.
inline std::vector<float> RunChunked(Backend& backend, const std::vector<int32_t>& ids, int chunk) {
  KvBlockAllocator kv(backend.num_kv_blocks(), backend.kv_block_size());
  std::vector<int32_t> table;
  EXPECT_TRUE(kv.Reserve(&table, static_cast<int>(ids.size())).ok());
  std::vector<float> logits;
  for (size_t begin = 0; begin < ids.size(); begin += chunk) {
    BatchEntry entry;
    entry.tokens.assign(ids.begin() + begin, ids.begin() + std::min(ids.size(), begin + chunk));
    entry.start_position = static_cast<int>(begin);
    entry.block_table = &table;
    entry.all_logits = true;
    ForwardOutput out;
    const absl::Status status = backend.Forward({entry}, &out);
    EXPECT_TRUE(status.ok()) << status;
    logits.insert(logits.end(), out.logits.begin(), out.logits.end());
  }
  return logits;
}

}  // namespace flute::testing
