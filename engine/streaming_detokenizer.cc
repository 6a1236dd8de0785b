#include "engine/streaming_detokenizer.h"

#include "engine/byte_level.h"

namespace flute {

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string StreamingDetokenizer::Push(int32_t id) {
  if (skip_special_tokens_ && tokenizer_.IsSpecial(id)) return std::string();
  pending_ += tokenizer_.TokenBytes(id);
  // Emit everything up to the last character start if that character is still unfinished
  // (a valid prefix cut by the end); invalid bytes before it become U+FFFD now.
  size_t keep_from = pending_.size();
  for (size_t back = 1; back <= 3 && back <= pending_.size(); ++back) {
    const size_t start = pending_.size() - back;
    const auto byte = static_cast<uint8_t>(pending_[start]);
    if ((byte & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    size_t invalid = 0;
    bool incomplete = false;
    DecodeUtf8Char(std::string_view(pending_).substr(start), &invalid, &incomplete);
    if (incomplete) keep_from = start;
    break;
  }
  std::string out = Utf8Lossy(std::string_view(pending_).substr(0, keep_from));
  pending_.erase(0, keep_from);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out = Utf8Lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace flute
