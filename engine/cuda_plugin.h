// The contract between the engine and its CUDA plugin, libflute_cuda.so (engine/cuda/).
// The CUDA engine lives in a library loaded with dlopen so that the server process carries
// none of the CUDA runtime's static TLS at start: prometheus-cpp's HTTP threads have small
// fixed stacks that static TLS eats into (docs/toolchain.md, trap 3). Both sides are built
// from the same sources, so C++ types cross the boundary; the version guards a stale plugin.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/cuda_backend.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"

namespace flute {

inline constexpr int kCudaPluginVersion = 2;  // 2: BackendOptions::ablate

}  // namespace flute

extern "C" {
// Returns kCudaPluginVersion of the plugin's build.
using FluteCudaPluginVersionFn = int (*)();
// Takes ownership of `weights`; moves from *config.
using FluteCudaCreateBackendFn = void (*)(flute::ModelConfig* config, flute::ModelWeights* weights,
                                          const flute::BackendOptions* options,
                                          absl::StatusOr<std::unique_ptr<flute::Backend>>* out);
using FluteCudaCreateRandomBackendFn = void (*)(const flute::ModelConfig* config,
                                                const flute::BackendOptions* options, uint64_t seed,
                                                absl::StatusOr<std::unique_ptr<flute::Backend>>* out);
using FluteCudaAsBenchFn = flute::CudaBenchHooks* (*)(flute::Backend* backend);
}
