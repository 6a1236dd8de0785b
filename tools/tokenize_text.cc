// Tokenizes a UTF-8 text file with a model's tokenizer into little-endian uint16 ids, in the
// layout of the man-page evaluation file: ~4,000-character chunks (cut at a newline), each
// encoded with the tokenizer's special tokens (BOS) and followed by EOS. Used to make
// calibration data for `flute quantize --method nfl` (scripts/make_calibration_tokens.sh).
//
// usage: tokenize_text MODEL_DIR_OR_TOKENIZER TEXT_FILE OUT.u16
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR_OR_TOKENIZER TEXT_FILE OUT.u16\n";
    return 2;
  }
  auto tokenizer = flute::LoadTokenizer(argv[1]);
  if (!tokenizer.ok()) {
    std::cerr << "error: " << tokenizer.status().message() << "\n";
    return 1;
  }
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::cerr << "error: cannot read " << argv[2] << "\n";
    return 1;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const std::vector<int32_t> eos = (*tokenizer)->eos_ids();
  std::vector<uint16_t> ids;
  constexpr size_t kChunkChars = 4000;
  for (size_t start = 0; start < text.size();) {
    size_t end = std::min(text.size(), start + kChunkChars);
    if (end < text.size()) {
      const size_t newline = text.rfind('\n', end);
      if (newline != std::string::npos && newline > start) end = newline + 1;
    }
    auto encoded = (*tokenizer)->Encode(text.substr(start, end - start), /*add_special_tokens=*/true);
    if (!encoded.ok()) {
      std::cerr << "error: " << encoded.status().message() << "\n";
      return 1;
    }
    for (int32_t id : *encoded) {
      if (id < 0 || id > 65535) {
        std::cerr << "error: token id " << id << " does not fit in uint16\n";
        return 1;
      }
      ids.push_back(static_cast<uint16_t>(id));
    }
    if (!eos.empty()) ids.push_back(static_cast<uint16_t>(eos[0]));
    start = end;
  }
  std::ofstream out(argv[3], std::ios::binary | std::ios::trunc);
  for (uint16_t id : ids) {
    const unsigned char bytes[2] = {static_cast<unsigned char>(id & 0xff), static_cast<unsigned char>(id >> 8)};
    out.write(reinterpret_cast<const char*>(bytes), 2);
  }
  if (!out) {
    std::cerr << "error: cannot write " << argv[3] << "\n";
    return 1;
  }
  std::cerr << "wrote " << ids.size() << " tokens to " << argv[3] << "\n";
  return 0;
}
