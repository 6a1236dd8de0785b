// Loading whole checkpoints: every dtype, single and sharded, tied and untied, read back
// value for value; and each kind of bad checkpoint rejected with the tensor named.
#include "engine/model_weights.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "engine/lut_linear.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/lut_format.h"
#include "tests/engine/checkpoint_builder.h"
#include "tests/lut_layout_v1.h"
#include "tests/test_util.h"

namespace flute {
namespace {

namespace fs = std::filesystem;
using testing::FloatTensor;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::TinyLlamaSpec;

std::vector<float> AllRows(const Linear& linear) {
  std::vector<float> values(static_cast<size_t>(linear.out_features()) * linear.in_features());
  linear.DequantizeRows(0, linear.out_features(), values.data());
  return values;
}

const FloatTensor& Find(const std::vector<FloatTensor>& tensors, const std::string& name) {
  for (const auto& tensor : tensors) {
    if (tensor.name == name) return tensor;
  }
  ADD_FAILURE() << "test checkpoint has no " << name;
  static const FloatTensor empty;
  return empty;
}

void ExpectLinearHolds(const Linear& linear, const FloatTensor& tensor) {
  ASSERT_EQ(tensor.shape.size(), 2u) << tensor.name;
  EXPECT_EQ(linear.out_features(), tensor.shape[0]) << tensor.name;
  EXPECT_EQ(linear.in_features(), tensor.shape[1]) << tensor.name;
  EXPECT_EQ(AllRows(linear), tensor.values) << tensor.name;
}

// Checks every weight of `weights` against the tensors the checkpoint was written from.
void ExpectWeightsMatch(const ModelWeights& weights, const std::vector<FloatTensor>& tensors,
                        const TinyLlamaSpec& spec) {
  const FloatTensor& embed = Find(tensors, "model.embed_tokens.weight");
  ASSERT_NE(weights.embed_tokens, nullptr);
  EXPECT_EQ(weights.embed_tokens->shape, embed.shape);
  std::vector<float> embed_values(embed.values.size());
  ConvertToFloat(weights.embed_tokens->dtype, weights.embed_tokens->data, embed_values.size(),
                 embed_values.data());
  EXPECT_EQ(embed_values, embed.values);

  ASSERT_EQ(weights.layers.size(), static_cast<size_t>(spec.num_layers));
  for (int i = 0; i < spec.num_layers; ++i) {
    const LayerWeights& layer = weights.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    ExpectLinearHolds(*layer.q_proj, Find(tensors, p + "self_attn.q_proj.weight"));
    ExpectLinearHolds(*layer.k_proj, Find(tensors, p + "self_attn.k_proj.weight"));
    ExpectLinearHolds(*layer.v_proj, Find(tensors, p + "self_attn.v_proj.weight"));
    ExpectLinearHolds(*layer.o_proj, Find(tensors, p + "self_attn.o_proj.weight"));
    ExpectLinearHolds(*layer.gate_proj, Find(tensors, p + "mlp.gate_proj.weight"));
    ExpectLinearHolds(*layer.up_proj, Find(tensors, p + "mlp.up_proj.weight"));
    ExpectLinearHolds(*layer.down_proj, Find(tensors, p + "mlp.down_proj.weight"));
    EXPECT_EQ(layer.input_norm, Find(tensors, p + "input_layernorm.weight").values);
    EXPECT_EQ(layer.post_attention_norm,
              Find(tensors, p + "post_attention_layernorm.weight").values);
  }
  EXPECT_EQ(weights.final_norm, Find(tensors, "model.norm.weight").values);
  ASSERT_NE(weights.lm_head, nullptr);
  ExpectLinearHolds(
      *weights.lm_head,
      Find(tensors, spec.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
}

class ModelWeightsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir("flute-weights"); }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes `tensors` with the spec's config and loads them.
  absl::StatusOr<std::unique_ptr<ModelWeights>> WriteAndLoad(
      const TinyLlamaSpec& spec, const std::vector<FloatTensor>& tensors, int num_shards = 1) {
    testing::WriteCheckpoint(dir_, testing::TinyLlamaConfigJson(spec), tensors, num_shards);
    auto config = LoadModelConfig(dir_);
    if (!config.ok()) return config.status();
    return LoadModelWeights(dir_, *config);
  }
  std::string LoadError(const TinyLlamaSpec& spec, const std::vector<FloatTensor>& tensors,
                        int num_shards = 1) {
    auto weights = WriteAndLoad(spec, tensors, num_shards);
    EXPECT_FALSE(weights.ok()) << "checkpoint loaded but should not have";
    return weights.ok() ? "" : std::string(weights.status().message());
  }

  std::string dir_;
};

// (dtype, number of shards, tied embeddings)
class ModelWeightsRoundTripTest
    : public ModelWeightsTest,
      public ::testing::WithParamInterface<std::tuple<DType, int, bool>> {};

TEST_P(ModelWeightsRoundTripTest, LoadsEveryTensorExactly) {
  const auto [dtype, num_shards, tied] = GetParam();
  TinyLlamaSpec spec;
  spec.tie_word_embeddings = tied;
  const std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(spec, dtype, 42);
  auto weights = WriteAndLoad(spec, tensors, num_shards);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ExpectWeightsMatch(**weights, tensors, spec);
  EXPECT_EQ((*weights)->layers[0].q_proj->Describe().empty(), false);
}

std::string RoundTripName(const ::testing::TestParamInfo<std::tuple<DType, int, bool>>& info) {
  return absl::StrCat(std::string(DTypeName(std::get<0>(info.param))), "_", std::get<1>(info.param),
                      "shards_", std::get<2>(info.param) ? "tied" : "untied");
}

INSTANTIATE_TEST_SUITE_P(DTypesShardsTying, ModelWeightsRoundTripTest,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kF16,
                                                              DType::kBF16),
                                            ::testing::Values(1, 3), ::testing::Bool()),
                         RoundTripName);

TEST_F(ModelWeightsTest, MixedDTypesAndIgnoredTensorsLoad) {
  TinyLlamaSpec spec;
  spec.tie_word_embeddings = true;
  std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(spec, DType::kBF16, 3);
  std::mt19937 rng(5);
  // Norms in fp32 next to bf16 matrices; an old-style rotary buffer; a redundant tied head.
  tensors[8] = testing::RandomTensor(tensors[8].name, tensors[8].shape, DType::kF32, rng);
  tensors.push_back(
      testing::RandomTensor("model.layers.1.self_attn.rotary_emb.inv_freq", {3}, DType::kF32, rng));
  tensors.push_back(testing::RandomTensor("lm_head.weight", {spec.vocab_size, spec.hidden_size},
                                          DType::kF16, rng));
  auto weights = WriteAndLoad(spec, tensors);
  ASSERT_TRUE(weights.ok()) << weights.status();
  tensors.pop_back();
  ExpectWeightsMatch(**weights, tensors, spec);  // the head is the embedding, not the extra copy
}

TEST_F(ModelWeightsTest, MissingTensorIsNamed) {
  TinyLlamaSpec spec;
  std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(spec, DType::kBF16, 1);
  tensors.erase(tensors.begin() + 5);  // model.layers.0.mlp.gate_proj.weight
  const std::string message = LoadError(spec, tensors, 2);
  EXPECT_THAT(message, HasSubstr("missing tensor \"model.layers.0.mlp.gate_proj.weight\""));
  EXPECT_THAT(message, HasSubstr("[24, 16]"));
  EXPECT_THAT(message, HasSubstr(dir_));
}

TEST_F(ModelWeightsTest, UntiedCheckpointWithoutLmHeadIsRejected) {
  TinyLlamaSpec spec;
  std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(spec, DType::kF16, 1);
  ASSERT_EQ(tensors.back().name, "lm_head.weight");
  tensors.pop_back();
  EXPECT_THAT(LoadError(spec, tensors), HasSubstr("missing tensor \"lm_head.weight\""));
}

TEST_F(ModelWeightsTest, ExtraTensorsAreCountedAndNamed) {
  TinyLlamaSpec spec;
  std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(spec, DType::kBF16, 1);
  std::mt19937 rng(2);
  for (int i = 0; i < 7; ++i) {
    tensors.push_back(
        testing::RandomTensor(absl::StrCat("model.extra.", i, ".bias"), {4}, DType::kBF16, rng));
  }
  const std::string message = LoadError(spec, tensors, 3);
  EXPECT_THAT(message, HasSubstr("7 unexpected tensors"));
  EXPECT_THAT(message, HasSubstr("\"model.extra.0.bias\""));
  EXPECT_THAT(message, Not(HasSubstr("\"model.extra.6.bias\"")));  // only the first few
}

TEST_F(ModelWeightsTest, ExtraLayerFromADeeperModelIsReported) {
  TinyLlamaSpec deeper;
  deeper.num_layers = 3;
  const std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(deeper, DType::kF32, 1);
  TinyLlamaSpec spec;  // config says 2 layers
  testing::WriteCheckpoint(dir_, testing::TinyLlamaConfigJson(spec), tensors);
  auto config = LoadModelConfig(dir_);
  ASSERT_TRUE(config.ok()) << config.status();
  auto weights = LoadModelWeights(dir_, *config);
  ASSERT_FALSE(weights.ok());
  EXPECT_THAT(std::string(weights.status().message()), HasSubstr("9 unexpected tensors"));
  EXPECT_THAT(std::string(weights.status().message()), HasSubstr("model.layers.2."));
}

TEST_F(ModelWeightsTest, MisshapenTensorNamesExpectedAndFoundShapes) {
  TinyLlamaSpec spec;
  std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(spec, DType::kBF16, 1);
  // k_proj written as if head_dim were hidden / heads = 4: [8, 16] instead of [12, 16].
  std::mt19937 rng(9);
  tensors[2] =
      testing::RandomTensor("model.layers.0.self_attn.k_proj.weight", {8, 16}, DType::kBF16, rng);
  const std::string message = LoadError(spec, tensors);
  EXPECT_THAT(message, HasSubstr("\"model.layers.0.self_attn.k_proj.weight\""));
  EXPECT_THAT(message, HasSubstr("expected [12, 16], found [8, 16]"));
}

TEST_F(ModelWeightsTest, TransposedMatrixIsMisshapen) {
  TinyLlamaSpec spec;
  std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(spec, DType::kF32, 1);
  FloatTensor& down = tensors[7];
  ASSERT_EQ(down.name, "model.layers.0.mlp.down_proj.weight");
  std::swap(down.shape[0], down.shape[1]);
  EXPECT_THAT(LoadError(spec, tensors), HasSubstr("expected [16, 24], found [24, 16]"));
}

TEST_F(ModelWeightsTest, NonFloatWeightIsRejectedNamingTensorAndDType) {
  TinyLlamaSpec spec;
  testing::WriteTextFile(dir_ + "/config.json", testing::TinyLlamaConfigJson(spec).dump());
  std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(spec, DType::kF32, 1);
  // Same bytes, relabelled I32.
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<TensorToWrite> to_write;
  for (const auto& t : tensors) bytes.push_back(testing::EncodeTensor(t));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const DType dtype = tensors[i].name == "model.norm.weight" ? DType::kI32 : DType::kF32;
    to_write.push_back(
        {tensors[i].name, dtype, tensors[i].shape, bytes[i].data(), bytes[i].size()});
  }
  ASSERT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", to_write).ok());
  auto config = LoadModelConfig(dir_);
  ASSERT_TRUE(config.ok()) << config.status();
  auto weights = LoadModelWeights(dir_, *config);
  ASSERT_FALSE(weights.ok());
  const std::string message(weights.status().message());
  EXPECT_THAT(message, HasSubstr("\"model.norm.weight\""));
  EXPECT_THAT(message, HasSubstr("unsupported dtype I32"));
}

TEST_F(ModelWeightsTest, TruncatedShardIsRejected) {
  TinyLlamaSpec spec;
  const std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(spec, DType::kBF16, 1);
  testing::WriteCheckpoint(dir_, testing::TinyLlamaConfigJson(spec), tensors, 2);
  const std::string shard = dir_ + "/model-00002-of-00002.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 1);
  auto config = LoadModelConfig(dir_);
  ASSERT_TRUE(config.ok()) << config.status();
  auto weights = LoadModelWeights(dir_, *config);
  ASSERT_FALSE(weights.ok());
  EXPECT_THAT(std::string(weights.status().message()),
              HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_THAT(std::string(weights.status().message()), HasSubstr("truncated"));
}

TEST_F(ModelWeightsTest, ClaimReturnsTheSameViewTwiceAndChecksDType) {
  TinyLlamaSpec spec;
  const std::vector<FloatTensor> tensors = testing::TinyLlamaTensors(spec, DType::kF16, 1);
  testing::WriteCheckpoint(dir_, testing::TinyLlamaConfigJson(spec), tensors);
  auto store = TensorStore::OpenDirectory(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  TensorClaims claims(**store);
  auto first = claims.Claim("model.norm.weight", DType::kF16, {16});
  auto second = claims.Claim("model.norm.weight", DType::kF16, {16});
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(*first, *second);
  auto wrong = claims.Claim("model.embed_tokens.weight", DType::kBF16, {37, 16});
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("has dtype F16; expected BF16"));
  EXPECT_TRUE(claims.Has("lm_head.weight"));
  EXPECT_FALSE(claims.Has("model.layers.9.mlp.up_proj.weight"));
  const absl::Status left = claims.CheckNoneLeft();
  EXPECT_FALSE(left.ok());
  EXPECT_THAT(std::string(left.message()),
              HasSubstr(absl::StrCat(tensors.size() - 1, " unexpected tensors")));
}

// A LUT-quantized module: random codes (packed with the format's PackCodes), fp16 scales
// and a table; its reference value is table[code] * scale, computed here independently.
struct QuantizedModule {
  std::string prefix;
  lut::LutShape shape;
  std::vector<uint8_t> packed;
  std::vector<uint16_t> scales;  // fp16 [n, k / G]
  std::vector<float> expected;   // [n, k]
};

// quant.format_version picks the packed layout (1: tests/lut_layout_v1.h, 2: lut::PackCodes).
QuantizedModule MakeQuantizedModule(const std::string& prefix, int n, int k,
                                    const QuantizationConfig& quant,
                                    const std::vector<float>& table, std::mt19937& rng) {
  QuantizedModule module{prefix, lut::LutShape{n, k, quant.bits, quant.group_size}, {}, {}, {}};
  std::vector<uint8_t> codes(static_cast<size_t>(n) * k);
  std::uniform_int_distribution<int> code(0, (1 << quant.bits) - 1);
  for (auto& c : codes) c = static_cast<uint8_t>(code(rng));
  std::uniform_real_distribution<float> scale(0.5f, 2.0f);
  for (int i = 0; i < n * (k / quant.group_size); ++i)
    module.scales.push_back(FloatToHalf(scale(rng)));
  module.packed.resize(lut::PackedCodeBytes(module.shape));
  if (quant.format_version == 1) {
    testing::PackCodesLayoutVersion1(module.shape, codes.data(), module.packed.data());
  } else {
    lut::PackCodes(module.shape, codes.data(), module.packed.data());
  }
  for (int row = 0; row < n; ++row) {
    for (int col = 0; col < k; ++col) {
      const float s =
          HalfToFloat(module.scales[row * (k / quant.group_size) + col / quant.group_size]);
      module.expected.push_back(table[codes[static_cast<size_t>(row) * k + col]] * s);
    }
  }
  return module;
}

TEST_F(ModelWeightsTest, QuantizedModulesLoadThroughLutLinear) {
  TinyLlamaSpec spec;  // sizes the LUT format accepts: n % 16 == 0, k % 128 == 0
  spec.vocab_size = 48;
  spec.hidden_size = 128;
  spec.intermediate_size = 256;
  spec.num_layers = 1;
  spec.num_heads = 2;
  spec.num_kv_heads = 1;
  spec.head_dim = 64;
  // Format version 1 checkpoints hold the old 3-bit layout, which the loader converts.
  for (const auto& [table_per_layer, bits, format_version] :
       std::vector<std::tuple<bool, int, int>>{{false, 3, 2}, {true, 4, 2}, {false, 3, 1}, {true, 4, 1}}) {
    SCOPED_TRACE(absl::StrCat(table_per_layer ? "table per layer" : "one table", ", ", bits,
                              " bits, format version ", format_version));
    QuantizationConfig quant;
    quant.method = "nf";
    quant.bits = bits;
    quant.format_version = format_version;
    quant.group_size = 64;
    quant.table_per_layer = table_per_layer;
    quant.modules = {"q_proj", "down_proj", "lm_head"};
    std::mt19937 rng(11);
    std::vector<float> table;
    for (int i = 0; i < (1 << quant.bits); ++i) table.push_back(-1.0f + 0.25f * i);

    std::vector<FloatTensor> dense = testing::TinyLlamaTensors(spec, DType::kBF16, 4);
    std::vector<QuantizedModule> modules = {
        MakeQuantizedModule("model.layers.0.self_attn.q_proj", 128, 128, quant, table, rng),
        MakeQuantizedModule("model.layers.0.mlp.down_proj", 128, 256, quant, table, rng),
        MakeQuantizedModule("lm_head", 48, 128, quant, table, rng)};
    std::vector<std::vector<uint8_t>> bytes;
    std::vector<TensorToWrite> to_write;
    bytes.reserve(dense.size());  // to_write points into these buffers
    for (const auto& t : dense) {
      bool replaced = false;
      for (const auto& m : modules) replaced |= t.name == m.prefix + ".weight";
      if (replaced) continue;
      bytes.push_back(testing::EncodeTensor(t));
      to_write.push_back({t.name, t.dtype, t.shape, bytes.back().data(), bytes.back().size()});
    }
    for (const auto& m : modules) {
      to_write.push_back({m.prefix + ".qweight",
                          DType::kU8,
                          {static_cast<int64_t>(m.packed.size())},
                          m.packed.data(),
                          m.packed.size()});
      to_write.push_back({m.prefix + ".scales",
                          DType::kF16,
                          {m.shape.n, m.shape.k / quant.group_size},
                          m.scales.data(),
                          m.scales.size() * 2});
      if (table_per_layer) {
        to_write.push_back(
            {m.prefix + ".table", DType::kF32, {1 << quant.bits}, table.data(), table.size() * 4});
      }
    }
    if (!table_per_layer) {
      to_write.push_back(
          {kModelTableName, DType::kF32, {1 << quant.bits}, table.data(), table.size() * 4});
    }
    nlohmann::json config_json = testing::TinyLlamaConfigJson(spec);
    config_json["quantization_config"] = {{"method", quant.method},
                                          {"bits", quant.bits},
                                          {"group_size", quant.group_size},
                                          {"format_version", format_version},
                                          {"table_per_layer", table_per_layer},
                                          {"modules", quant.modules}};
    testing::WriteTextFile(dir_ + "/config.json", config_json.dump());
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", to_write).ok());

    auto config = LoadModelConfig(dir_);
    ASSERT_TRUE(config.ok()) << config.status();
    auto weights = LoadModelWeights(dir_, *config);
    ASSERT_TRUE(weights.ok()) << weights.status();
    const LayerWeights& layer = (*weights)->layers[0];
    EXPECT_THAT(layer.q_proj->Describe(), HasSubstr("lut"));
    EXPECT_THAT(layer.k_proj->Describe(), HasSubstr("dense"));
    EXPECT_EQ(AllRows(*layer.q_proj), modules[0].expected);
    EXPECT_EQ(AllRows(*layer.down_proj), modules[1].expected);
    EXPECT_EQ(AllRows(*(*weights)->lm_head), modules[2].expected);
    ExpectLinearHolds(*layer.up_proj, Find(dense, "model.layers.0.mlp.up_proj.weight"));

    // The dense weight of a quantized module is then an extra tensor.
    to_write.push_back(
        {"model.layers.0.self_attn.q_proj.weight", DType::kF32, {1}, table.data(), 4});
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", to_write).ok());
    weights = LoadModelWeights(dir_, *config);
    ASSERT_FALSE(weights.ok());
    EXPECT_THAT(std::string(weights.status().message()),
                HasSubstr("\"model.layers.0.self_attn.q_proj.weight\""));
  }
}

TEST_F(ModelWeightsTest, LoadsTheSharedModel) {
  FLUTE_REQUIRE_SHARED();
  const std::string dir = testing::SharedDir() + "/models/manpage-llama-22m";
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  auto weights = LoadModelWeights(dir, *config);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_EQ((*weights)->layers.size(), 6u);
  EXPECT_EQ((*weights)->embed_tokens->shape, (std::vector<int64_t>{4096, 512}));
  EXPECT_EQ((*weights)->lm_head->out_features(), 4096);
  EXPECT_EQ((*weights)->layers[5].k_proj->out_features(), 128);
  EXPECT_EQ((*weights)->layers[5].down_proj->in_features(), 1536);
  // A trained model's norms and matrices hold finite, non-zero values.
  for (float v : (*weights)->final_norm) ASSERT_TRUE(std::isfinite(v));
  const std::vector<float> head = AllRows(*(*weights)->lm_head);
  double sum_squares = 0;
  for (float v : head) sum_squares += static_cast<double>(v) * v;
  EXPECT_TRUE(std::isfinite(sum_squares));
  EXPECT_GT(sum_squares, 0.0);
}

}  // namespace
}  // namespace flute
