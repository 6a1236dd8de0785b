// LLaMA-3 tokenizer.json: golden ids from Hugging Face tokenizers (made by
// tests/reference/make_tokenizer_golden.py), decode round trips, the post-processor's BOS,
// and the BPE merge loop against a simple reference on fresh random words.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "engine/bpe.h"
#include "engine/byte_level.h"
#include "engine/hf_tokenizer.h"
#include "gtest/gtest.h"
#include "tests/engine/llama3_tokenizer_fixture.h"

namespace flute {
namespace {

using nlohmann::json;

const json& Golden() {
  static const json golden =
      testing::ReadJsonFile(testing::TestDataPath("reference/data/tokenizer_golden.json"));
  return golden;
}

std::string Printable(const std::string& s) { return json(s).dump(); }

TEST(HfTokenizerTest, GoldenIdsAndDecodes) {
  FLUTE_REQUIRE_LLAMA3_TOKENIZER(tok);
  ASSERT_TRUE(Golden().contains("records")) << "tokenizer_golden.json missing or broken";
  int checked = 0;
  for (const json& r : Golden()["records"]) {
    const std::string text = r["text"];
    auto ids = tok->Encode(text, /*add_special_tokens=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status() << " for " << Printable(text);
    EXPECT_EQ(*ids, r["ids"].get<std::vector<int32_t>>()) << "text " << Printable(text);
    auto with_special = tok->Encode(text, /*add_special_tokens=*/true);
    ASSERT_TRUE(with_special.ok());
    EXPECT_EQ(*with_special, r["ids_add_special"].get<std::vector<int32_t>>()) << Printable(text);
    if (r.contains("transformers_ids")) {  // transformers' encode, same file and config
      EXPECT_EQ(*ids, r["transformers_ids"].get<std::vector<int32_t>>()) << Printable(text);
      EXPECT_EQ(*with_special, r["transformers_ids_add_special"].get<std::vector<int32_t>>())
          << Printable(text);
    }
    const auto golden_ids = r["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->Decode(golden_ids, false), r["decoded"].get<std::string>()) << Printable(text);
    EXPECT_EQ(tok->Decode(golden_ids, true), r["decoded_skip_special"].get<std::string>())
        << Printable(text);
    EXPECT_EQ(tok->Decode(golden_ids, false), text) << "round trip of " << Printable(text);
    ++checked;
  }
  EXPECT_GE(checked, 100);
}

TEST(HfTokenizerTest, SpecialTokenIds) {
  FLUTE_REQUIRE_LLAMA3_TOKENIZER(tok);
  EXPECT_EQ(tok->vocab_size(), 128256);
  EXPECT_EQ(tok->bos_id(), 128000);
  const auto eos = tok->eos_ids();
  EXPECT_NE(std::find(eos.begin(), eos.end(), 128001), eos.end());  // <|end_of_text|>
  EXPECT_NE(std::find(eos.begin(), eos.end(), 128009), eos.end());  // <|eot_id|>
  EXPECT_TRUE(tok->IsSpecial(128000));
  EXPECT_TRUE(tok->IsSpecial(128255));
  EXPECT_FALSE(tok->IsSpecial(9906));
  EXPECT_EQ(tok->TokenBytes(128009), "<|eot_id|>");
  EXPECT_EQ(tok->TokenBytes(9906), "Hello");
  EXPECT_EQ(tok->TokenBytes(1917), " world");
  EXPECT_EQ(tok->TokenBytes(-1), "");
  EXPECT_EQ(tok->TokenBytes(1 << 30), "");
}

TEST(HfTokenizerTest, RejectsInvalidUtf8) {
  FLUTE_REQUIRE_LLAMA3_TOKENIZER(tok);
  auto ids = tok->Encode(std::string("ok \xC3\x28 bad"), false);
  ASSERT_FALSE(ids.ok());
  EXPECT_NE(ids.status().message().find("UTF-8"), std::string::npos);
}

TEST(HfTokenizerTest, DecodeReplacesBrokenUtf8) {
  FLUTE_REQUIRE_LLAMA3_TOKENIZER(tok);
  // "😀" is 4 bytes; its byte tokens alone, or cut, decode with U+FFFD as Rust's lossy does.
  auto ids = tok->Encode("😀", false);
  ASSERT_TRUE(ids.ok());
  std::string bytes;
  for (int32_t id : *ids) bytes += tok->TokenBytes(id);
  ASSERT_EQ(bytes, "😀");
  EXPECT_EQ(Utf8Lossy(bytes.substr(0, 3)), "\xEF\xBF\xBD");
  EXPECT_EQ(Utf8Lossy("a\xF0\x9F" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(Utf8Lossy("\xC0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

// Same tokenizer with merges as ["a", "b"] lists and a TemplateProcessing post-processor that
// adds <|begin_of_text|> (as later Meta releases ship): golden ids_bos_post_processor.
TEST(HfTokenizerTest, ListMergesAndTemplateProcessingBos) {
  FLUTE_REQUIRE_LLAMA3_TOKENIZER(tok);
  std::string why;
  const std::string dir = testing::FetchLlama3TokenizerDir(&why);
  json spec = testing::ReadJsonFile(dir + "/tokenizer.json");
  ASSERT_FALSE(spec.is_discarded());
  json merges = json::array();
  for (const json& m : spec["model"]["merges"]) {
    const std::string s = m;
    const size_t space = s.find(' ');
    merges.push_back(json::array({s.substr(0, space), s.substr(space + 1)}));
  }
  spec["model"]["merges"] = merges;
  spec["post_processor"] = json::parse(R"({"type": "Sequence", "processors": [
      {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
      {"type": "TemplateProcessing",
       "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}}],
       "pair": [],
       "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                "tokens": ["<|begin_of_text|>"]}}}]})");
  const std::string temp = testing::MakeTempDir("flute-hf-tok");
  const std::string path = temp + "/tokenizer.json";
  std::ofstream(path) << spec.dump();
  auto variant = LoadHfTokenizer(path, "");
  std::filesystem::remove_all(temp);
  ASSERT_TRUE(variant.ok()) << variant.status();
  EXPECT_EQ((*variant)->bos_id(), 128000);
  for (const json& r : Golden()["records"]) {
    const std::string text = r["text"];
    auto ids = (*variant)->Encode(text, true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, r["ids_bos_post_processor"].get<std::vector<int32_t>>()) << Printable(text);
    auto plain = (*variant)->Encode(text, false);
    ASSERT_TRUE(plain.ok());
    EXPECT_EQ(*plain, r["ids"].get<std::vector<int32_t>>()) << Printable(text);
  }
}

TEST(HfTokenizerTest, ClearErrorsForBadFiles) {
  const std::string temp = testing::MakeTempDir("flute-hf-bad");
  auto missing = LoadHfTokenizer(temp + "/nope.json", "");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.json"), std::string::npos);

  auto write_and_load = [&](const std::string& text) {
    std::ofstream(temp + "/t.json") << text;
    return LoadHfTokenizer(temp + "/t.json", "").status();
  };
  EXPECT_NE(write_and_load("{not json").message().find("not valid JSON"), std::string::npos);
  EXPECT_NE(write_and_load(R"({"model": {"type": "WordPiece"}})").message().find("model.type"),
            std::string::npos);
  // A byte-level vocab missing most bytes.
  json spec = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", json::array()}}},
               {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
               {"decoder", {{"type", "ByteLevel"}}}};
  EXPECT_NE(write_and_load(spec.dump()).message().find("byte"), std::string::npos);
  std::filesystem::remove_all(temp);
}

// --- BPE merge loop against a simple reference -------------------------------------------

// Reference: repeatedly merge the adjacent pair of lowest rank, leftmost among equals.
std::vector<std::string> ReferenceBpe(const std::string& word,
                                      const std::map<std::pair<std::string, std::string>, int>& ranks,
                                      const std::map<std::string, int>& vocab, bool ignore_merges) {
  if (ignore_merges && vocab.count(word)) return {word};
  std::vector<std::string> symbols;
  for (char c : word) symbols.emplace_back(1, c);
  while (symbols.size() > 1) {
    int best = -1, best_rank = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = ranks.find({symbols[i], symbols[i + 1]});
      if (it != ranks.end() && (best < 0 || it->second < best_rank)) {
        best = static_cast<int>(i);
        best_rank = it->second;
      }
    }
    if (best < 0) break;
    symbols[best] += symbols[best + 1];
    symbols.erase(symbols.begin() + best + 1);
  }
  return symbols;
}

TEST(BpeModelTest, MatchesReferenceOnRandomWords) {
  std::mt19937 rng(std::random_device{}());
  const std::string alphabet = "abcd";
  std::map<std::string, int> vocab;
  for (int b = 0; b < 256; ++b) vocab[std::string(1, static_cast<char>(b))] = b;
  // Random merges over a small alphabet, so that words hit many and overlapping merges.
  std::vector<std::pair<std::string, std::string>> merges;
  std::map<std::pair<std::string, std::string>, int> ranks;
  std::vector<std::string> tokens(alphabet.size());
  for (size_t i = 0; i < alphabet.size(); ++i) tokens[i] = std::string(1, alphabet[i]);
  while (merges.size() < 60) {
    const std::string a = tokens[rng() % tokens.size()], b = tokens[rng() % tokens.size()];
    if (ranks.count({a, b}) || a.size() + b.size() > 8) continue;
    ranks[{a, b}] = static_cast<int>(merges.size());
    merges.emplace_back(a, b);
    if (!vocab.count(a + b)) {
      const int id = static_cast<int>(vocab.size());
      vocab[a + b] = id;
      tokens.push_back(a + b);
    }
  }
  // Some whole words in the vocab with no merge path (what ignore_merges looks up first).
  vocab["abcabcabc"] = static_cast<int>(vocab.size());
  for (bool ignore_merges : {false, true}) {
    BpeModel bpe;
    for (const auto& [bytes, id] : vocab) ASSERT_TRUE(bpe.AddToken(bytes, id).ok());
    ASSERT_TRUE(bpe.FinishVocab().ok());
    for (size_t r = 0; r < merges.size(); ++r) {
      ASSERT_TRUE(bpe.AddMerge(merges[r].first, merges[r].second, static_cast<int32_t>(r)).ok());
    }
    bpe.set_ignore_merges(ignore_merges);
    for (int trial = 0; trial < 2000; ++trial) {
      std::string word;
      const int length = trial == 0 ? 9 : 1 + static_cast<int>(rng() % 40);
      for (int i = 0; i < length; ++i) word += alphabet[rng() % alphabet.size()];
      if (trial == 0) word = "abcabcabc";
      std::vector<int32_t> expected;
      for (const auto& s : ReferenceBpe(word, ranks, vocab, ignore_merges)) expected.push_back(vocab[s]);
      std::vector<int32_t> got;
      bpe.EncodeWord(word, &got);
      bpe.EncodeWord(word, &got);  // again, from the cache
      expected.insert(expected.end(), expected.begin(), expected.end());
      ASSERT_EQ(got, expected) << "word " << word << " ignore_merges=" << ignore_merges;
    }
  }
}

TEST(BpeModelTest, MergeOfUnknownTokenIsAnError) {
  BpeModel bpe;
  for (int b = 0; b < 256; ++b) ASSERT_TRUE(bpe.AddToken(std::string(1, static_cast<char>(b)), b).ok());
  ASSERT_TRUE(bpe.FinishVocab().ok());
  const absl::Status status = bpe.AddMerge("a", "b", 0);  // "ab" is not a token
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("merges[0]"), std::string::npos);
}

}  // namespace
}  // namespace flute
