// Writes small random LLaMA checkpoints (config.json + safetensors, single or sharded) for
// the loader tests. Header-only: the suite compiles only *_test.cc files.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/dtype.h"
#include "engine/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace flute::testing {

// Sizes of a tiny LLaMA; GQA (4 query heads share 2 KV heads), head_dim given explicitly
// and different from hidden / heads so a loader that derives it gets the shapes wrong.
struct TinyLlamaSpec {
  int vocab_size = 37;
  int hidden_size = 16;
  int intermediate_size = 24;
  int num_layers = 2;
  int num_heads = 4;
  int num_kv_heads = 2;
  int head_dim = 6;
  bool tie_word_embeddings = false;
};

// A tensor held as floats that are exactly representable in `dtype`.
struct FloatTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
  DType dtype = DType::kF32;
};

inline nlohmann::json TinyLlamaConfigJson(const TinyLlamaSpec& spec) {
  return {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", spec.vocab_size},
      {"hidden_size", spec.hidden_size},
      {"intermediate_size", spec.intermediate_size},
      {"num_hidden_layers", spec.num_layers},
      {"num_attention_heads", spec.num_heads},
      {"num_key_value_heads", spec.num_kv_heads},
      {"head_dim", spec.head_dim},
      {"max_position_embeddings", 128},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 500000.0},
      {"rope_scaling",
       {{"rope_type", "llama3"},
        {"factor", 8.0},
        {"low_freq_factor", 1.0},
        {"high_freq_factor", 4.0},
        {"original_max_position_embeddings", 32}}},
      {"tie_word_embeddings", spec.tie_word_embeddings},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"mlp_bias", false},
  };
}

// Rounds `value` to the nearest number representable in `dtype`.
inline float RoundTo(DType dtype, float value) {
  if (dtype == DType::kBF16) return Bf16ToFloat(FloatToBf16(value));
  if (dtype == DType::kF16) return HalfToFloat(FloatToHalf(value));
  return value;
}

inline FloatTensor RandomTensor(const std::string& name, std::vector<int64_t> shape, DType dtype,
                                std::mt19937& rng) {
  FloatTensor tensor{name, std::move(shape), {}, dtype};
  int64_t count = 1;
  for (int64_t dim : tensor.shape) count *= dim;
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (int64_t i = 0; i < count; ++i) tensor.values.push_back(RoundTo(dtype, normal(rng)));
  return tensor;
}

// Every tensor of the spec'd model, in the HF names; lm_head.weight only when untied.
inline std::vector<FloatTensor> TinyLlamaTensors(const TinyLlamaSpec& spec, DType dtype,
                                                 uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t hidden = spec.hidden_size, q_dim = spec.num_heads * spec.head_dim,
                kv_dim = spec.num_kv_heads * spec.head_dim, inter = spec.intermediate_size;
  std::vector<FloatTensor> tensors;
  tensors.push_back(
      RandomTensor("model.embed_tokens.weight", {spec.vocab_size, hidden}, dtype, rng));
  for (int layer = 0; layer < spec.num_layers; ++layer) {
    const std::string p = absl::StrCat("model.layers.", layer, ".");
    tensors.push_back(RandomTensor(p + "self_attn.q_proj.weight", {q_dim, hidden}, dtype, rng));
    tensors.push_back(RandomTensor(p + "self_attn.k_proj.weight", {kv_dim, hidden}, dtype, rng));
    tensors.push_back(RandomTensor(p + "self_attn.v_proj.weight", {kv_dim, hidden}, dtype, rng));
    tensors.push_back(RandomTensor(p + "self_attn.o_proj.weight", {hidden, q_dim}, dtype, rng));
    tensors.push_back(RandomTensor(p + "mlp.gate_proj.weight", {inter, hidden}, dtype, rng));
    tensors.push_back(RandomTensor(p + "mlp.up_proj.weight", {inter, hidden}, dtype, rng));
    tensors.push_back(RandomTensor(p + "mlp.down_proj.weight", {hidden, inter}, dtype, rng));
    tensors.push_back(RandomTensor(p + "input_layernorm.weight", {hidden}, dtype, rng));
    tensors.push_back(RandomTensor(p + "post_attention_layernorm.weight", {hidden}, dtype, rng));
  }
  tensors.push_back(RandomTensor("model.norm.weight", {hidden}, dtype, rng));
  if (!spec.tie_word_embeddings) {
    tensors.push_back(RandomTensor("lm_head.weight", {spec.vocab_size, hidden}, dtype, rng));
  }
  return tensors;
}

// The bytes of `tensor` in its dtype (F32, F16 or BF16).
inline std::vector<uint8_t> EncodeTensor(const FloatTensor& tensor) {
  std::vector<uint8_t> bytes(tensor.values.size() * DTypeSize(tensor.dtype));
  for (size_t i = 0; i < tensor.values.size(); ++i) {
    const float value = tensor.values[i];
    if (tensor.dtype == DType::kF32) {
      std::memcpy(&bytes[i * 4], &value, 4);
    } else {
      const uint16_t bits = tensor.dtype == DType::kBF16 ? FloatToBf16(value) : FloatToHalf(value);
      std::memcpy(&bytes[i * 2], &bits, 2);
    }
  }
  return bytes;
}

// Writes `tensors` to one safetensors file.
inline void WriteFloatTensors(const std::string& path, const std::vector<FloatTensor>& tensors) {
  std::vector<std::vector<uint8_t>> encoded;
  std::vector<TensorToWrite> to_write;
  for (const FloatTensor& tensor : tensors) encoded.push_back(EncodeTensor(tensor));
  for (size_t i = 0; i < tensors.size(); ++i) {
    to_write.push_back({tensors[i].name, tensors[i].dtype, tensors[i].shape, encoded[i].data(),
                        encoded[i].size()});
  }
  const absl::Status status = WriteSafetensors(path, to_write);
  ASSERT_TRUE(status.ok()) << status;
}

inline void WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// Writes config.json and the tensors into `dir`: model.safetensors when num_shards == 1,
// else model-0000i-of-0000n.safetensors (tensors dealt round-robin) plus the index.
inline void WriteCheckpoint(const std::string& dir, const nlohmann::json& config,
                            const std::vector<FloatTensor>& tensors, int num_shards = 1) {
  namespace fs = std::filesystem;
  WriteTextFile((fs::path(dir) / "config.json").string(), config.dump(2));
  if (num_shards == 1) {
    WriteFloatTensors((fs::path(dir) / "model.safetensors").string(), tensors);
    return;
  }
  std::vector<std::vector<FloatTensor>> shards(num_shards);
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int shard = static_cast<int>(i % num_shards);
    shards[shard].push_back(tensors[i]);
    weight_map[tensors[i].name] =
        absl::StrCat("model-0000", shard + 1, "-of-0000", num_shards, ".safetensors");
  }
  for (int shard = 0; shard < num_shards; ++shard) {
    const std::string name =
        absl::StrCat("model-0000", shard + 1, "-of-0000", num_shards, ".safetensors");
    WriteFloatTensors((fs::path(dir) / name).string(), shards[shard]);
  }
  const nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  WriteTextFile((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2));
}

}  // namespace flute::testing
