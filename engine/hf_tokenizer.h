// Hugging Face `tokenizer.json` tokenizers: a BPE model with byte-level pre-tokenization
// (LLaMA-3), added/special tokens, and the TemplateProcessing post-processor's BOS.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/tokenizer.h"

namespace flute {

// Loads `tokenizer_json_path`. `model_dir_or_empty`, when not empty, is the model directory
// whose tokenizer_config.json (if present) may name BOS/EOS tokens and add_bos_token.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& tokenizer_json_path,
                                                           const std::string& model_dir_or_empty);

}  // namespace flute
