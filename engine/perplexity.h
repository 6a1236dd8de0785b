// Perplexity of a token stream under a model, with the windows of the reference
// evaluation: window i = ids[W·i, W·i + W), each position predicting the next id (the last
// window's target may be the first id after it), the final partial window dropped.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"

namespace flute {

struct PerplexityResult {
  double perplexity = 0.0;
  double mean_nll = 0.0;       // nats per scored token
  int64_t num_scored = 0;      // tokens scored
  int num_windows = 0;
};

// Little-endian token ids from `path`; dtype "u16" or "u32".
absl::StatusOr<std::vector<int32_t>> ReadTokenFile(const std::string& path, const std::string& dtype);

// Scores at most `max_windows` windows (0 = all). `progress(done, total)` after each batch.
absl::StatusOr<PerplexityResult> ComputePerplexity(
    Backend& backend, const std::vector<int32_t>& ids, int window, int max_windows,
    const std::function<void(int, int)>& progress = nullptr);

}  // namespace flute
