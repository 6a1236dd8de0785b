#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/kv_cache.h"
#include "engine/status_macros.h"

namespace flute {

absl::StatusOr<std::vector<int32_t>> ReadTokenFile(const std::string& path, const std::string& dtype) {
  if (dtype != "u16" && dtype != "u32") {
    return absl::InvalidArgumentError(absl::StrCat("--tokens-dtype must be u16 or u32, got \"", dtype, "\""));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open token file ", path));
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t width = dtype == "u16" ? 2 : 4;
  if (bytes.size() % width != 0) {
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, ": ", bytes.size(),
                                                   " bytes is not a multiple of ", width, " (", dtype, ")"));
  }
  std::vector<int32_t> ids(bytes.size() / width);
  for (size_t i = 0; i < ids.size(); ++i) {
    uint32_t v = 0;
    for (size_t b = 0; b < width; ++b) v |= static_cast<uint32_t>(bytes[i * width + b]) << (8 * b);
    ids[i] = static_cast<int32_t>(v);
  }
  return ids;
}

namespace {

// -log softmax(logits)[target], in double.
double NegativeLogLikelihood(const float* logits, int vocab, int target) {
  const float max_logit = *std::max_element(logits, logits + vocab);
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
  return std::log(sum) + max_logit - logits[target];
}

}  // namespace

absl::StatusOr<PerplexityResult> ComputePerplexity(Backend& backend, const std::vector<int32_t>& ids,
                                                   int window, int max_windows,
                                                   const std::function<void(int, int)>& progress) {
  const ModelConfig& config = backend.config();
  if (window < 2 || window > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("--window must be in [2, ", config.max_position_embeddings,
                                                   "], got ", window));
  }
  int total = ids.empty() ? 0 : static_cast<int>((ids.size() - 1) / window);
  if (max_windows > 0) total = std::min(total, max_windows);
  if (total == 0) {
    return absl::InvalidArgumentError(absl::StrCat("token file holds ", ids.size(),
                                                   " ids: not one full window of ", window, " + 1"));
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " in the token file is outside the vocabulary [0, ",
                                                     config.vocab_size, ")"));
    }
  }
  // Several windows per forward step keep the matmuls large, within ~256 MB of logits.
  const int64_t logits_per_window = static_cast<int64_t>(window) * config.vocab_size;
  const int per_step = static_cast<int>(std::clamp<int64_t>((64ll << 20) / logits_per_window, 1, 4));
  KvBlockAllocator kv(backend.num_kv_blocks(), backend.kv_block_size());
  PerplexityResult result;
  double total_nll = 0.0;
  for (int w0 = 0; w0 < total; w0 += per_step) {
    const int count = std::min(per_step, total - w0);
    std::vector<std::vector<int32_t>> tables(count);
    std::vector<BatchEntry> batch(count);
    for (int j = 0; j < count; ++j) {
      RETURN_IF_ERROR(kv.Reserve(&tables[j], window));
      const auto begin = ids.begin() + static_cast<int64_t>(w0 + j) * window;
      batch[j].tokens.assign(begin, begin + window);
      batch[j].block_table = &tables[j];
      batch[j].all_logits = true;
    }
    ForwardOutput out;
    RETURN_IF_ERROR(backend.Forward(batch, &out));
    for (int j = 0; j < count; ++j) {
      const int64_t base = static_cast<int64_t>(w0 + j) * window;
      for (int i = 0; i < window; ++i) {
        const float* row = out.logits.data() + static_cast<int64_t>(out.first_row[j] + i) * config.vocab_size;
        total_nll += NegativeLogLikelihood(row, config.vocab_size, ids[base + i + 1]);
      }
      kv.Release(&tables[j]);
    }
    result.num_scored += static_cast<int64_t>(count) * window;
    if (progress) progress(w0 + count, total);
  }
  result.num_windows = total;
  result.mean_nll = total_nll / static_cast<double>(result.num_scored);
  result.perplexity = std::exp(result.mean_nll);
  return result;
}

}  // namespace flute
