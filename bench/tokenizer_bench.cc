// Encoding speed of a tokenizer on one thread.
//
//   flute-bench-tokenizer --tokenizer PATH --text FILE [--repeat N] [--chunk BYTES]
//
// PATH: tokenizer.json, tokenizer.model or a model directory (LoadTokenizer). The file is
// encoded in chunks of about --chunk bytes (cut at line ends; default: the whole file at
// once), --repeat times; prints bytes, tokens, seconds and MB/s (10^6 bytes) of the best
// repetition, first (cold cache) and best, by wall clock and by thread CPU time.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: flute-bench-tokenizer --tokenizer PATH --text FILE [--repeat N] [--chunk BYTES]\n");
  return 2;
}

std::vector<std::string> Chunks(const std::string& text, size_t chunk) {
  std::vector<std::string> chunks;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = chunk == 0 ? text.size() : std::min(text.size(), pos + chunk);
    const size_t newline = text.find('\n', end);
    end = (chunk == 0 || newline == std::string::npos) ? text.size() : newline + 1;
    chunks.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return chunks;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tokenizer_path, text_path;
  int repeat = 5;
  size_t chunk = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokenizer")) tokenizer_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--text")) text_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--repeat")) repeat = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--chunk")) chunk = std::strtoull(argv[i + 1], nullptr, 10);
    else return Usage();
  }
  if (tokenizer_path.empty() || text_path.empty()) return Usage();
  auto tokenizer = flute::LoadTokenizer(tokenizer_path);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  std::ifstream in(text_path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "error: cannot open %s\n", text_path.c_str());
    return 1;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const std::vector<std::string> chunks = Chunks(text, chunk);

  // Wall time, and this thread's CPU time (what one core gives when the machine is shared).
  auto cpu_now = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
  };
  double first = 0, best = 1e30, first_cpu = 0, best_cpu = 1e30;
  size_t tokens = 0;
  for (int r = 0; r < repeat; ++r) {
    tokens = 0;
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = cpu_now();
    for (const std::string& c : chunks) {
      auto ids = (*tokenizer)->Encode(c, /*add_special_tokens=*/false);
      if (!ids.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(ids.status().message()).c_str());
        return 1;
      }
      tokens += ids->size();
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double cpu_seconds = cpu_now() - cpu_start;
    if (r == 0) first = seconds, first_cpu = cpu_seconds;
    best = std::min(best, seconds);
    best_cpu = std::min(best_cpu, cpu_seconds);
  }
  const double mb = text.size() / 1e6;
  std::printf("bytes=%zu chunks=%zu tokens=%zu\n", text.size(), chunks.size(), tokens);
  std::printf("wall: first_s=%.4f best_s=%.4f first_MBps=%.2f best_MBps=%.2f\n", first, best,
              mb / first, mb / best);
  std::printf("cpu:  first_s=%.4f best_s=%.4f first_MBps=%.2f best_MBps=%.2f\n", first_cpu,
              best_cpu, mb / first_cpu, mb / best_cpu);
  return 0;
}
