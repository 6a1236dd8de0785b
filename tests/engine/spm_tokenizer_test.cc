// SentencePiece tokenizer tests on ../shared/models/manpage-llama-22m: parity with Debian's
// spm_encode (the SentencePiece reference), round trips, the pre-tokenized validation data,
// the streaming (TokenBytes) property, Hugging Face's special-token handling, config files and
// errors.
#include "engine/spm_tokenizer.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace flute {
namespace {

namespace fs = std::filesystem;

std::string ModelDir() { return testing::SharedDir() + "/models/manpage-llama-22m"; }
std::string ModelFile() { return ModelDir() + "/tokenizer.model"; }

std::unique_ptr<Tokenizer> LoadOrDie(const std::string& path) {
  auto tokenizer = LoadTokenizer(path);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(tokenizer).value() : nullptr;
}

std::vector<std::string> ValidationLines(size_t max_lines) {
  std::ifstream in(testing::SharedDir() + "/data/manpage-val.txt");
  std::vector<std::string> lines;
  std::string line;
  while (lines.size() < max_lines && std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::vector<int32_t> ParseIds(const std::string& line) {
  std::istringstream in(line);
  std::vector<int32_t> ids;
  int32_t id;
  while (in >> id) ids.push_back(id);
  return ids;
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary) << contents;
}

// Texts with multi-byte UTF-8 (byte fallback for characters outside the vocabulary),
// leading/trailing/multiple spaces, tabs and newlines.
const std::vector<std::string>& TrickyTexts() {
  static const std::vector<std::string> texts = {
      "Hello world",
      "héllo wörld → 日本語 😀 ✓",
      "  two leading spaces, trailing   ",
      " one leading space",
      "tabs\tand\nnewlines\n\n",
      "Ünïcödé ñ 中文 한국어 עברית العربية",
      "emoji 🎉🎉 and math ∑∫√ and dashes — –",
      "man(1) --help -v [OPTIONS] <file>",
      "▁ literal lower block ▁x",
  };
  return texts;
}

// What decoding gives back for `text`: like Hugging Face, a literal "▁" in the input is
// treated as a space (SentencePiece's escaped space), so it comes back as " ".
std::string AsDecoded(std::string text) {
  const std::string lower_block = "\xe2\x96\x81";
  for (size_t pos; (pos = text.find(lower_block)) != std::string::npos;) {
    text.replace(pos, lower_block.size(), " ");
  }
  return text;
}

class SpmTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FLUTE_REQUIRE_SHARED();
    tokenizer_ = LoadOrDie(ModelDir());
    ASSERT_NE(tokenizer_, nullptr);
  }
  std::vector<int32_t> Encode(const std::string& text, bool add_special_tokens = true) {
    auto ids = tokenizer_->Encode(text, add_special_tokens);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int32_t>();
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(SpmTokenizerTest, ModelFacts) {
  EXPECT_EQ(tokenizer_->vocab_size(), 4096);
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_ids(), std::vector<int32_t>({2}));
  EXPECT_TRUE(tokenizer_->IsSpecial(1));
  EXPECT_TRUE(tokenizer_->IsSpecial(2));
  EXPECT_EQ(tokenizer_->TokenBytes(1), "<s>");
  EXPECT_EQ(tokenizer_->TokenBytes(2), "</s>");
  const std::vector<int32_t> hello = Encode("hello", false);
  ASSERT_FALSE(hello.empty());
  EXPECT_FALSE(tokenizer_->IsSpecial(hello[0]));
}

TEST_F(SpmTokenizerTest, MatchesSpmEncodeOnValidationText) {
  if (std::system("command -v spm_encode > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "spm_encode (Debian package 'sentencepiece') is not installed";
  }
  const std::vector<std::string> lines = ValidationLines(3000);
  ASSERT_GT(lines.size(), 1000u);
  const std::string dir = testing::MakeTempDir("spm-parity");
  std::string input;
  for (const std::string& line : lines) input += line + "\n";
  for (const std::string& text : TrickyTexts()) {
    if (text.find('\n') == std::string::npos) input += text + "\n";
  }
  WriteFile(dir + "/input.txt", input);
  const std::string command = "spm_encode --model='" + ModelFile() +
                              "' --output_format=id < '" + dir + "/input.txt'";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr) << command;
  std::string output;
  char buffer[65536];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  ASSERT_EQ(pclose(pipe), 0) << command;
  fs::remove_all(dir);

  std::istringstream expected_lines(output);
  std::istringstream inputs(input);
  std::string text, expected;
  int compared = 0, mismatches = 0;
  while (std::getline(inputs, text)) {
    ASSERT_TRUE(std::getline(expected_lines, expected)) << "spm_encode gave fewer lines";
    std::vector<int32_t> want = {1};  // Hugging Face adds BOS; spm_encode does not
    for (int32_t id : ParseIds(expected)) want.push_back(id);
    const std::vector<int32_t> got = Encode(text);
    if (got != want && ++mismatches <= 5) ADD_FAILURE() << "mismatch on line: '" << text << "'";
    ++compared;
  }
  EXPECT_EQ(mismatches, 0) << "of " << compared << " lines";
  EXPECT_GT(compared, 1000);
}

TEST_F(SpmTokenizerTest, DecodeOfEncodeIsIdentity) {
  std::vector<std::string> texts = ValidationLines(3000);
  for (const std::string& text : TrickyTexts()) texts.push_back(text);
  // Whole paragraphs too, with their newlines.
  std::string paragraph;
  for (const std::string& line : ValidationLines(200)) paragraph += line + "\n";
  texts.push_back(paragraph);
  int failures = 0;
  for (const std::string& text : texts) {
    const std::string decoded = tokenizer_->Decode(Encode(text), /*skip_special_tokens=*/true);
    if (decoded != AsDecoded(text) && ++failures <= 5) {
      ADD_FAILURE() << "round trip of '" << text << "' gave '" << decoded << "'";
    }
  }
  EXPECT_EQ(failures, 0);
}

// manpage-val.u16 was tokenized by the model's authors as "<s> chunk </s>" pieces of text of
// about 4,000 characters; most chunks start with a space (indented man page lines), which
// Hugging Face's slow LlamaTokenizer and SentencePiece encode as "▁▁...".
std::vector<std::vector<int32_t>> ValidationChunks() {
  std::ifstream in(testing::SharedDir() + "/data/manpage-val.u16", std::ios::binary);
  std::vector<int32_t> data;
  uint8_t bytes[2];
  while (in.read(reinterpret_cast<char*>(bytes), 2)) data.push_back(bytes[0] | (bytes[1] << 8));
  std::vector<std::vector<int32_t>> chunks;
  for (size_t begin = 0; begin < data.size();) {
    size_t end = begin;
    while (end < data.size() && data[end] != 2) ++end;
    if (end == data.size()) break;
    chunks.emplace_back(data.begin() + begin, data.begin() + end);  // <s> ... (without </s>)
    begin = end + 1;
  }
  return chunks;
}

TEST_F(SpmTokenizerTest, PretokenizedValidationChunksRoundTrip) {
  const std::vector<std::vector<int32_t>> chunks = ValidationChunks();
  ASSERT_GT(chunks.size(), 100u);
  ASSERT_EQ(chunks[0][0], 1) << "the file starts with <s>";
  // The first chunk is the start of manpage-val.txt.
  const std::string first = tokenizer_->Decode(chunks[0], /*skip_special_tokens=*/true);
  std::ifstream txt(testing::SharedDir() + "/data/manpage-val.txt", std::ios::binary);
  std::string prefix(first.size(), '\0');
  txt.read(prefix.data(), prefix.size());
  EXPECT_EQ(prefix, first);
  // Every chunk decodes to text that encodes back to the same ids.
  int failures = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    ASSERT_EQ(chunks[i][0], 1) << "chunk " << i << " starts with <s>";
    const std::string text = tokenizer_->Decode(chunks[i], /*skip_special_tokens=*/true);
    if (Encode(text) != chunks[i] && ++failures <= 3) {
      ADD_FAILURE() << "chunk " << i << " does not re-encode to its ids; text starts '"
                    << text.substr(0, 80) << "'";
    }
  }
  EXPECT_EQ(failures, 0) << "of " << chunks.size() << " chunks";
}

TEST_F(SpmTokenizerTest, TokenBytesStreamToDecode) {
  for (const std::string& text : TrickyTexts()) {
    const std::vector<int32_t> ids = Encode(text);
    ASSERT_EQ(ids[0], 1);
    std::string streamed;
    for (size_t i = 1; i < ids.size(); ++i) streamed += tokenizer_->TokenBytes(ids[i]);
    // After BOS nothing is stripped: BOS text + streamed pieces is the full decode.
    EXPECT_EQ(tokenizer_->Decode(ids, /*skip_special_tokens=*/false), "<s>" + streamed) << text;
    // Encode prepended one space ("▁"); decoding without BOS removes it again.
    EXPECT_EQ(" " + tokenizer_->Decode(ids, /*skip_special_tokens=*/true), streamed) << text;
    EXPECT_EQ(streamed, " " + AsDecoded(text));
  }
  // Byte fallback really happens: some token of a CJK text is a single byte of a character.
  bool saw_partial_byte = false;
  for (int32_t id : Encode("日本語")) {
    const std::string bytes = tokenizer_->TokenBytes(id);
    if (bytes.size() == 1 && (static_cast<uint8_t>(bytes[0]) & 0x80)) saw_partial_byte = true;
  }
  EXPECT_TRUE(saw_partial_byte);
}

TEST_F(SpmTokenizerTest, InvalidUtf8BytesDecodeToReplacementCharacters) {
  // The ids of byte pieces <0xE6> and <0x97> (the start of a 3-byte character, cut short).
  int32_t e6 = -1, x97 = -1;
  for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
    const std::string bytes = tokenizer_->TokenBytes(id);
    if (bytes == "\xE6") e6 = id;
    if (bytes == "\x97") x97 = id;
  }
  ASSERT_GE(e6, 0);
  ASSERT_GE(x97, 0);
  std::vector<int32_t> ids = {e6, x97};
  for (int32_t id : Encode("ok", false)) ids.push_back(id);
  EXPECT_EQ(tokenizer_->Decode(ids, true), "\xEF\xBF\xBD\xEF\xBF\xBD ok");
}

TEST_F(SpmTokenizerTest, SpecialTokensInTextAsHuggingFaceLegacyFalse) {
  // "Hello <s>." → [BOS, Hello, ▁, BOS, .]: the special token is split out and the text
  // after it gets no "▁" prefix (legacy=false).
  const std::vector<int32_t> ids = Encode("Hello <s>.");
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[ids.size() - 2], 1);
  EXPECT_EQ(tokenizer_->TokenBytes(ids.back()), ".");
  EXPECT_EQ(tokenizer_->Decode(ids, false), "<s> Hello <s>.");
  // A text that starts with a special token gets no stray "▁" before it.
  const std::vector<int32_t> eos_first = Encode("</s>x", false);
  ASSERT_EQ(eos_first.size(), 2u);
  EXPECT_EQ(eos_first[0], 2);
  EXPECT_EQ(tokenizer_->TokenBytes(eos_first[1]), "x");
  EXPECT_EQ(Encode("", true), std::vector<int32_t>({1}));
  EXPECT_TRUE(Encode("", false).empty());
}

TEST_F(SpmTokenizerTest, ModelFilePathWorksLikeTheDirectory) {
  auto by_file = LoadOrDie(ModelFile());
  ASSERT_NE(by_file, nullptr);
  const std::string text = "The quick brown fox";
  EXPECT_EQ(*by_file->Encode(text, true), Encode(text));
}

// A model directory of our own: the shared tokenizer.model with given config files.
std::string MakeModelDir(const std::string& tokenizer_config, const std::string& generation_config) {
  const std::string dir = testing::MakeTempDir("spm-config");
  fs::copy_file(ModelFile(), dir + "/tokenizer.model");
  if (!tokenizer_config.empty()) WriteFile(dir + "/tokenizer_config.json", tokenizer_config);
  if (!generation_config.empty()) WriteFile(dir + "/generation_config.json", generation_config);
  return dir;
}

TEST_F(SpmTokenizerTest, ConfigControlsBosEosAndEosIds) {
  const std::string dir = MakeModelDir(
      R"({"add_bos_token": false, "add_eos_token": true, "legacy": false})",
      R"({"eos_token_id": [2, 7]})");
  auto tokenizer = LoadOrDie(dir);
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<int32_t> ids = *tokenizer->Encode("hello", true);
  EXPECT_NE(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(tokenizer->eos_ids(), std::vector<int32_t>({2, 7}));
  const std::vector<int32_t> plain = *tokenizer->Encode("hello", false);
  EXPECT_EQ(plain.size() + 1, ids.size());
  fs::remove_all(dir);

  const std::string single = MakeModelDir("", R"({"eos_token_id": 5})");
  auto tokenizer2 = LoadOrDie(single);
  ASSERT_NE(tokenizer2, nullptr);
  EXPECT_EQ(tokenizer2->eos_ids(), std::vector<int32_t>({2, 5}));
  fs::remove_all(single);
}

TEST_F(SpmTokenizerTest, BadConfigsAreClearErrors) {
  const std::string dir = MakeModelDir("{not json", "");
  auto broken = LoadTokenizer(dir);
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("tokenizer_config.json"), std::string::npos)
      << broken.status();
  fs::remove_all(dir);

  const std::string dir2 = MakeModelDir("", R"({"eos_token_id": "two"})");
  auto bad_eos = LoadTokenizer(dir2);
  ASSERT_FALSE(bad_eos.ok());
  EXPECT_NE(bad_eos.status().message().find("eos_token_id"), std::string::npos) << bad_eos.status();
  fs::remove_all(dir2);

  const std::string dir3 = MakeModelDir("", R"({"eos_token_id": 99999})");
  auto out_of_range = LoadTokenizer(dir3);
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_NE(out_of_range.status().message().find("99999"), std::string::npos);
  fs::remove_all(dir3);
}

TEST(SpmTokenizerErrors, MissingOrBrokenModelIsAClearError) {
  auto missing = LoadTokenizer("/nonexistent/dir/tokenizer.model");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/dir/tokenizer.model"), std::string::npos)
      << missing.status();

  auto missing_spm = LoadSpmTokenizer("/nonexistent/tokenizer.model", "");
  ASSERT_FALSE(missing_spm.ok());
  EXPECT_NE(missing_spm.status().message().find("/nonexistent/tokenizer.model"), std::string::npos);

  const std::string empty_dir = testing::MakeTempDir("spm-empty");
  auto nothing = LoadTokenizer(empty_dir);
  ASSERT_FALSE(nothing.ok());
  EXPECT_NE(nothing.status().message().find("tokenizer.model"), std::string::npos)
      << nothing.status();

  WriteFile(empty_dir + "/tokenizer.model", "this is not a protobuf \xff\xff\xff\xff");
  auto garbage = LoadTokenizer(empty_dir);
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find(empty_dir + "/tokenizer.model"), std::string::npos)
      << garbage.status();
  fs::remove_all(empty_dir);
}

TEST(SpmTokenizerErrors, PluginSearchPathsStartWithTheEnvironment) {
  setenv("FLUTE_SPM_PLUGIN", "/custom/libflute_spm.so", 1);
  const std::vector<std::string> paths = SpmPluginSearchPaths();
  unsetenv("FLUTE_SPM_PLUGIN");
  ASSERT_GE(paths.size(), 3u);
  EXPECT_EQ(paths[0], "/custom/libflute_spm.so");
  EXPECT_NE(paths[1].find("libflute_spm.so"), std::string::npos);
  EXPECT_NE(paths[2].find("/../lib/libflute_spm.so"), std::string::npos);
}

}  // namespace
}  // namespace flute
