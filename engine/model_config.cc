#include "engine/model_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/status_macros.h"
#include "kernels/lut_format.h"
#include "nlohmann/json.hpp"

namespace flute {
namespace {

using Json = nlohmann::json;

// Typed access to the keys of one JSON object; errors name the file and the key path
// ("rope_scaling.factor") with what was expected and what was found.
class JsonReader {
 public:
  JsonReader(const Json& object, std::string source, std::string prefix)
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  // Absent or null.
  bool IsMissing(const std::string& key) const {
    const auto it = object_.find(key);
    return it == object_.end() || it->is_null();
  }
  const Json& Get(const std::string& key) const { return object_.at(key); }
  std::string Path(const std::string& key) const { return prefix_ + key; }

  absl::Status Error(const std::string& key, const std::string& expected) const {
    const std::string found = IsMissing(key) ? "nothing" : Get(key).dump();
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": \"", Path(key), "\" must be ", expected, ", found ", found));
  }

  absl::StatusOr<int> Int(const std::string& key) const {
    if (IsMissing(key)) return Error(key, "an integer (required)");
    const Json& value = Get(key);
    if (!value.is_number_integer() || value.get<int64_t>() < std::numeric_limits<int>::min() ||
        value.get<int64_t>() > std::numeric_limits<int>::max()) {
      return Error(key, "an integer");
    }
    return static_cast<int>(value.get<int64_t>());
  }
  absl::StatusOr<int> PositiveInt(const std::string& key) const {
    ASSIGN_OR_RETURN(int value, Int(key));
    if (value <= 0) return Error(key, "a positive integer");
    return value;
  }
  absl::StatusOr<int> PositiveInt(const std::string& key, int fallback) const {
    if (IsMissing(key)) return fallback;
    return PositiveInt(key);
  }
  absl::StatusOr<double> PositiveNumber(const std::string& key) const {
    if (IsMissing(key)) return Error(key, "a positive number (required)");
    const Json& value = Get(key);
    if (!value.is_number() || !(value.get<double>() > 0)) return Error(key, "a positive number");
    return value.get<double>();
  }
  absl::StatusOr<double> PositiveNumber(const std::string& key, double fallback) const {
    if (IsMissing(key)) return fallback;
    return PositiveNumber(key);
  }
  absl::StatusOr<bool> Bool(const std::string& key, bool fallback) const {
    if (IsMissing(key)) return fallback;
    if (!Get(key).is_boolean()) return Error(key, "true or false");
    return Get(key).get<bool>();
  }
  absl::StatusOr<std::string> String(const std::string& key, const std::string& fallback) const {
    if (IsMissing(key)) return fallback;
    if (!Get(key).is_string()) return Error(key, "a string");
    return Get(key).get<std::string>();
  }

  const std::string& source() const { return source_; }

 private:
  const Json& object_;
  std::string source_;
  std::string prefix_;
};

absl::Status CheckArchitecture(const JsonReader& config) {
  ASSIGN_OR_RETURN(std::string model_type, config.String("model_type", ""));
  if (model_type != "llama") {
    return absl::InvalidArgumentError(
        absl::StrCat(config.source(), ": unsupported architecture: \"model_type\" is ",
                     model_type.empty() ? std::string("missing") : "\"" + model_type + "\"",
                     "; only \"llama\" (LlamaForCausalLM) is supported"));
  }
  if (config.IsMissing("architectures")) return absl::OkStatus();
  const Json& architectures = config.Get("architectures");
  if (!architectures.is_array() || architectures.empty() ||
      std::any_of(architectures.begin(), architectures.end(),
                  [](const Json& a) { return a != "LlamaForCausalLM"; })) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.source(), ": unsupported architecture: \"architectures\" is ",
                     architectures.dump(), "; only [\"LlamaForCausalLM\"] is supported"));
  }
  return absl::OkStatus();
}

absl::Status CheckUnsupportedFeatures(const JsonReader& config) {
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    ASSIGN_OR_RETURN(bool has_bias, config.Bool(key, false));
    if (has_bias) {
      return absl::UnimplementedError(absl::StrCat(
          config.source(), ": \"", key, "\" is true; biases are not supported (expected false)"));
    }
  }
  ASSIGN_OR_RETURN(std::string activation, config.String("hidden_act", "silu"));
  if (activation != "silu") {
    return absl::UnimplementedError(absl::StrCat(config.source(), ": \"hidden_act\" is \"",
                                                 activation, "\"; only \"silu\" is supported"));
  }
  return absl::OkStatus();
}

// Fills `rope` from one rope object (rope_scaling or rope_parameters), whose type key is
// `rope_type` (or the older `type`).
absl::Status ParseRopeObject(const JsonReader& rope_object, RopeConfig* rope) {
  const char* type_key =
      rope_object.IsMissing("rope_type") && !rope_object.IsMissing("type") ? "type" : "rope_type";
  ASSIGN_OR_RETURN(std::string type, rope_object.String(type_key, "default"));
  ASSIGN_OR_RETURN(rope->theta, rope_object.PositiveNumber("rope_theta", rope->theta));
  if (type == "default") {
    rope->type = RopeConfig::Type::kDefault;
    return absl::OkStatus();
  }
  if (type == "linear") {
    rope->type = RopeConfig::Type::kLinear;
    ASSIGN_OR_RETURN(rope->factor, rope_object.PositiveNumber("factor"));
    return absl::OkStatus();
  }
  if (type == "llama3") {
    rope->type = RopeConfig::Type::kLlama3;
    ASSIGN_OR_RETURN(rope->factor, rope_object.PositiveNumber("factor"));
    ASSIGN_OR_RETURN(rope->low_freq_factor, rope_object.PositiveNumber("low_freq_factor"));
    ASSIGN_OR_RETURN(rope->high_freq_factor, rope_object.PositiveNumber("high_freq_factor"));
    ASSIGN_OR_RETURN(rope->original_max_position_embeddings,
                     rope_object.PositiveInt("original_max_position_embeddings"));
    if (!(rope->high_freq_factor > rope->low_freq_factor)) {
      return rope_object.Error("high_freq_factor", "greater than low_freq_factor");
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(rope_object.source(), ": unsupported rope type \"",
                                               type, "\" in \"", rope_object.Path(type_key),
                                               "\"; supported: default, linear, llama3"));
}

absl::Status ParseRope(const Json& config_json, const JsonReader& config, RopeConfig* rope) {
  ASSIGN_OR_RETURN(rope->theta, config.PositiveNumber("rope_theta", 10000.0));
  for (const char* key : {"rope_parameters", "rope_scaling"}) {  // newer form first
    if (config.IsMissing(key)) continue;
    const Json& value = config_json.at(key);
    if (!value.is_object()) return config.Error(key, "an object or null");
    return ParseRopeObject(JsonReader(value, config.source(), std::string(key) + "."), rope);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> ParseTokenIds(const JsonReader& config, const std::string& key) {
  std::vector<int> ids;
  if (config.IsMissing(key)) return ids;
  const Json& value = config.Get(key);
  const auto is_token_id = [](const Json& v) {
    return v.is_number_integer() && v.get<int64_t>() >= 0 &&
           v.get<int64_t>() <= std::numeric_limits<int>::max();
  };
  if (is_token_id(value)) {
    ids.push_back(value.get<int>());
  } else if (value.is_array() && std::all_of(value.begin(), value.end(), is_token_id)) {
    for (const Json& id : value) ids.push_back(id.get<int>());
  } else {
    return config.Error(key, "a token id (integer >= 0), a list of them or null");
  }
  return ids;
}

constexpr const char* kQuantizableModules[] = {"q_proj",    "k_proj",  "v_proj",    "o_proj",
                                               "gate_proj", "up_proj", "down_proj", "lm_head"};

absl::StatusOr<QuantizationConfig> ParseQuantization(const Json& value, const std::string& source) {
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": \"quantization_config\" must be an object, found ", value.dump()));
  }
  const JsonReader quant(value, source, "quantization_config.");
  if (quant.IsMissing("method") && !quant.IsMissing("quant_method")) {
    return absl::UnimplementedError(absl::StrCat(
        source, ": \"quantization_config.quant_method\" is ", value.at("quant_method").dump(),
        "; only flute LUT checkpoints (quantization_config.method) are supported"));
  }
  QuantizationConfig result;
  ASSIGN_OR_RETURN(result.method, quant.String("method", ""));
  if (result.method.empty()) return quant.Error("method", "a non-empty string (required)");
  ASSIGN_OR_RETURN(result.bits, quant.Int("bits"));
  if (result.bits < 2 || result.bits > 4) return quant.Error("bits", "2, 3 or 4");
  ASSIGN_OR_RETURN(result.group_size, quant.Int("group_size"));
  if (result.group_size != 32 && result.group_size != 64 && result.group_size != 128 &&
      result.group_size != 256) {
    return quant.Error("group_size", "32, 64, 128 or 256");
  }
  ASSIGN_OR_RETURN(result.format_version, quant.PositiveInt("format_version", 1));
  if (result.format_version > lut::kLayoutVersion) {
    return quant.Error("format_version", absl::StrCat("1 to ", lut::kLayoutVersion,
                                                      " (the packed layouts this build reads); found ",
                                                      result.format_version, ": a newer flute wrote it"));
  }
  ASSIGN_OR_RETURN(result.table_per_layer, quant.Bool("table_per_layer", false));
  if (quant.IsMissing("modules") || !value.at("modules").is_array()) {
    return quant.Error("modules", "a list of module kinds (q_proj, ..., lm_head)");
  }
  for (const Json& module : value.at("modules")) {
    const auto& known = kQuantizableModules;
    if (!module.is_string() || std::find(std::begin(known), std::end(known),
                                         module.get<std::string>()) == std::end(known)) {
      return quant.Error("modules",
                         absl::StrCat("a list of module kinds among ", absl::StrJoin(known, ", "),
                                      " (bad entry ", module.dump(), ")"));
    }
    result.modules.push_back(module.get<std::string>());
  }
  return result;
}

absl::Status ParseSizes(const JsonReader& config, ModelConfig* model) {
  ASSIGN_OR_RETURN(model->vocab_size, config.PositiveInt("vocab_size"));
  ASSIGN_OR_RETURN(model->hidden_size, config.PositiveInt("hidden_size"));
  ASSIGN_OR_RETURN(model->intermediate_size, config.PositiveInt("intermediate_size"));
  ASSIGN_OR_RETURN(model->num_layers, config.PositiveInt("num_hidden_layers"));
  ASSIGN_OR_RETURN(model->num_heads, config.PositiveInt("num_attention_heads"));
  ASSIGN_OR_RETURN(model->num_kv_heads,
                   config.PositiveInt("num_key_value_heads", model->num_heads));
  ASSIGN_OR_RETURN(model->max_position_embeddings,
                   config.PositiveInt("max_position_embeddings", 2048));
  ASSIGN_OR_RETURN(model->rms_norm_eps, config.PositiveNumber("rms_norm_eps", 1e-6));
  if (model->num_heads % model->num_kv_heads != 0) {
    return config.Error("num_key_value_heads",
                        absl::StrCat("a divisor of num_attention_heads (", model->num_heads, ")"));
  }
  if (!config.IsMissing("head_dim")) {
    ASSIGN_OR_RETURN(model->head_dim, config.PositiveInt("head_dim"));
  } else if (model->hidden_size % model->num_heads != 0) {
    return config.Error("hidden_size",
                        absl::StrCat("a multiple of num_attention_heads (", model->num_heads,
                                     ") when head_dim is not given"));
  } else {
    model->head_dim = model->hidden_size / model->num_heads;
  }
  return absl::OkStatus();
}

}  // namespace

bool QuantizationConfig::IsQuantized(const std::string& module_kind) const {
  return std::find(modules.begin(), modules.end(), module_kind) != modules.end();
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view source_view) {
  const std::string source(source_view);
  Json json;
  try {
    json = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": malformed JSON: ", e.what()));
  }
  if (!json.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  const JsonReader config(json, source, "");

  ModelConfig model;
  RETURN_IF_ERROR(CheckArchitecture(config));
  model.model_type = "llama";
  RETURN_IF_ERROR(CheckUnsupportedFeatures(config));
  RETURN_IF_ERROR(ParseSizes(config, &model));
  RETURN_IF_ERROR(ParseRope(json, config, &model.rope));
  ASSIGN_OR_RETURN(model.tie_word_embeddings, config.Bool("tie_word_embeddings", false));
  ASSIGN_OR_RETURN(std::vector<int> bos, ParseTokenIds(config, "bos_token_id"));
  if (bos.size() > 1) return config.Error("bos_token_id", "one integer or null");
  model.bos_token_id = bos.empty() ? -1 : bos[0];
  ASSIGN_OR_RETURN(model.eos_token_ids, ParseTokenIds(config, "eos_token_id"));
  // transformers 5 writes "dtype"; older versions "torch_dtype".
  ASSIGN_OR_RETURN(model.torch_dtype, config.String("torch_dtype", ""));
  if (model.torch_dtype.empty()) {
    ASSIGN_OR_RETURN(model.torch_dtype, config.String("dtype", ""));
  }
  if (!config.IsMissing("quantization_config")) {
    ASSIGN_OR_RETURN(model.quantization, ParseQuantization(json.at("quantization_config"), source));
  }
  return model;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  return ParseModelConfig(text, path);
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": no such file"));
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) return absl::DataLossError(absl::StrCat("error reading ", path));
  return text.str();
}

}  // namespace flute
