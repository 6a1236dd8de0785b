#include "engine/backend.h"

#include "absl/strings/str_cat.h"
#include "engine/cpu_backend.h"
#include "engine/model_weights.h"
#include "engine/status_macros.h"

namespace flute {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& model_dir,
                                                       const BackendOptions& options) {
  if (options.device != "cpu" && options.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("device must be \"cpu\" or \"cuda\", got \"", options.device, "\""));
  }
  if (options.device == "cuda") {
    return absl::UnimplementedError(
        "device \"cuda\": the CUDA engine is not part of this build yet; use --device cpu");
  }
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> weights, LoadModelWeights(model_dir, config));
  return CreateCpuBackend(std::move(config), std::move(weights), options);
}

}  // namespace flute
