#include "engine/backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/cpu_backend.h"
#include "engine/cuda_backend.h"
#include "engine/model_weights.h"
#include "engine/status_macros.h"

namespace flute {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& model_dir,
                                                       const BackendOptions& options) {
  if (options.device != "cpu" && options.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("device must be \"cpu\" or \"cuda\", got \"", options.device, "\""));
  }
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  if (options.max_model_len < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_model_len must be >= 0 (0 = the model's context), got ", options.max_model_len));
  }
  if (options.max_model_len > 0) {
    config.max_position_embeddings = std::min(config.max_position_embeddings, options.max_model_len);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> weights, LoadModelWeights(model_dir, config));
  if (options.device == "cuda") {
    return CreateCudaBackend(std::move(config), std::move(weights), options);
  }
  return CreateCpuBackend(std::move(config), std::move(weights), options);
}

absl::Status ValidateBatch(const ModelConfig& config, int block_size, int num_blocks,
                           const std::vector<BatchEntry>& batch) {
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchEntry& e = batch[i];
    if (e.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("batch entry ", i, ": no tokens"));
    const int end = e.start_position + static_cast<int>(e.tokens.size());
    if (e.start_position < 0 || end > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch entry ", i, ": positions [", e.start_position, ", ", end,
          ") exceed the model's context of ", config.max_position_embeddings, " tokens"));
    }
    if (e.block_table == nullptr ||
        static_cast<int64_t>(e.block_table->size()) * block_size < end) {
      return absl::InvalidArgumentError(absl::StrCat("batch entry ", i, ": block table covers ",
                                                     e.block_table ? e.block_table->size() * block_size : 0,
                                                     " positions, ", end, " needed"));
    }
    for (int32_t block : *e.block_table) {
      if (block < 0 || block >= num_blocks) {
        return absl::InvalidArgumentError(
            absl::StrCat("batch entry ", i, ": KV block ", block, " outside [0, ", num_blocks, ")"));
      }
    }
    for (int32_t token : e.tokens) {
      if (token < 0 || token >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("batch entry ", i, ": token id ", token,
                                                       " outside the vocabulary [0, ",
                                                       config.vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Backend::ForwardAndSample(const std::vector<BatchEntry>& batch,
                                       const std::vector<SampleSlot>& slots,
                                       std::vector<SampledToken>* tokens) {
  ForwardOutput out;
  RETURN_IF_ERROR(Forward(batch, &out));
  const int vocab = config().vocab_size;
  tokens->clear();
  for (const SampleSlot& slot : slots) {
    const BatchEntry& entry = batch[slot.entry];
    const int row = out.first_row[slot.entry] + (entry.all_logits ? static_cast<int>(entry.tokens.size()) - 1 : 0);
    tokens->push_back(slot.sampler->Sample(out.logits.data() + static_cast<size_t>(row) * vocab, vocab));
  }
  return absl::OkStatus();
}

}  // namespace flute
