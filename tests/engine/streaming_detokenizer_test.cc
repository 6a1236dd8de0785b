// StreamingDetokenizer: emits only complete UTF-8 characters, token by token, for LLaMA-3
// byte-level BPE and for SentencePiece byte-fallback pieces; checked against decoding the
// whole sequence at once.
#include "engine/streaming_detokenizer.h"

#include <random>

#include "engine/byte_level.h"
#include "gtest/gtest.h"
#include "tests/engine/llama3_tokenizer_fixture.h"

namespace flute {
namespace {

struct Streamed {
  std::vector<std::string> pieces;  // what each Push returned
  std::string text;                 // all pieces + Flush
};

// Streams `ids`, checking after every token that what is held back is at most an unfinished
// character (flushing a copy then gives "" or one U+FFFD).
Streamed Stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special = false) {
  StreamingDetokenizer detok(tok, skip_special);
  Streamed out;
  for (int32_t id : ids) {
    out.pieces.push_back(detok.Push(id));
    EXPECT_TRUE(IsValidUtf8(out.pieces.back()));
    out.text += out.pieces.back();
    StreamingDetokenizer copy = detok;
    const std::string held = copy.Flush();
    EXPECT_TRUE(held.empty() || held == "\xEF\xBF\xBD") << "held back: " << held;
  }
  out.text += detok.Flush();
  return out;
}

TEST(StreamingDetokenizerTest, Llama3GoldenTextsRoundTrip) {
  FLUTE_REQUIRE_LLAMA3_TOKENIZER(tok);
  const auto golden =
      testing::ReadJsonFile(testing::TestDataPath("reference/data/tokenizer_golden.json"));
  ASSERT_TRUE(golden.contains("records"));
  for (const auto& r : golden["records"]) {
    const auto ids = r["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(Stream(*tok, ids).text, tok->Decode(ids, false));
    EXPECT_EQ(Stream(*tok, ids, true).text, tok->Decode(ids, true));
  }
}

TEST(StreamingDetokenizerTest, EmojiAndCjkSplitAcrossByteTokens) {
  FLUTE_REQUIRE_LLAMA3_TOKENIZER(tok);
  // Each character here is one byte token per byte or a token ending mid-character.
  for (const std::string text : {"👩🏾‍💻", "🇩🇪", "鿕", "𠀀𠀁", "a😀b", "日本語"}) {
    auto ids = tok->Encode(text, false);
    ASSERT_TRUE(ids.ok());
    const Streamed s = Stream(*tok, *ids);
    EXPECT_EQ(s.text, text);
    // Every emitted piece is whole characters of the text, in order.
    std::string joined;
    for (const auto& p : s.pieces) joined += p;
    EXPECT_EQ(joined, text);
  }
  // A 4-byte emoji fed as its single byte tokens: nothing until the last byte.
  const std::string emoji = "😀";
  std::vector<int32_t> byte_ids;
  for (char byte : emoji) {
    for (int32_t id = 0; id < 128000; ++id) {
      if (tok->TokenBytes(id) == std::string(1, byte)) {
        byte_ids.push_back(id);
        break;
      }
    }
  }
  ASSERT_EQ(byte_ids.size(), 4u);
  StreamingDetokenizer detok(*tok);
  EXPECT_EQ(detok.Push(byte_ids[0]), "");
  EXPECT_EQ(detok.Push(byte_ids[1]), "");
  EXPECT_EQ(detok.Push(byte_ids[2]), "");
  EXPECT_EQ(detok.Push(byte_ids[3]), "😀");
  EXPECT_EQ(detok.Flush(), "");
  // Cut short: the unfinished character becomes U+FFFD at Flush, as Decode does.
  EXPECT_EQ(detok.Push(byte_ids[0]), "");
  EXPECT_EQ(detok.Push(byte_ids[1]), "");
  EXPECT_EQ(detok.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(tok->Decode({byte_ids[0], byte_ids[1]}, false), "\xEF\xBF\xBD");
}

TEST(StreamingDetokenizerTest, RandomTokenSequencesMatchLossyDecode) {
  FLUTE_REQUIRE_LLAMA3_TOKENIZER(tok);
  std::mt19937 rng(std::random_device{}());
  // Ids of tokens that are single non-ASCII bytes (the ones that split characters), mixed
  // with arbitrary tokens, so sequences hold valid, unfinished and invalid UTF-8.
  std::vector<int32_t> byte_tokens;
  for (int32_t id = 0; id < 128000; ++id) {
    const std::string b = tok->TokenBytes(id);
    if (b.size() == 1 && static_cast<uint8_t>(b[0]) >= 0x80) byte_tokens.push_back(id);
  }
  ASSERT_GE(byte_tokens.size(), 100u);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int32_t> ids;
    const int n = 1 + static_cast<int>(rng() % 30);
    for (int i = 0; i < n; ++i) {
      ids.push_back(rng() % 3 ? byte_tokens[rng() % byte_tokens.size()]
                              : static_cast<int32_t>(rng() % tok->vocab_size()));
    }
    EXPECT_EQ(Stream(*tok, ids).text, tok->Decode(ids, false));
  }
}

TEST(StreamingDetokenizerTest, SkipsSpecialTokensWhenAsked) {
  FLUTE_REQUIRE_LLAMA3_TOKENIZER(tok);
  auto ids = tok->Encode("<|start_header_id|>assistant<|end_header_id|>\n\nHi!<|eot_id|>", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(Stream(*tok, *ids, true).text, "assistant\n\nHi!");
  EXPECT_EQ(Stream(*tok, *ids, false).text,
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi!<|eot_id|>");
}

// SentencePiece (the man-page model): "▁" pieces and byte-fallback <0x..> pieces.
TEST(StreamingDetokenizerTest, SentencePieceByteFallback) {
  FLUTE_REQUIRE_SHARED();
  auto loaded = LoadTokenizer(testing::SharedDir() + "/models/manpage-llama-22m");
  if (!loaded.ok() && loaded.status().code() == absl::StatusCode::kUnimplemented) {
    GTEST_SKIP() << "SentencePiece tokenizer not available yet: " << loaded.status();
  }
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer& tok = **loaded;
  for (const std::string text : {"open the file 中文 😀 ok", "naïve café", "Ünïcödé — “quotes”"}) {
    auto ids = tok.Encode(text, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    const Streamed s = Stream(tok, *ids);
    // The stream continues earlier text, so a leading "▁" stays a space; otherwise it is
    // exactly the decoded text.
    const std::string decoded = tok.Decode(*ids, false);
    EXPECT_TRUE(s.text == decoded || s.text == " " + decoded)
        << "stream " << nlohmann::json(s.text).dump() << " vs decode "
        << nlohmann::json(decoded).dump();
    std::string bytes;
    for (int32_t id : *ids) bytes += tok.TokenBytes(id);
    EXPECT_EQ(s.text, Utf8Lossy(bytes));
  }
  // The byte-fallback pieces of "中" (E4 B8 AD) give nothing until the character is whole.
  std::vector<int32_t> pieces;
  for (const char* name : {"\xE4", "\xB8", "\xAD"}) {
    for (int32_t id = 0; id < tok.vocab_size(); ++id) {
      if (tok.TokenBytes(id) == name) {
        pieces.push_back(id);
        break;
      }
    }
  }
  ASSERT_EQ(pieces.size(), 3u) << "byte-fallback pieces <0xE4> <0xB8> <0xAD> not found";
  StreamingDetokenizer detok(tok);
  EXPECT_EQ(detok.Push(pieces[0]), "");
  EXPECT_EQ(detok.Push(pieces[1]), "");
  EXPECT_EQ(detok.Push(pieces[2]), "中");
}

}  // namespace
}  // namespace flute
