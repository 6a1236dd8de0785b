// The CPU reference backend: the whole LLaMA forward pass in fp32 arithmetic, over a ragged
// batch, with a paged fp32 KV cache. It is the reference every GPU path is tested against
// and what lets the service run where there is no GPU.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/model_weights.h"

namespace flute {

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(ModelConfig config,
                                                           std::unique_ptr<ModelWeights> weights,
                                                           const BackendOptions& options);

}  // namespace flute
