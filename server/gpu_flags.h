// The CUDA backend's command-line flags, shared by `generate`, `ppl`, `serve` and
// `bench e2e`: activation type, memory fraction, graphs and batch invariance.
#pragma once

#include "CLI/CLI.hpp"
#include "engine/backend.h"

namespace flute::cli {

// Registers --dtype, --gpu-memory-fraction, --gpu-kv-cache-mb, --no-cuda-graphs and
// --batch-invariant, writing into `options` (which must outlive the app).
void AddGpuFlags(CLI::App* cmd, BackendOptions* options);

}  // namespace flute::cli
