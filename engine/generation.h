// Generation of one sequence on a Backend: prefill the prompt, then decode token by token
// with a Sampler. The command-line `generate` uses it; the server's scheduler does the
// same over many sequences at once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/sampler.h"

namespace flute {

struct GenerationOptions {
  int max_new_tokens = 128;
  SamplingParams sampling;
  std::vector<int32_t> stop_token_ids;  // e.g. the tokenizer's EOS ids; emitted, then stop
  int prefill_chunk = 512;              // prompt tokens per forward step
};

struct GenerationResult {
  std::vector<int32_t> tokens;          // generated ids (a stop token included)
  std::string finish_reason;            // "length" or "eos"
};

// `on_token` is called with each generated id as soon as it is chosen.
absl::StatusOr<GenerationResult> GenerateSequence(Backend& backend, const std::vector<int32_t>& prompt,
                                                  const GenerationOptions& options,
                                                  const std::function<void(int32_t)>& on_token = nullptr);

}  // namespace flute
