// The engine's compute interface: one forward step over a ragged batch of sequences, each
// prefilling a chunk of its prompt or decoding one token, with its KV cache in shared
// fixed-size blocks. The CPU backend implements it here; the CUDA backend does the same.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model_config.h"
#include "engine/sampler.h"

namespace flute {

struct BatchEntry {
  std::vector<int32_t> tokens;   // this step's tokens: a prefill chunk, or one decode token
  int start_position = 0;        // position of tokens[0]; [0, start_position) is cached
  const std::vector<int32_t>* block_table = nullptr;  // covers [0, start_position + tokens.size())
  bool all_logits = false;       // logits for every token (perplexity), else for the last only
};

struct ForwardOutput {
  std::vector<float> logits;     // [num_rows, vocab_size], fp32
  std::vector<int> first_row;    // entry i's rows start at first_row[i]
};

// A batch entry whose last token's logits choose the entry's next token, and the request's
// sampler (its parameters, token counts and seeded generator).
struct SampleSlot {
  int entry = 0;
  Sampler* sampler = nullptr;
};

struct BackendOptions {
  std::string device = "cpu";    // "cpu" or "cuda"
  int num_threads = 0;           // CPU threads; 0 = all hardware threads
  int kv_block_size = 16;        // tokens per KV block
  int64_t kv_cache_bytes = 1ll << 30;  // CPU: KV storage budget
  // CUDA only.
  std::string dtype = "auto";    // activations and KV: "float16", "bfloat16", "auto" (checkpoint's)
  double gpu_memory_fraction = 0.90;  // of total GPU memory: weights + activations + KV
  int max_batch = 32;            // sequences per step at most (CUDA graphs are captured up to it)
  int max_tokens_per_step = 512; // tokens per step at most (activation buffers)
  bool cuda_graphs = true;       // replay captured graphs for decode-only steps
  // A row's projections never depend on the rest of the batch (fixed split-K, LUT kernel at
  // every M, dense GEMMs padded to 32 rows). Off by default: it costs ~0 % in decode but
  // halves prefill throughput (bench/results/e2e-*-h100.md).
  bool batch_invariant = false;
  int64_t gpu_kv_cache_bytes = 0;  // 0: whatever the memory fraction leaves, else at most this
  bool profile = false;          // time every kernel kind with events (eager steps; slower)
  // Both backends: cap the context at this many tokens (0 = the model's
  // max_position_embeddings). A long-context model whose full context would not fit the KV
  // cache is served with a shorter one.
  int max_model_len = 0;
  // CUDA, `flute bench e2e --ablate` only: comma-separated kernel kinds (the --profile names)
  // left out of every forward step, to time what each costs inside CUDA-graph replays, and
  // "sampling" (every sampled token is then 0). The outputs are then meaningless. (A layout change: kCudaPluginVersion 2.)
  std::string ablate;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const ModelConfig& config() const = 0;
  virtual std::string Describe() const = 0;   // device and weight format, for logs
  virtual int kv_block_size() const = 0;
  virtual int num_kv_blocks() const = 0;

  // Runs every entry's tokens through the model, writing their K/V into the blocks of
  // their tables, and returns logits. InvalidArgument for a token id outside the vocab,
  // a position past the context, or a block table too short.
  virtual absl::Status Forward(const std::vector<BatchEntry>& batch, ForwardOutput* out) = 0;

  // Forward, then one token per slot chosen by its sampler from the logits of the entry's
  // last token (none of the slot entries may ask for all_logits). tokens[i] answers
  // slots[i]; Accept is left to the caller. The default samples on the host; the CUDA
  // backend samples on the GPU and copies back only the tokens and log-probabilities.
  virtual absl::Status ForwardAndSample(const std::vector<BatchEntry>& batch,
                                        const std::vector<SampleSlot>& slots,
                                        std::vector<SampledToken>* tokens);

  // Device memory in use by this backend (weights, activations, KV), 0 on the CPU.
  virtual int64_t device_memory_bytes() const { return 0; }
};

// The checks every backend makes before a step: tokens present, ids in the vocabulary,
// positions within the context, block tables long enough with ids in [0, num_blocks).
// InvalidArgument naming the entry and the value.
absl::Status ValidateBatch(const ModelConfig& config, int block_size, int num_blocks,
                           const std::vector<BatchEntry>& batch);

// Loads the checkpoint in `model_dir` onto the device in `options`.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& model_dir,
                                                       const BackendOptions& options);

}  // namespace flute
