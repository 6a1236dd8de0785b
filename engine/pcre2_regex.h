// A compiled PCRE2 regular expression (UTF-8, Unicode properties, JIT when available), for
// the pre-tokenizer Split patterns of tokenizer.json files.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace flute {

class Pcre2Regex {
 public:
  // Compiles `pattern` with PCRE2_UTF | PCRE2_UCP. `\s` and `\S` are widened to include
  // U+0085 (NEXT LINE), which Oniguruma (Hugging Face tokenizers' regex engine) counts as
  // white space and PCRE2 does not.
  static absl::StatusOr<std::unique_ptr<Pcre2Regex>> Compile(const std::string& pattern);
  ~Pcre2Regex();

  // Byte ranges [begin, end) of the successive non-overlapping matches in `text` (valid
  // UTF-8, already checked by the caller), appended to *matches.
  absl::Status FindAll(std::string_view text,
                       std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  Pcre2Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

// `pattern` with `\s` → `[\s\x{85}]` (and inside classes `\s\x{85}`), `\S` → `[^\s\x{85}]`.
std::string WidenWhitespaceEscapes(const std::string& pattern);

}  // namespace flute
