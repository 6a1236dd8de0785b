#include "engine/model_weights.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/lut_linear.h"
#include "engine/status_macros.h"

namespace flute {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IsFloatDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

// Builds one linear layer, dense or LUT-quantized as the config says for its `kind`
// ("q_proj", ..., "lm_head"). W is [out, in]; `prefix` is the module name
// ("model.layers.0.self_attn.q_proj"), its tensors are `<prefix>.weight` or the LUT ones.
absl::StatusOr<std::unique_ptr<Linear>> LoadProjection(TensorClaims& claims,
                                                       const ModelConfig& config,
                                                       const std::string& prefix,
                                                       const std::string& kind, int out_features,
                                                       int in_features) {
  if (config.quantization.has_value() && config.quantization->IsQuantized(kind)) {
    return LoadLutLinear(claims, prefix, out_features, in_features, *config.quantization);
  }
  ASSIGN_OR_RETURN(const TensorView* view,
                   claims.ClaimFloat(prefix + ".weight", {out_features, in_features}));
  return std::unique_ptr<Linear>(new DenseLinear(view));
}

// An RMSNorm weight [size], converted to fp32 (tiny, so copied).
absl::StatusOr<std::vector<float>> LoadNorm(TensorClaims& claims, const std::string& name,
                                            int size) {
  ASSIGN_OR_RETURN(const TensorView* view, claims.ClaimFloat(name, {size}));
  std::vector<float> values(static_cast<size_t>(size));
  ConvertToFloat(view->dtype, view->data, values.size(), values.data());
  return values;
}

absl::StatusOr<LayerWeights> LoadLayer(TensorClaims& claims, const ModelConfig& config, int layer) {
  const std::string prefix = absl::StrCat("model.layers.", layer, ".");
  const std::string attention = prefix + "self_attn.";
  const std::string mlp = prefix + "mlp.";
  const int hidden = config.hidden_size;
  LayerWeights weights;
  ASSIGN_OR_RETURN(weights.q_proj, LoadProjection(claims, config, attention + "q_proj", "q_proj",
                                                  config.q_dim(), hidden));
  ASSIGN_OR_RETURN(weights.k_proj, LoadProjection(claims, config, attention + "k_proj", "k_proj",
                                                  config.kv_dim(), hidden));
  ASSIGN_OR_RETURN(weights.v_proj, LoadProjection(claims, config, attention + "v_proj", "v_proj",
                                                  config.kv_dim(), hidden));
  ASSIGN_OR_RETURN(weights.o_proj, LoadProjection(claims, config, attention + "o_proj", "o_proj",
                                                  hidden, config.q_dim()));
  ASSIGN_OR_RETURN(weights.gate_proj, LoadProjection(claims, config, mlp + "gate_proj", "gate_proj",
                                                     config.intermediate_size, hidden));
  ASSIGN_OR_RETURN(weights.up_proj, LoadProjection(claims, config, mlp + "up_proj", "up_proj",
                                                   config.intermediate_size, hidden));
  ASSIGN_OR_RETURN(weights.down_proj, LoadProjection(claims, config, mlp + "down_proj", "down_proj",
                                                     hidden, config.intermediate_size));
  ASSIGN_OR_RETURN(weights.input_norm, LoadNorm(claims, prefix + "input_layernorm.weight", hidden));
  ASSIGN_OR_RETURN(weights.post_attention_norm,
                   LoadNorm(claims, prefix + "post_attention_layernorm.weight", hidden));
  claims.Ignore(attention + "rotary_emb.inv_freq");  // old checkpoints; recomputed from the config
  return weights;
}

// The LM head [vocab, hidden]: its own tensor, or the embedding matrix when tied (a
// checkpoint may still carry a copy of it as lm_head.weight; ignored then).
absl::StatusOr<std::unique_ptr<Linear>> LoadLmHead(TensorClaims& claims, const ModelConfig& config,
                                                   const TensorView* embed_tokens) {
  const bool quantized =
      config.quantization.has_value() && config.quantization->IsQuantized("lm_head");
  if (config.tie_word_embeddings && !quantized) {
    claims.Ignore("lm_head.weight");
    return std::unique_ptr<Linear>(new DenseLinear(embed_tokens));
  }
  return LoadProjection(claims, config, "lm_head", "lm_head", config.vocab_size,
                        config.hidden_size);
}

}  // namespace

absl::StatusOr<const TensorView*> TensorClaims::Claim(const std::string& name, DType dtype,
                                                      std::vector<int64_t> shape) {
  const TensorView* view = store_.Find(name);
  if (view == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint is missing tensor \"", name,
                                                   "\" (expected ", std::string(DTypeName(dtype)),
                                                   " ", ShapeString(shape), ")"));
  }
  if (view->dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", name, "\" in ", view->file, " has dtype ", std::string(DTypeName(view->dtype)),
        "; expected ", std::string(DTypeName(dtype))));
  }
  if (view->shape != shape) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor \"", name, "\" in ", view->file, " has the wrong shape: expected ",
                     ShapeString(shape), ", found ", view->ShapeString()));
  }
  claimed_.insert(name);
  return view;
}

absl::StatusOr<const TensorView*> TensorClaims::ClaimFloat(const std::string& name,
                                                           std::vector<int64_t> shape) {
  const TensorView* view = store_.Find(name);
  if (view == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint is missing tensor \"", name,
                                                   "\" (expected shape ", ShapeString(shape), ")"));
  }
  if (!IsFloatDType(view->dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor \"", name, "\" in ", view->file, " has unsupported dtype ",
                     std::string(DTypeName(view->dtype)), "; expected F32, F16 or BF16"));
  }
  return Claim(name, view->dtype, std::move(shape));
}

absl::Status TensorClaims::CheckNoneLeft() const {
  constexpr size_t kMaxNamesShown = 5;
  std::vector<std::string> extra;
  size_t num_extra = 0;
  for (const auto& [name, view] : store_.tensors()) {
    if (claimed_.count(name) != 0) continue;
    ++num_extra;
    if (extra.size() < kMaxNamesShown) extra.push_back("\"" + name + "\"");
  }
  if (num_extra == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "checkpoint has ", num_extra, " unexpected tensor", num_extra == 1 ? "" : "s",
      " for this config: ", absl::StrJoin(extra, ", "), num_extra > extra.size() ? ", ..." : ""));
}

namespace {

// Binds every tensor the config calls for to `weights`, then rejects any left over.
absl::Status BindTensors(const ModelConfig& config, ModelWeights* weights) {
  TensorClaims claims(*weights->store);
  ASSIGN_OR_RETURN(
      weights->embed_tokens,
      claims.ClaimFloat("model.embed_tokens.weight", {config.vocab_size, config.hidden_size}));
  for (int layer = 0; layer < config.num_layers; ++layer) {
    ASSIGN_OR_RETURN(LayerWeights layer_weights, LoadLayer(claims, config, layer));
    weights->layers.push_back(std::move(layer_weights));
  }
  ASSIGN_OR_RETURN(weights->final_norm, LoadNorm(claims, "model.norm.weight", config.hidden_size));
  ASSIGN_OR_RETURN(weights->lm_head, LoadLmHead(claims, config, weights->embed_tokens));
  return claims.CheckNoneLeft();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModelWeights(const std::string& model_dir,
                                                               const ModelConfig& config) {
  auto weights = std::make_unique<ModelWeights>();
  ASSIGN_OR_RETURN(weights->store, TensorStore::OpenDirectory(model_dir));
  const absl::Status bound = BindTensors(config, weights.get());
  if (!bound.ok())
    return absl::Status(bound.code(), absl::StrCat(model_dir, ": ", bound.message()));
  return weights;
}

}  // namespace flute
