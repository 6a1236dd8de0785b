// Turns a stream of token ids into UTF-8 text one token at a time, emitting only complete
// UTF-8 characters: byte-level BPE tokens and SentencePiece byte-fallback pieces (<0xF0>)
// may each carry a fraction of one character.
//
// The text is the concatenation of Tokenizer::TokenBytes, i.e. the tokens as they continue
// earlier text: for byte-level BPE that equals Decode(all ids); for SentencePiece a leading
// "▁" of the first token stays a space (Decode would drop it at the start of a text).
#pragma once

#include <cstdint>
#include <string>

#include "engine/tokenizer.h"

namespace flute {

class StreamingDetokenizer {
 public:
  // `tokenizer` must outlive this object. With skip_special_tokens, control tokens
  // (Tokenizer::IsSpecial: BOS, EOS, headers) add no text.
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false);

  // Appends token `id`; returns the complete UTF-8 text now available (possibly empty).
  // Bytes that can never become valid UTF-8 are returned as U+FFFD at once.
  std::string Push(int32_t id);

  // Returns whatever is left (an unfinished character becomes U+FFFD) and resets.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // bytes not yet emitted: at most the start of one character
};

}  // namespace flute
