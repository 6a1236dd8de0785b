// One interface over the tokenizers LLaMA-family checkpoints ship: SentencePiece
// (`tokenizer.model`, LLaMA-2 style) and Hugging Face `tokenizer.json` (LLaMA-3 byte-level BPE).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace flute {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`. With add_special_tokens, adds what the model's tokenizer config asks
  // for (BOS for LLaMA), as Hugging Face's encode(text, add_special_tokens=...) does.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                       bool add_special_tokens) const = 0;

  // UTF-8 text of `ids` (invalid byte sequences become U+FFFD), as Hugging Face's decode.
  virtual std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const = 0;

  // The raw bytes token `id` appends to the output when it follows other tokens: byte
  // fallback and byte-level pieces give single bytes that may be part of one UTF-8
  // character. Streaming detokenization is built on this. Special tokens give their text.
  virtual std::string TokenBytes(int32_t id) const = 0;

  virtual int vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;                 // -1 if none
  virtual std::vector<int32_t> eos_ids() const = 0;   // end-of-sequence / end-of-turn ids
  virtual bool IsSpecial(int32_t id) const = 0;       // control tokens (BOS, EOS, headers)
};

// Loads the tokenizer at `path`: a model directory (tokenizer.json preferred over
// tokenizer.model, with tokenizer_config.json for BOS/EOS and add_bos_token), a
// tokenizer.json, or a tokenizer.model file.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);

}  // namespace flute
