#include "engine/pcre2_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace flute {
namespace {

pcre2_code* Code(void* code) { return static_cast<pcre2_code*>(code); }

std::string Pcre2ErrorText(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

// Length of the UTF-8 character starting at text[pos] (text is valid UTF-8).
size_t CharLength(std::string_view text, size_t pos) {
  const auto b = static_cast<uint8_t>(text[pos]);
  size_t len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  return std::min(len, text.size() - pos);
}

}  // namespace

std::string WidenWhitespaceEscapes(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's') {
        out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (e == 'S' && !in_class) {
        out += "[^\\s\\x{85}]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Pcre2Regex>> Pcre2Regex::Compile(const std::string& pattern) {
  const std::string widened = WidenWhitespaceEscapes(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(widened.data()), widened.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("regex \"", pattern, "\" does not compile: ",
                                                   Pcre2ErrorText(error), " at offset ", offset));
  }
  std::unique_ptr<Pcre2Regex> regex(new Pcre2Regex());
  regex->code_ = code;
  regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return regex;
}

Pcre2Regex::~Pcre2Regex() { pcre2_code_free(Code(code_)); }

absl::Status Pcre2Regex::FindAll(std::string_view text,
                                 std::vector<std::pair<size_t, size_t>>* matches) const {
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(Code(code_), nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  absl::Status status;
  while (pos < text.size()) {
    int rc = jit_ ? pcre2_jit_match(Code(code_), subject, text.size(), pos, PCRE2_NO_UTF_CHECK,
                                    data, nullptr)
                  : PCRE2_ERROR_JIT_BADOPTION;
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_JIT_BADOPTION) {
      // The interpreter keeps its backtracking state on the heap: no JIT stack limit.
      rc = pcre2_match(Code(code_), subject, text.size(), pos, PCRE2_NO_UTF_CHECK, data, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      status = absl::InternalError(absl::StrCat("regex match failed: ", Pcre2ErrorText(rc)));
      break;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      matches->emplace_back(begin, end);
      pos = end;
    } else {
      pos = begin + CharLength(text, begin);  // an empty match: step over one character
    }
  }
  pcre2_match_data_free(data);
  return status;
}

}  // namespace flute
