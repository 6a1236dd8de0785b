// Byte-level helpers for Hugging Face byte-level BPE and for UTF-8 text handling.
//
// Byte-level BPE (GPT-2, LLaMA-3) writes every byte as one printable Unicode character
// ("bytes to unicode"): printable Latin-1 bytes stand for themselves, the other 68 bytes map
// to U+0100.. in byte order (space 0x20 → 'Ġ' U+0120, '\n' → 'Ċ' U+010A).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace flute {

// UTF-8 of the character that stands for byte b, for all 256 bytes.
const std::array<std::string, 256>& ByteLevelAlphabet();

// Turns a byte-level token (e.g. "ĠHello") back into raw bytes (" Hello"). Returns false,
// leaving *bytes unspecified, when a character is not in the byte-level alphabet.
bool ByteLevelToBytes(std::string_view token, std::string* bytes);

// Byte length of the UTF-8 character that starts with lead byte `b`: 1..4, or 0 if `b` can
// never start a character (a continuation byte, 0xC0, 0xC1, 0xF5..0xFF).
int Utf8SequenceLength(uint8_t b);

// Number of bytes at the start of `text` that form a valid UTF-8 character, or 0 if the
// bytes there are invalid or incomplete. *maximal_invalid gets the length of the maximal
// invalid (or incomplete) subpart in that case (>= 1, Unicode's "maximal subpart" rule), and
// *incomplete whether the bytes are a valid but unfinished character cut by the end.
size_t DecodeUtf8Char(std::string_view text, size_t* maximal_invalid, bool* incomplete);

// `bytes` as valid UTF-8: each maximal invalid subpart becomes U+FFFD, as Rust's
// String::from_utf8_lossy (and so Hugging Face's decode) does.
std::string Utf8Lossy(std::string_view bytes);

// True when `text` is entirely valid UTF-8.
bool IsValidUtf8(std::string_view text);

// Python's str.isspace() for one code point (what Jinja's `trim` filter strips).
bool IsPythonWhitespace(uint32_t code_point);

// Python's str.strip() on UTF-8 text (assumed valid).
std::string_view PythonStrip(std::string_view text);

}  // namespace flute
