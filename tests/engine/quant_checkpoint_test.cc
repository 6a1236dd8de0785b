// `flute quantize` end to end on a small random checkpoint: what it writes equals the RTN
// definition, the engine loads it, tokenizer files travel, and every user mistake fails clearly.
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "engine/quant_calibration.h"
#include "engine/quant_tables.h"
#include "engine/quantized_checkpoint.h"
#include "engine/quantizer.h"
#include "engine/safetensors.h"
#include "gtest/gtest.h"
#include "tests/engine/checkpoint_builder.h"
#include "tests/test_util.h"

namespace flute {
namespace {
namespace fs = std::filesystem;
using testing::FloatTensor;

// Smallest LLaMA whose projections the packed format accepts (rows % 16, K % 128).
testing::TinyLlamaSpec QuantizableSpec() {
  testing::TinyLlamaSpec spec;
  spec.vocab_size = 64;
  spec.hidden_size = 128;
  spec.intermediate_size = 256;
  spec.num_layers = 2;
  spec.num_heads = 2;
  spec.num_kv_heads = 1;
  spec.head_dim = 64;
  return spec;
}

class QuantizeCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir("quant_checkpoint");
    input_ = root_ + "/in";
    fs::create_directories(input_);
    tensors_ = testing::TinyLlamaTensors(QuantizableSpec(), DType::kBF16, 42);
    testing::WriteCheckpoint(input_, testing::TinyLlamaConfigJson(QuantizableSpec()), tensors_, 2);
    testing::WriteTextFile(input_ + "/tokenizer_config.json", "{\"add_bos_token\": true}");
    testing::WriteTextFile(input_ + "/generation_config.json", "{\"temperature\": 0.6}");
  }
  void TearDown() override { fs::remove_all(root_); }

  QuantizeOptions Options(const std::string& out_name) const {
    QuantizeOptions o;
    o.input_dir = input_;
    o.output_dir = root_ + "/" + out_name;
    o.bits = 4;
    o.group_size = 64;
    o.method = "nf";
    return o;
  }
  const FloatTensor& Tensor(const std::string& name) const {
    for (const FloatTensor& t : tensors_) {
      if (t.name == name) return t;
    }
    ADD_FAILURE() << "no tensor " << name;
    return tensors_[0];
  }

  std::string root_, input_;
  std::vector<FloatTensor> tensors_;
};

TEST_F(QuantizeCheckpointTest, WritesRtnCodesThatTheEngineLoads) {
  for (int bits : {2, 3, 4}) {
    QuantizeOptions o = Options("out" + std::to_string(bits));
    o.bits = bits;
    o.method = bits == 3 ? "uniform" : "nf";
    const absl::Status status = QuantizeCheckpoint(o);
    ASSERT_TRUE(status.ok()) << status;
    const std::vector<float> table = bits == 3 ? UniformTable(3) : NormalFloatTable(bits);

    auto config = LoadModelConfig(o.output_dir);
    ASSERT_TRUE(config.ok()) << config.status();
    ASSERT_TRUE(config->quantization.has_value());
    EXPECT_EQ(config->quantization->bits, bits);
    EXPECT_EQ(config->quantization->group_size, 64);
    EXPECT_EQ(config->quantization->format_version, lut::kLayoutVersion);
    EXPECT_EQ(config->quantization->modules.size(), 7u);
    EXPECT_FALSE(config->quantization->IsQuantized("lm_head"));
    auto weights = LoadModelWeights(o.output_dir, *config);
    ASSERT_TRUE(weights.ok()) << weights.status();

    for (int layer = 0; layer < 2; ++layer) {
      for (const char* kind : kProjectionKinds) {
        const std::string prefix = ProjectionPrefix(layer, kind);
        const FloatTensor& source = Tensor(prefix + ".weight");
        const lut::LutShape shape{source.shape[0], source.shape[1], bits, 64};
        const QuantizedMatrix expected = QuantizeRtn(source.values.data(), shape, table);
        auto read = ReadQuantizedModule(o.output_dir, prefix);
        ASSERT_TRUE(read.ok()) << read.status();
        EXPECT_EQ(read->codes, expected.codes) << prefix;  // unpacked back to codes
        EXPECT_EQ(read->scales, expected.scales) << prefix;
        EXPECT_EQ(read->table, table);
      }
      // The engine's view of the quantized layer dequantizes to the definition.
      const Linear& down = *(*weights)->layers[layer].down_proj;
      const FloatTensor& source = Tensor(ProjectionPrefix(layer, "down_proj") + ".weight");
      const QuantizedMatrix expected =
          QuantizeRtn(source.values.data(), {source.shape[0], source.shape[1], bits, 64}, table);
      std::vector<float> rows(static_cast<size_t>(down.out_features()) * down.in_features());
      down.DequantizeRows(0, down.out_features(), rows.data());
      EXPECT_EQ(rows, Dequantize(expected));
    }
  }
}

TEST_F(QuantizeCheckpointTest, CopiesUnquantizedTensorsAndTokenizerFiles) {
  const QuantizeOptions o = Options("out");
  ASSERT_TRUE(QuantizeCheckpoint(o).ok());
  auto store = TensorStore::OpenDirectory(o.output_dir);
  ASSERT_TRUE(store.ok()) << store.status();
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                           "model.layers.1.input_layernorm.weight"}) {
    const TensorView* view = (*store)->Find(name);
    ASSERT_NE(view, nullptr) << name;
    ASSERT_EQ(view->dtype, DType::kBF16);
    const FloatTensor& source = Tensor(name);
    std::vector<float> values(source.values.size());
    ConvertToFloat(view->dtype, view->data, values.size(), values.data());
    EXPECT_EQ(values, source.values) << name;
  }
  EXPECT_EQ((*store)->Find("model.layers.0.self_attn.q_proj.weight"), nullptr);
  EXPECT_TRUE(fs::exists(o.output_dir + "/tokenizer_config.json"));
  EXPECT_TRUE(fs::exists(o.output_dir + "/generation_config.json"));
}

TEST_F(QuantizeCheckpointTest, QuantizesTheLmHeadWhenAsked) {
  QuantizeOptions o = Options("out");
  o.quantize_lm_head = true;
  ASSERT_TRUE(QuantizeCheckpoint(o).ok());
  auto config = LoadModelConfig(o.output_dir);
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(config->quantization->IsQuantized("lm_head"));
  auto weights = LoadModelWeights(o.output_dir, *config);
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto head = ReadQuantizedModule(o.output_dir, "lm_head");
  ASSERT_TRUE(head.ok()) << head.status();
  const FloatTensor& source = Tensor("lm_head.weight");
  EXPECT_EQ(head->codes, QuantizeRtn(source.values.data(), head->shape, NormalFloatTable(4)).codes);
}

TEST_F(QuantizeCheckpointTest, NflLearnsScalesOnCalibrationTokens) {
  const std::string tokens_path = root_ + "/calib.u16";
  {
    std::mt19937 rng(9);
    std::ofstream out(tokens_path, std::ios::binary);
    for (int i = 0; i < 2 * 512; ++i) {
      const uint16_t id = static_cast<uint16_t>(rng() % 64);
      out.write(reinterpret_cast<const char*>(&id), 2);
    }
  }
  QuantizeOptions o = Options("nfl");
  o.method = "nfl";
  o.bits = 3;
  const absl::Status missing = QuantizeCheckpoint(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("--calib-tokens"), std::string::npos) << missing;
  o.calib_tokens = tokens_path;
  const absl::Status status = QuantizeCheckpoint(o);
  ASSERT_TRUE(status.ok()) << status;
  auto config = LoadModelConfig(o.output_dir);
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->quantization->method, "nfl");
  ASSERT_TRUE(LoadModelWeights(o.output_dir, *config).ok());
  // Learned scales differ from absmax ones somewhere.
  auto learned = ReadQuantizedModule(o.output_dir, ProjectionPrefix(0, "up_proj"));
  ASSERT_TRUE(learned.ok());
  const FloatTensor& source = Tensor(ProjectionPrefix(0, "up_proj") + ".weight");
  EXPECT_NE(learned->scales, QuantizeRtn(source.values.data(), learned->shape, NormalFloatTable(3)).scales);
}

TEST_F(QuantizeCheckpointTest, RejectsKNotDivisibleByGroupSize) {
  // hidden 128 (the K of q/k/v/gate/up) with G = 256: rejected before anything is written.
  QuantizeOptions o = Options("out");
  o.group_size = 256;
  const absl::Status status = QuantizeCheckpoint(o);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("K = 128 is not divisible by the group size G = 256"), std::string::npos)
      << status;
  EXPECT_FALSE(fs::exists(o.output_dir));
}

TEST_F(QuantizeCheckpointTest, RejectsAnUnsupportedDtype) {
  const std::string dir = root_ + "/int_in";
  fs::create_directories(dir);
  std::vector<FloatTensor> tensors = tensors_;
  testing::WriteCheckpoint(dir, testing::TinyLlamaConfigJson(QuantizableSpec()), {}, 1);
  // Rewrite with q_proj of layer 1 stored as I32.
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<TensorToWrite> to_write;
  for (const FloatTensor& t : tensors) bytes.push_back(testing::EncodeTensor(t));
  for (size_t i = 0; i < tensors.size(); ++i) {
    DType dtype = tensors[i].dtype;
    std::vector<int64_t> shape = tensors[i].shape;
    if (tensors[i].name == "model.layers.1.self_attn.q_proj.weight") {
      dtype = DType::kI32;
      shape[0] /= 2;  // same byte count as the bf16 [128, 128]
    }
    to_write.push_back({tensors[i].name, dtype, shape, bytes[i].data(), bytes[i].size()});
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", to_write).ok());
  QuantizeOptions o = Options("out");
  o.input_dir = dir;
  const absl::Status status = QuantizeCheckpoint(o);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("model.layers.1.self_attn.q_proj.weight"), std::string::npos) << status;
  EXPECT_NE(status.message().find("dtype I32"), std::string::npos) << status;
}

TEST_F(QuantizeCheckpointTest, RefusesAnExistingOutputWithoutForce) {
  QuantizeOptions o = Options("out");
  fs::create_directories(o.output_dir);
  testing::WriteTextFile(o.output_dir + "/old.txt", "old");
  const absl::Status status = QuantizeCheckpoint(o);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("already exists; pass --force"), std::string::npos) << status;
  EXPECT_TRUE(fs::exists(o.output_dir + "/old.txt"));
  o.force = true;
  ASSERT_TRUE(QuantizeCheckpoint(o).ok());
  EXPECT_FALSE(fs::exists(o.output_dir + "/old.txt"));
  EXPECT_TRUE(fs::exists(o.output_dir + "/config.json"));
  // --force never deletes the input.
  QuantizeOptions onto_input = Options("unused");
  onto_input.output_dir = root_;
  onto_input.force = true;
  EXPECT_FALSE(QuantizeCheckpoint(onto_input).ok());
  EXPECT_TRUE(fs::exists(input_ + "/config.json"));
}

TEST_F(QuantizeCheckpointTest, RejectsBadTableFilesAndMethods) {
  const std::string table_path = root_ + "/table.json";
  testing::WriteTextFile(table_path, "[-1, 0, 1]");
  QuantizeOptions o = Options("out");
  o.bits = 2;
  o.method = "table:" + table_path;
  absl::Status status = QuantizeCheckpoint(o);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("needs exactly 4 values"), std::string::npos) << status;
  o.method = "table:" + root_ + "/missing.json";
  EXPECT_FALSE(QuantizeCheckpoint(o).ok());
  o.method = "gptq";
  status = QuantizeCheckpoint(o);
  EXPECT_NE(status.message().find("nf, nfl, uniform or table:FILE"), std::string::npos) << status;
  EXPECT_FALSE(fs::exists(o.output_dir));
  // A good table file works, and its values are what the checkpoint holds.
  testing::WriteTextFile(table_path, "[-1, -0.25, 0.3, 1]");
  o.method = "table:" + table_path;
  ASSERT_TRUE(QuantizeCheckpoint(o).ok());
  auto q = ReadQuantizedModule(o.output_dir, ProjectionPrefix(1, "o_proj"));
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->table, (std::vector<float>{-1.0f, -0.25f, 0.3f, 1.0f}));
}

}  // namespace
}  // namespace flute
