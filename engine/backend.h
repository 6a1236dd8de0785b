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

struct BackendOptions {
  std::string device = "cpu";    // "cpu" or "cuda"
  int num_threads = 0;           // CPU threads; 0 = all hardware threads
  int kv_block_size = 16;        // tokens per KV block
  int64_t kv_cache_bytes = 1ll << 30;  // CPU: KV storage budget
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
};

// Loads the checkpoint in `model_dir` onto the device in `options`.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& model_dir,
                                                       const BackendOptions& options);

}  // namespace flute
