// Writes a random bf16 LLaMA checkpoint of any shape, streamed (memory stays small however big
// the checkpoint): config.json + model.safetensors. Default: LLaMA-3-8B shapes with 2 layers,
// for measuring the peak memory of `flute quantize` (its output is meaningless as a model).
//
// usage: make_synthetic_llama OUT_DIR [num_layers=2] [hidden=4096] [intermediate=14336]
//                             [vocab=128256] [heads=32] [kv_heads=8]
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "nlohmann/json.hpp"

namespace {

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  float stddev;
};

uint64_t Count(const Tensor& t) {
  uint64_t count = 1;
  for (int64_t d : t.shape) count *= static_cast<uint64_t>(d);
  return count;
}

// Approximately normal values (sum of 4 uniforms) from a xorshift generator: fast enough for GBs.
class Noise {
 public:
  float Next() {
    float sum = 0;
    for (int i = 0; i < 4; ++i) {
      state_ ^= state_ << 13;
      state_ ^= state_ >> 7;
      state_ ^= state_ << 17;
      sum += static_cast<float>(state_ >> 40) / static_cast<float>(1 << 24) - 0.5f;
    }
    return sum * 1.7320508f;  // unit variance
  }

 private:
  uint64_t state_ = 0x9E3779B97F4A7C15ull;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " OUT_DIR [layers=2] [hidden=4096] [intermediate=14336] [vocab=128256]"
              << " [heads=32] [kv_heads=8]\n";
    return 2;
  }
  auto arg = [&](int i, int64_t fallback) { return argc > i ? std::atoll(argv[i]) : fallback; };
  const std::string dir = argv[1];
  const int64_t layers = arg(2, 2), hidden = arg(3, 4096), inter = arg(4, 14336), vocab = arg(5, 128256),
                heads = arg(6, 32), kv_heads = arg(7, 8);
  const int64_t head_dim = hidden / heads, kv_dim = kv_heads * head_dim;
  std::filesystem::create_directories(dir);

  std::vector<Tensor> tensors = {{"model.embed_tokens.weight", {vocab, hidden}, 0.02f},
                                 {"model.norm.weight", {hidden}, 0.0f},
                                 {"lm_head.weight", {vocab, hidden}, 0.02f}};
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    tensors.push_back({p + "input_layernorm.weight", {hidden}, 0.0f});
    tensors.push_back({p + "post_attention_layernorm.weight", {hidden}, 0.0f});
    tensors.push_back({p + "self_attn.q_proj.weight", {hidden, hidden}, 0.02f});
    tensors.push_back({p + "self_attn.k_proj.weight", {kv_dim, hidden}, 0.02f});
    tensors.push_back({p + "self_attn.v_proj.weight", {kv_dim, hidden}, 0.02f});
    tensors.push_back({p + "self_attn.o_proj.weight", {hidden, hidden}, 0.02f});
    tensors.push_back({p + "mlp.gate_proj.weight", {inter, hidden}, 0.02f});
    tensors.push_back({p + "mlp.up_proj.weight", {inter, hidden}, 0.02f});
    tensors.push_back({p + "mlp.down_proj.weight", {hidden, inter}, 0.02f});
  }
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const Tensor& t : tensors) {
    const uint64_t bytes = Count(t) * 2;
    header[t.name] = {{"dtype", "BF16"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(dir + "/model.safetensors", std::ios::binary | std::ios::trunc);
  const uint64_t length = text.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(length >> (8 * i)));
  out << text;
  Noise noise;
  std::vector<uint16_t> buffer(1 << 20);
  for (const Tensor& t : tensors) {
    for (uint64_t done = 0, count = Count(t); done < count;) {
      const uint64_t n = std::min<uint64_t>(buffer.size(), count - done);
      for (uint64_t i = 0; i < n; ++i) {
        buffer[i] = flute::FloatToBf16(t.stddev == 0 ? 1.0f : t.stddev * noise.Next());
      }
      out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(n * 2));
      done += n;
    }
  }
  const nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                                 {"model_type", "llama"},
                                 {"vocab_size", vocab},
                                 {"hidden_size", hidden},
                                 {"intermediate_size", inter},
                                 {"num_hidden_layers", layers},
                                 {"num_attention_heads", heads},
                                 {"num_key_value_heads", kv_heads},
                                 {"max_position_embeddings", 131072},
                                 {"rms_norm_eps", 1e-5},
                                 {"rope_theta", 500000.0},
                                 {"tie_word_embeddings", false},
                                 {"bos_token_id", 128000},
                                 {"eos_token_id", 128001},
                                 {"hidden_act", "silu"},
                                 {"torch_dtype", "bfloat16"}};
  std::ofstream(dir + "/config.json") << config.dump(2) << "\n";
  if (!out) {
    std::cerr << "error: cannot write " << dir << "/model.safetensors\n";
    return 1;
  }
  std::cerr << "wrote " << dir << " (" << layers << " layers, " << (offset >> 20) << " MiB of weights)\n";
  return 0;
}
