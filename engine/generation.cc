#include "engine/generation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/kv_cache.h"
#include "engine/status_macros.h"

namespace flute {

absl::StatusOr<GenerationResult> GenerateSequence(Backend& backend, const std::vector<int32_t>& prompt,
                                                  const GenerationOptions& options,
                                                  const std::function<void(int32_t)>& on_token) {
  const ModelConfig& config = backend.config();
  if (prompt.empty()) return absl::InvalidArgumentError("prompt: no tokens to start from");
  RETURN_IF_ERROR(ValidateSamplingParams(options.sampling, config.vocab_size));
  const int total = static_cast<int>(prompt.size()) + options.max_new_tokens;
  if (total > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt.size(), " tokens) + max_new_tokens (", options.max_new_tokens,
        ") exceeds the model's context of ", config.max_position_embeddings, " tokens"));
  }
  KvBlockAllocator kv(backend.num_kv_blocks(), backend.kv_block_size());
  std::vector<int32_t> table;
  RETURN_IF_ERROR(kv.Reserve(&table, total));
  Sampler sampler(options.sampling, prompt);
  GenerationResult result;
  result.finish_reason = "length";

  // Prefill in chunks; the last chunk's last token chooses the first new token.
  std::vector<SampledToken> sampled(1);
  const int chunk = std::max(1, options.prefill_chunk);
  for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
    const size_t end = std::min(prompt.size(), begin + chunk);
    BatchEntry entry;
    entry.tokens.assign(prompt.begin() + begin, prompt.begin() + end);
    entry.start_position = static_cast<int>(begin);
    entry.block_table = &table;
    if (end < prompt.size()) {
      ForwardOutput unused;
      RETURN_IF_ERROR(backend.Forward({entry}, &unused));
    } else {
      RETURN_IF_ERROR(backend.ForwardAndSample({entry}, {{0, &sampler}}, &sampled));
    }
  }
  int position = static_cast<int>(prompt.size());
  for (int step = 0; step < options.max_new_tokens; ++step) {
    const int32_t token = sampled[0].token;
    sampler.Accept(token);
    result.tokens.push_back(token);
    if (on_token) on_token(token);
    if (std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), token) !=
        options.stop_token_ids.end()) {
      result.finish_reason = "eos";
      break;
    }
    if (step + 1 == options.max_new_tokens) break;
    BatchEntry entry;
    entry.tokens = {token};
    entry.start_position = position++;
    entry.block_table = &table;
    RETURN_IF_ERROR(backend.ForwardAndSample({entry}, {{0, &sampler}}, &sampled));
  }
  return result;
}

}  // namespace flute
