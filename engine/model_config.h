// The architecture of a LLaMA-family checkpoint, parsed from its Hugging Face config.json.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace flute {

struct RopeConfig {
  enum class Type { kDefault, kLinear, kLlama3 };
  Type type = Type::kDefault;
  double theta = 10000.0;
  double factor = 1.0;                      // linear and llama3
  double low_freq_factor = 1.0;             // llama3
  double high_freq_factor = 4.0;            // llama3
  int original_max_position_embeddings = 8192;  // llama3
};

// `quantization_config` of a flute LUT-quantized checkpoint (written by `flute quantize`).
struct QuantizationConfig {
  std::string method;              // "nf", "nfl", "uniform" or "table"
  int bits = 4;                    // 2, 3 or 4
  int group_size = 128;            // 32, 64, 128 or 256
  int format_version = 1;
  bool table_per_layer = false;    // one table per quantized matrix, else one for the model
  std::vector<std::string> modules;  // quantized module kinds: "q_proj", ..., "lm_head"
  bool IsQuantized(const std::string& module_kind) const;
};

struct ModelConfig {
  std::string model_type;        // "llama"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;              // hidden_size / num_heads unless config.json gives it
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  int bos_token_id = -1;         // -1: none
  std::vector<int> eos_token_ids;
  std::string torch_dtype;       // as written ("bfloat16", ...), informational
  std::optional<QuantizationConfig> quantization;  // absent: a dense checkpoint

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
};

// Parses config.json text. `source` names the file in errors. Accepts the classic form
// (rope_theta + rope_scaling{rope_type|type: llama3|linear|default}) and the newer one
// (rope_parameters{rope_type, rope_theta, ...}). Rejects unsupported architectures
// (anything but LlamaForCausalLM / model_type llama), attention or MLP biases, and
// inconsistent sizes (hidden_size % num_heads when head_dim is absent, num_heads %
// num_kv_heads), each with the key, the value found and what is expected.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source);

// Reads and parses DIR/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

// Reads a whole small file (config.json, tokenizer files). NotFound names the path.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace flute
