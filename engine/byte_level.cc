#include "engine/byte_level.h"

#include <unordered_map>

namespace flute {
namespace {

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool StandsForItself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

// Code point → byte, the inverse of ByteLevelAlphabet.
const std::unordered_map<uint32_t, uint8_t>& CodePointToByte() {
  static const auto* table = [] {
    auto* map = new std::unordered_map<uint32_t, uint8_t>();
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) (*map)[StandsForItself(b) ? b : next++] = static_cast<uint8_t>(b);
    return map;
  }();
  return *table;
}

// Decodes the valid character at the start of `text` (length `len` from DecodeUtf8Char).
uint32_t CodePointAt(std::string_view text, size_t len) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  if (len == 1) return s[0];
  if (len == 2) return ((s[0] & 0x1Fu) << 6) | (s[1] & 0x3Fu);
  if (len == 3) return ((s[0] & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
  return ((s[0] & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
}

}  // namespace

const std::array<std::string, 256>& ByteLevelAlphabet() {
  static const auto* alphabet = [] {
    auto* a = new std::array<std::string, 256>();
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) AppendUtf8(StandsForItself(b) ? b : next++, &(*a)[b]);
    return a;
  }();
  return *alphabet;
}

bool ByteLevelToBytes(std::string_view token, std::string* bytes) {
  bytes->clear();
  const auto& table = CodePointToByte();
  size_t pos = 0;
  while (pos < token.size()) {
    size_t invalid = 0;
    bool incomplete = false;
    const size_t len = DecodeUtf8Char(token.substr(pos), &invalid, &incomplete);
    if (len == 0) return false;
    auto it = table.find(CodePointAt(token.substr(pos), len));
    if (it == table.end()) return false;
    bytes->push_back(static_cast<char>(it->second));
    pos += len;
  }
  return true;
}

int Utf8SequenceLength(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

size_t DecodeUtf8Char(std::string_view text, size_t* maximal_invalid, bool* incomplete) {
  *maximal_invalid = 0;
  *incomplete = false;
  if (text.empty()) return 0;
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const int need = Utf8SequenceLength(s[0]);
  if (need == 1) return 1;
  if (need == 0) {
    *maximal_invalid = 1;
    return 0;
  }
  // The second byte's range depends on the lead byte (no overlongs, surrogates, > U+10FFFF).
  uint8_t lo = 0x80, hi = 0xBF;
  if (s[0] == 0xE0) lo = 0xA0;
  if (s[0] == 0xED) hi = 0x9F;
  if (s[0] == 0xF0) lo = 0x90;
  if (s[0] == 0xF4) hi = 0x8F;
  size_t have = 1;
  for (int i = 1; i < need; ++i) {
    if (have >= text.size()) {
      *maximal_invalid = have;
      *incomplete = true;
      return 0;
    }
    const uint8_t c = s[have];
    const bool ok = (i == 1) ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) {
      *maximal_invalid = have;
      return 0;
    }
    ++have;
  }
  return have;
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    // Fast path over ASCII.
    if (static_cast<uint8_t>(bytes[pos]) < 0x80) {
      out.push_back(bytes[pos++]);
      continue;
    }
    size_t invalid = 0;
    bool incomplete = false;
    const size_t len = DecodeUtf8Char(bytes.substr(pos), &invalid, &incomplete);
    if (len > 0) {
      out.append(bytes.data() + pos, len);
      pos += len;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      pos += invalid;
    }
  }
  return out;
}

bool IsValidUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    size_t invalid = 0;
    bool incomplete = false;
    const size_t len = DecodeUtf8Char(text.substr(pos), &invalid, &incomplete);
    if (len == 0) return false;
    pos += len;
  }
  return true;
}

bool IsPythonWhitespace(uint32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D:
    case 0x1C: case 0x1D: case 0x1E: case 0x1F: case 0x20:
    case 0x85: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

std::string_view PythonStrip(std::string_view text) {
  // Leading: decode forward.
  size_t begin = 0;
  while (begin < text.size()) {
    size_t invalid = 0;
    bool incomplete = false;
    const size_t len = DecodeUtf8Char(text.substr(begin), &invalid, &incomplete);
    if (len == 0 || !IsPythonWhitespace(CodePointAt(text.substr(begin), len))) break;
    begin += len;
  }
  // Trailing: step back over continuation bytes to each character's start.
  size_t end = text.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
    size_t invalid = 0;
    bool incomplete = false;
    const size_t len = DecodeUtf8Char(text.substr(start, end - start), &invalid, &incomplete);
    if (len != end - start || !IsPythonWhitespace(CodePointAt(text.substr(start), len))) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

}  // namespace flute
