// The tensors of a LLaMA checkpoint, validated against its config and bound to layers.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/linear.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"

namespace flute {

struct LayerWeights {
  std::unique_ptr<Linear> q_proj;     // [num_heads * head_dim, hidden]
  std::unique_ptr<Linear> k_proj;     // [num_kv_heads * head_dim, hidden]
  std::unique_ptr<Linear> v_proj;     // [num_kv_heads * head_dim, hidden]
  std::unique_ptr<Linear> o_proj;     // [hidden, num_heads * head_dim]
  std::unique_ptr<Linear> gate_proj;  // [intermediate, hidden]
  std::unique_ptr<Linear> up_proj;    // [intermediate, hidden]
  std::unique_ptr<Linear> down_proj;  // [hidden, intermediate]
  std::vector<float> input_norm;      // [hidden]
  std::vector<float> post_attention_norm;  // [hidden]
};

struct ModelWeights {
  std::unique_ptr<TensorStore> store;  // owns the mappings every view points into
  const TensorView* embed_tokens = nullptr;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;       // [hidden]
  std::unique_ptr<Linear> lm_head;     // [vocab, hidden]; a view of embed_tokens when tied
};

// Hands out the tensors of a store one at a time, checking each name, shape and dtype, and
// reports whatever nobody asked for, so that a checkpoint with missing, misshapen or extra
// tensors is rejected with the tensor's name, the expected and the found shape.
class TensorClaims {
 public:
  explicit TensorClaims(const TensorStore& store) : store_(store) {}
  // A 16/32-bit float tensor of exactly `shape`.
  absl::StatusOr<const TensorView*> ClaimFloat(const std::string& name, std::vector<int64_t> shape);
  // Any tensor of `dtype` and `shape`.
  absl::StatusOr<const TensorView*> Claim(const std::string& name, DType dtype, std::vector<int64_t> shape);
  bool Has(const std::string& name) const { return store_.Find(name) != nullptr; }
  // Accepts `name` without using it (rotary_emb.inv_freq, a tied model's lm_head.weight).
  void Ignore(const std::string& name) { claimed_.insert(name); }
  // FailedPrecondition-style error listing unexpected tensors (at most a few by name).
  absl::Status CheckNoneLeft() const;

 private:
  const TensorStore& store_;
  std::set<std::string> claimed_;
};

// Loads and validates all tensors of a dense (16/32-bit) LLaMA checkpoint.
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModelWeights(const std::string& model_dir,
                                                               const ModelConfig& config);

}  // namespace flute
