#include "server/gpu_flags.h"

namespace flute::cli {

void AddGpuFlags(CLI::App* cmd, BackendOptions* options) {
  cmd->add_option("--dtype", options->dtype,
                  "CUDA activations and KV cache: auto (the checkpoint's), float16 or bfloat16")
      ->check(CLI::IsMember({"auto", "float16", "bfloat16"}))->capture_default_str();
  cmd->add_option("--gpu-memory-fraction", options->gpu_memory_fraction,
                  "CUDA: fraction of the GPU's memory for weights, activations and the KV cache")
      ->check(CLI::Range(0.01, 1.0))->capture_default_str();
  cmd->add_option_function<int64_t>(
      "--gpu-kv-cache-mb", [options](int64_t mb) { options->gpu_kv_cache_bytes = mb << 20; },
      "CUDA: cap the KV cache at this many MiB (default: what the fraction leaves)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  cmd->add_option("--max-model-len", options->max_model_len,
                  "Cap the context at this many tokens (0 = the model's max_position_embeddings); "
                  "on CUDA the KV cache must hold at least one full context")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_flag_callback("--no-cuda-graphs", [options] { options->cuda_graphs = false; },
                         "CUDA: launch decode steps kernel by kernel instead of replaying graphs");
  cmd->add_flag_callback("--batch-invariant", [options] { options->batch_invariant = true; },
                         "CUDA: fix split-K and GEMM algorithms so that a sequence's projections do "
                         "not depend on its batch-mates (same decode speed, about half the prefill "
                         "throughput)");
}

}  // namespace flute::cli
