// config.json parsing: both rope forms, derived sizes, token ids, the quantization block,
// and an error naming the key for each unsupported or malformed input.
#include "engine/model_config.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/checkpoint_builder.h"
#include "tests/test_util.h"

namespace flute {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

// The classic LLaMA-3.2-style config of the shared 22M model.
Json ClassicConfig() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 1, "eos_token_id": 2, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 512, "intermediate_size": 1536, "max_position_embeddings": 2048,
    "mlp_bias": false, "model_type": "llama", "num_attention_heads": 8, "num_hidden_layers": 6,
    "num_key_value_heads": 2, "pad_token_id": null, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "tie_word_embeddings": false, "vocab_size": 4096, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 4.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 256, "rope_type": "llama3"},
    "torch_dtype": "bfloat16"})");
}

absl::StatusOr<ModelConfig> Parse(const Json& json) {
  return ParseModelConfig(json.dump(), "test/config.json");
}

// The error message of parsing `json`, which must fail with `code`.
std::string ParseError(const Json& json,
                       absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
  auto config = Parse(json);
  EXPECT_FALSE(config.ok()) << json.dump();
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), code) << config.status();
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("test/config.json"));
  return std::string(config.status().message());
}

TEST(ParseModelConfig, ClassicFormWithLlama3Scaling) {
  auto config = Parse(ClassicConfig());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model_type, "llama");
  EXPECT_EQ(config->vocab_size, 4096);
  EXPECT_EQ(config->hidden_size, 512);
  EXPECT_EQ(config->intermediate_size, 1536);
  EXPECT_EQ(config->num_layers, 6);
  EXPECT_EQ(config->num_heads, 8);
  EXPECT_EQ(config->num_kv_heads, 2);
  EXPECT_EQ(config->head_dim, 64);
  EXPECT_EQ(config->q_dim(), 512);
  EXPECT_EQ(config->kv_dim(), 128);
  EXPECT_EQ(config->max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(config->rms_norm_eps, 1e-5);
  EXPECT_EQ(config->rope.type, RopeConfig::Type::kLlama3);
  EXPECT_DOUBLE_EQ(config->rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(config->rope.factor, 4.0);
  EXPECT_DOUBLE_EQ(config->rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(config->rope.high_freq_factor, 4.0);
  EXPECT_EQ(config->rope.original_max_position_embeddings, 256);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_EQ(config->bos_token_id, 1);
  EXPECT_EQ(config->eos_token_ids, std::vector<int>{2});
  EXPECT_EQ(config->torch_dtype, "bfloat16");
  EXPECT_FALSE(config->quantization.has_value());
}

TEST(ParseModelConfig, RopeParametersForm) {
  Json json = ClassicConfig();
  json.erase("rope_theta");
  json.erase("rope_scaling");
  json["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 250000.0},
                             {"factor", 32.0},          {"low_freq_factor", 2.0},
                             {"high_freq_factor", 8.0}, {"original_max_position_embeddings", 8192}};
  json.erase("torch_dtype");
  json["dtype"] = "float16";
  auto config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope.type, RopeConfig::Type::kLlama3);
  EXPECT_DOUBLE_EQ(config->rope.theta, 250000.0);
  EXPECT_DOUBLE_EQ(config->rope.factor, 32.0);
  EXPECT_DOUBLE_EQ(config->rope.low_freq_factor, 2.0);
  EXPECT_DOUBLE_EQ(config->rope.high_freq_factor, 8.0);
  EXPECT_EQ(config->rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(config->torch_dtype, "float16");

  json["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
  config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope.type, RopeConfig::Type::kDefault);
  EXPECT_DOUBLE_EQ(config->rope.theta, 10000.0);
}

TEST(ParseModelConfig, LinearDefaultAndAbsentScaling) {
  Json json = ClassicConfig();
  json["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};  // the older "type" key
  auto config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope.type, RopeConfig::Type::kLinear);
  EXPECT_DOUBLE_EQ(config->rope.factor, 2.0);
  EXPECT_DOUBLE_EQ(config->rope.theta, 500000.0);

  json["rope_scaling"] = nullptr;
  config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope.type, RopeConfig::Type::kDefault);

  json.erase("rope_scaling");
  json.erase("rope_theta");
  config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope.type, RopeConfig::Type::kDefault);
  EXPECT_DOUBLE_EQ(config->rope.theta, 10000.0);  // transformers' default
}

TEST(ParseModelConfig, HeadDimDerivedWhenAbsentOrNull) {
  Json json = ClassicConfig();
  json["hidden_size"] = 768;
  json["head_dim"] = 64;  // given: not hidden / heads (96)
  auto config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head_dim, 64);
  EXPECT_EQ(config->q_dim(), 512);

  json["head_dim"] = nullptr;
  config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head_dim, 96);

  json.erase("head_dim");
  json.erase("num_key_value_heads");  // defaults to num_attention_heads
  config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head_dim, 96);
  EXPECT_EQ(config->num_kv_heads, 8);

  json["hidden_size"] = 500;
  EXPECT_THAT(ParseError(json), HasSubstr("\"hidden_size\""));
}

TEST(ParseModelConfig, TokenIdsAndTiedEmbeddings) {
  Json json = ClassicConfig();
  json["eos_token_id"] = {128001, 128008, 128009};
  json["bos_token_id"] = nullptr;
  json["tie_word_embeddings"] = true;
  auto config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
  EXPECT_EQ(config->bos_token_id, -1);
  EXPECT_TRUE(config->tie_word_embeddings);

  json.erase("tie_word_embeddings");
  json.erase("eos_token_id");
  config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_TRUE(config->eos_token_ids.empty());

  json["eos_token_id"] = "2";
  EXPECT_THAT(ParseError(json), HasSubstr("\"eos_token_id\""));
  json["eos_token_id"] = Json::array({2, -1});
  EXPECT_THAT(ParseError(json), HasSubstr("\"eos_token_id\" must be a token id"));
}

TEST(ParseModelConfig, UnsupportedRopeTypeIsUnimplementedNamingKeyAndSupportedValues) {
  Json json = ClassicConfig();
  json["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  std::string message = ParseError(json, absl::StatusCode::kUnimplemented);
  EXPECT_THAT(message, HasSubstr("\"yarn\""));
  EXPECT_THAT(message, HasSubstr("rope_scaling.rope_type"));
  EXPECT_THAT(message, HasSubstr("default, linear, llama3"));

  json.erase("rope_scaling");
  json["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 10000.0}, {"factor", 2.0}};
  message = ParseError(json, absl::StatusCode::kUnimplemented);
  EXPECT_THAT(message, HasSubstr("rope_parameters.rope_type"));
  EXPECT_THAT(message, HasSubstr("\"dynamic\""));
}

TEST(ParseModelConfig, IncompleteRopeScalingNamesTheMissingKey) {
  Json json = ClassicConfig();
  json["rope_scaling"].erase("low_freq_factor");
  EXPECT_THAT(ParseError(json), HasSubstr("rope_scaling.low_freq_factor"));
  json = ClassicConfig();
  json["rope_scaling"] = {{"rope_type", "linear"}};
  EXPECT_THAT(ParseError(json), HasSubstr("rope_scaling.factor"));
  json["rope_scaling"] = "llama3";
  EXPECT_THAT(ParseError(json), HasSubstr("\"rope_scaling\""));
}

TEST(ParseModelConfig, UnsupportedArchitectureNamesWhatWasFound) {
  Json json = ClassicConfig();
  json["architectures"] = {"MistralForCausalLM"};
  EXPECT_THAT(ParseError(json), HasSubstr("MistralForCausalLM"));
  json = ClassicConfig();
  json["model_type"] = "qwen2";
  std::string message = ParseError(json);
  EXPECT_THAT(message, HasSubstr("\"qwen2\""));
  EXPECT_THAT(message, HasSubstr("unsupported architecture"));
  json.erase("model_type");
  EXPECT_THAT(ParseError(json), HasSubstr("model_type"));
}

TEST(ParseModelConfig, BiasesAndOtherActivationsAreRejected) {
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    Json json = ClassicConfig();
    json[key] = true;
    EXPECT_THAT(ParseError(json, absl::StatusCode::kUnimplemented), HasSubstr(key));
  }
  Json json = ClassicConfig();
  json["hidden_act"] = "gelu";
  EXPECT_THAT(ParseError(json, absl::StatusCode::kUnimplemented), HasSubstr("gelu"));
}

TEST(ParseModelConfig, InconsistentHeadCountsAreRejected) {
  Json json = ClassicConfig();
  json["num_key_value_heads"] = 3;
  const std::string message = ParseError(json);
  EXPECT_THAT(message, HasSubstr("\"num_key_value_heads\""));
  EXPECT_THAT(message, HasSubstr("found 3"));
}

TEST(ParseModelConfig, MissingOrMistypedKeysAreNamed) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads"}) {
    Json json = ClassicConfig();
    json.erase(key);
    const std::string message = ParseError(json);
    EXPECT_THAT(message, HasSubstr(std::string("\"") + key + "\""));
    EXPECT_THAT(message, HasSubstr("required"));
  }
  Json json = ClassicConfig();
  json["hidden_size"] = "512";
  EXPECT_THAT(ParseError(json), HasSubstr("\"hidden_size\" must be an integer, found \"512\""));
  json = ClassicConfig();
  json["num_hidden_layers"] = 0;
  EXPECT_THAT(ParseError(json), HasSubstr("\"num_hidden_layers\" must be a positive integer"));
  json = ClassicConfig();
  json["tie_word_embeddings"] = 1;
  EXPECT_THAT(ParseError(json), HasSubstr("\"tie_word_embeddings\""));
  json = ClassicConfig();
  json["rms_norm_eps"] = "small";
  EXPECT_THAT(ParseError(json), HasSubstr("\"rms_norm_eps\""));
}

TEST(ParseModelConfig, MalformedJsonNamesTheSource) {
  auto config = ParseModelConfig(R"({"model_type": "llama", )", "some/dir/config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("some/dir/config.json"));
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("malformed JSON"));
  config = ParseModelConfig("[1, 2]", "some/dir/config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("not a JSON object"));
}

Json QuantizationBlock() {
  return {{"method", "nf"},          {"bits", 4},
          {"group_size", 64},        {"format_version", 1},
          {"table_per_layer", true}, {"modules", {"q_proj", "k_proj", "down_proj", "lm_head"}}};
}

TEST(ParseModelConfig, QuantizationConfig) {
  Json json = ClassicConfig();
  json["quantization_config"] = QuantizationBlock();
  auto config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->quantization.has_value());
  const QuantizationConfig& quant = *config->quantization;
  EXPECT_EQ(quant.method, "nf");
  EXPECT_EQ(quant.bits, 4);
  EXPECT_EQ(quant.group_size, 64);
  EXPECT_EQ(quant.format_version, 1);
  EXPECT_TRUE(quant.table_per_layer);
  EXPECT_TRUE(quant.IsQuantized("q_proj"));
  EXPECT_TRUE(quant.IsQuantized("lm_head"));
  EXPECT_FALSE(quant.IsQuantized("v_proj"));
  EXPECT_FALSE(quant.IsQuantized("up_proj"));
}

TEST(ParseModelConfig, BadQuantizationConfigNamesTheKey) {
  const std::pair<const char*, Json> cases[] = {
      {"bits", 5},
      {"bits", "4"},
      {"group_size", 100},
      {"modules", Json::array({"q_proj", "mlp"})},
      {"modules", "q_proj"},
      {"method", ""},
      {"table_per_layer", "yes"},
      {"format_version", 0},
      {"format_version", 3},  // newer than this build's packed layout (2)
  };
  for (const auto& [key, value] : cases) {
    Json json = ClassicConfig();
    json["quantization_config"] = QuantizationBlock();
    json["quantization_config"][key] = value;
    EXPECT_THAT(ParseError(json), HasSubstr(std::string("quantization_config.") + key))
        << value.dump();
  }
  Json newer = ClassicConfig();
  newer["quantization_config"] = QuantizationBlock();
  newer["quantization_config"]["format_version"] = 3;
  EXPECT_THAT(ParseError(newer), HasSubstr("1 to 2"));
  EXPECT_THAT(ParseError(newer), HasSubstr("found 3"));
  Json json = ClassicConfig();
  json["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}};
  EXPECT_THAT(ParseError(json, absl::StatusCode::kUnimplemented), HasSubstr("gptq"));
}

TEST(LoadModelConfig, MissingFileIsNotFoundNamingThePath) {
  const std::string dir = testing::MakeTempDir("flute-config");
  auto config = LoadModelConfig(dir);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr(dir + "/config.json"));

  testing::WriteTextFile(dir + "/config.json", "{not json");
  config = LoadModelConfig(dir);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()), HasSubstr(dir + "/config.json"));
  std::filesystem::remove_all(dir);
}

TEST(LoadModelConfig, ReadsTheSharedModel) {
  FLUTE_REQUIRE_SHARED();
  auto config = LoadModelConfig(testing::SharedDir() + "/models/manpage-llama-22m");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_layers, 6);
  EXPECT_EQ(config->vocab_size, 4096);
  EXPECT_EQ(config->rope.type, RopeConfig::Type::kLlama3);
  EXPECT_EQ(config->head_dim, 64);
}

TEST(ReadTextFile, ReadsBytesExactly) {
  const std::string dir = testing::MakeTempDir("flute-text");
  const std::string text("line1\nline2\0tail", 16);
  testing::WriteTextFile(dir + "/f.txt", text);
  auto read = ReadTextFile(dir + "/f.txt");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, text);
  testing::WriteTextFile(dir + "/empty.txt", "");
  read = ReadTextFile(dir + "/empty.txt");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, "");
  EXPECT_EQ(ReadTextFile(dir + "/absent.txt").status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace flute
