// `flute bench e2e`: the CUDA engine end to end on models of LLaMA-3-8B / 70B shape whose
// weights are generated on the GPU in the quantized format (no download, no file). Decode
// tokens/s at several batch sizes with a given context, prefill tokens/s for given prompt
// lengths, the same engine with 16-bit weights in the same process as the baseline, and
// the roofline: bytes one step reads over the copy bandwidth measured in the same process.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/cuda_backend.h"
#include "engine/kv_cache.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/commands.h"
#include "server/gpu_flags.h"

namespace flute::cli {
namespace {

struct E2eOptions {
  std::string shape = "8b";               // 8b or 70b
  // w2/w3/w4 (G from --group-size) or the dense baseline: "dense", or its type's name bf16 / fp16
  std::vector<std::string> weights = {"w4", "dense"};
  int group_size = 128;
  std::vector<int> batches = {1, 4, 8, 16, 32};
  int context = 512;
  std::vector<int> prefill = {512, 2048};
  int steps = 32;
  bool compare_invariant = false;        // also run the LUT models with --batch-invariant
  bool profile = false;                  // print each model's step time by kernel kind
  std::string ablate;                    // kernel kinds left out of every step (timing only)
  std::string json_path;
  std::string markdown_path;
  BackendOptions backend;
};

ModelConfig LlamaShape(const std::string& shape) {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 128256;
  c.max_position_embeddings = 8192;
  c.rms_norm_eps = 1e-5;
  c.rope.theta = 500000.0;
  if (shape == "70b") {
    c.hidden_size = 8192, c.intermediate_size = 28672, c.num_layers = 80, c.num_heads = 64;
  } else {
    c.hidden_size = 4096, c.intermediate_size = 14336, c.num_layers = 32, c.num_heads = 32;
  }
  c.num_kv_heads = 8;
  c.head_dim = 128;
  return c;
}

struct Row {
  std::string model, weights, mode, phase;
  int batch = 0, tokens = 0;
  double median_ms = 0, tokens_per_s = 0, roofline_tokens_per_s = 0;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The 16-bit type of the run (--dtype; random weights have no checkpoint type, so "auto" is
// bf16): the activations, the KV cache, the LM head and the dense baseline's weights. The dense
// baseline ("--weights bf16") is labelled with it in the table.
std::string DenseLabel(const E2eOptions& o) { return o.backend.dtype == "float16" ? "fp16" : "bf16"; }
std::string RowWeights(const E2eOptions& o, const std::string& weights) {
  return weights[0] == 'w' ? weights : DenseLabel(o);
}

// Decode steps of `batch` sequences at positions context, context + 1, ... (the cache holds
// random K/V, as after a prefill). Warm-up steps first (they capture the CUDA graph).
absl::StatusOr<double> TimeDecode(Backend& backend, int batch, int context, int steps) {
  CudaBenchHooks* hooks = AsCudaBench(&backend);
  KvBlockAllocator kv(backend.num_kv_blocks(), backend.kv_block_size());
  std::vector<std::vector<int32_t>> tables(batch);
  std::vector<std::unique_ptr<Sampler>> samplers;
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  for (auto& t : tables) {
    RETURN_IF_ERROR(kv.Reserve(&t, context + steps + 4));
    samplers.push_back(std::make_unique<Sampler>(greedy, std::vector<int32_t>{}));
  }
  std::vector<BatchEntry> entries(batch);
  std::vector<SampleSlot> slots(batch);
  std::vector<SampledToken> out;
  std::vector<double> times;
  for (int s = -3; s < steps; ++s) {
    for (int i = 0; i < batch; ++i) {
      entries[i].tokens = {out.empty() ? 1000 + i : out[i].token};
      entries[i].start_position = context + s + 3;
      entries[i].block_table = &tables[i];
      slots[i] = {i, samplers[i].get()};
    }
    const auto start = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(backend.ForwardAndSample(entries, slots, &out));
    if (s >= 0) times.push_back(Seconds(start, std::chrono::steady_clock::now()));
    if (s == -1) hooks->ResetProfile();  // warm-up steps (graph capture, cuBLAS setup) excluded
  }
  return Median(times);
}

// One sequence's prompt of `tokens` random ids, prefilled from position 0 (in passes of the
// backend's max tokens per step), median of 3 runs after a warm-up.
absl::StatusOr<double> TimePrefill(Backend& backend, int tokens) {
  KvBlockAllocator kv(backend.num_kv_blocks(), backend.kv_block_size());
  std::vector<int32_t> table;
  RETURN_IF_ERROR(kv.Reserve(&table, tokens));
  std::mt19937 rng(7);
  BatchEntry entry;
  for (int i = 0; i < tokens; ++i) entry.tokens.push_back(static_cast<int32_t>(rng() % 128000));
  entry.block_table = &table;
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  Sampler sampler(greedy, {});
  std::vector<SampledToken> out;
  std::vector<double> times;
  for (int run = 0; run < 4; ++run) {
    const auto start = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(backend.ForwardAndSample({entry}, {{0, &sampler}}, &out));
    if (run > 0) times.push_back(Seconds(start, std::chrono::steady_clock::now()));
  }
  return Median(times);
}

absl::StatusOr<std::unique_ptr<Backend>> MakeModel(const E2eOptions& o, const std::string& weights,
                                                   bool batch_invariant) {
  ModelConfig config = LlamaShape(o.shape);
  if (weights[0] == 'w') {
    QuantizationConfig q;
    q.method = "nf";
    q.bits = weights[1] - '0';
    q.group_size = o.group_size;
    q.modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    config.quantization = q;
  }
  BackendOptions options = o.backend;
  options.device = "cuda";
  // Random weights have no checkpoint dtype: "auto" means bf16.
  options.dtype = o.backend.dtype == "auto" ? "bfloat16" : o.backend.dtype;
  options.batch_invariant = batch_invariant;
  options.profile = o.profile;
  options.ablate = o.ablate;
  options.max_batch = std::max(32, *std::max_element(o.batches.begin(), o.batches.end()));
  options.max_tokens_per_step = std::max(512, o.prefill.empty() ? 0 : *std::max_element(o.prefill.begin(), o.prefill.end()));
  return CreateRandomCudaBackend(config, options, /*seed=*/1234);
}

// copy_bw and device are measured and set by the first call (0 / empty before).
absl::Status BenchOneModel(const E2eOptions& o, const std::string& weights, bool batch_invariant,
                           double& copy_bw, std::string& device, std::vector<Row>* rows) {
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeModel(o, weights, batch_invariant));
  CudaBenchHooks* hooks = AsCudaBench(backend.get());
  std::cerr << "bench e2e: " << o.shape << " " << weights << ": " << backend->Describe() << std::endl;
  if (copy_bw == 0) {
    ASSIGN_OR_RETURN(copy_bw, hooks->MeasureCopyBandwidth());
    device = backend->Describe();
    device = device.substr(0, device.find("),") + 1);
  }
  RETURN_IF_ERROR(hooks->FillKvCacheRandom(99));
  const std::string mode = batch_invariant ? "batch-invariant" : "default";
  for (int batch : o.batches) {
    ASSIGN_OR_RETURN(double step, TimeDecode(*backend, batch, o.context, o.steps));
    const double bytes = static_cast<double>(hooks->WeightBytesPerStep()) +
                         static_cast<double>(batch) * o.context * hooks->KvBytesPerToken();
    rows->push_back({o.shape, RowWeights(o, weights), mode, "decode", batch, o.context, step * 1e3, batch / step,
                     batch / (bytes / copy_bw)});
    std::cerr << absl::StrFormat("  decode batch %2d ctx %d: %.3f ms/step, %.1f tokens/s\n", batch, o.context,
                                 step * 1e3, batch / step);
    if (o.profile) std::cerr << hooks->ProfileReport();
  }
  for (int tokens : o.prefill) {
    if (tokens <= 0) continue;  // --prefill 0: decode only
    ASSIGN_OR_RETURN(double t, TimePrefill(*backend, tokens));
    rows->push_back({o.shape, RowWeights(o, weights), mode, "prefill", 1, tokens, t * 1e3, tokens / t, 0});
    std::cerr << absl::StrFormat("  prefill %d tokens: %.1f ms, %.0f tokens/s\n", tokens, t * 1e3, tokens / t);
  }
  return absl::OkStatus();
}

std::string Markdown(const E2eOptions& o, const std::vector<Row>& rows, double copy_bw, const std::string& device) {
  const std::string dense = DenseLabel(o);
  std::string md = absl::StrFormat(
      "# flute bench e2e\n\nDevice: %s. Activations, KV cache, LM head and the dense baseline's "
      "weights: %s. Copy bandwidth measured in the same process: %.0f GB/s "
      "(read + write). Roofline tokens/s = batch / (bytes one step reads / copy bandwidth); bytes = "
      "all projection weights + LM head + K/V of the batch's contexts.\n\n"
      "| model | weights | mode | phase | batch | tokens/context | median ms | tokens/s | roofline tokens/s | %% of roofline | × %s |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n",
      device, dense, copy_bw / 1e9, dense);
  for (const Row& r : rows) {
    double base = 0;
    for (const Row& b : rows) {
      if (b.weights == dense && b.phase == r.phase && b.batch == r.batch && b.tokens == r.tokens &&
          b.model == r.model) {
        base = b.tokens_per_s;
      }
    }
    absl::StrAppend(&md, absl::StrFormat("| %s | %s | %s | %s | %d | %d | %.3f | %.1f | %s | %s | %s |\n", r.model,
                                         r.weights, r.mode, r.phase, r.batch, r.tokens, r.median_ms, r.tokens_per_s,
                                         r.roofline_tokens_per_s > 0 ? absl::StrFormat("%.1f", r.roofline_tokens_per_s) : "",
                                         r.roofline_tokens_per_s > 0 ? absl::StrFormat("%.1f %%", 100 * r.tokens_per_s / r.roofline_tokens_per_s) : "",
                                         base > 0 ? absl::StrFormat("%.2f", r.tokens_per_s / base) : ""));
  }
  return md;
}

absl::Status RunE2e(const E2eOptions& o) {
  for (const std::string& w : o.weights) {
    if (w != "dense" && w != "bf16" && w != "fp16" && w != "w2" && w != "w3" && w != "w4") {
      return absl::InvalidArgumentError(absl::StrCat("--weights: expected w2, w3, w4, dense, bf16 or fp16, got \"", w, "\""));
    }
    if ((w == "bf16" || w == "fp16") && w != DenseLabel(o)) {
      return absl::InvalidArgumentError(absl::StrCat("--weights ", w, ": the dense baseline runs in the --dtype type (",
                                                     DenseLabel(o), " here); pass --dtype ",
                                                     w == "fp16" ? "float16" : "bfloat16", " or --weights ", DenseLabel(o)));
    }
  }
  std::vector<Row> rows;
  double copy_bw = 0;
  std::string device;
  for (const std::string& w : o.weights) {
    RETURN_IF_ERROR(BenchOneModel(o, w, o.backend.batch_invariant, copy_bw, device, &rows));
    if (o.compare_invariant && w[0] == 'w' && !o.backend.batch_invariant) {
      RETURN_IF_ERROR(BenchOneModel(o, w, /*batch_invariant=*/true, copy_bw, device, &rows));
    }
  }
  const std::string md = Markdown(o, rows, copy_bw, device);
  std::cout << md;
  if (!o.markdown_path.empty()) std::ofstream(o.markdown_path) << md;
  if (!o.json_path.empty()) {
    nlohmann::json j;
    j["device"] = device;
    j["copy_bandwidth_bytes_per_s"] = copy_bw;
    j["dtype"] = DenseLabel(o);
    for (const Row& r : rows) {
      j["rows"].push_back({{"model", r.model}, {"weights", r.weights}, {"mode", r.mode}, {"phase", r.phase},
                           {"batch", r.batch}, {"tokens", r.tokens}, {"median_ms", r.median_ms},
                           {"tokens_per_s", r.tokens_per_s}, {"roofline_tokens_per_s", r.roofline_tokens_per_s}});
    }
    std::ofstream(o.json_path) << j.dump(2) << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

void AddBenchE2eCommand(CLI::App& bench) {
  auto o = std::make_shared<E2eOptions>();
  CLI::App* cmd = bench.add_subcommand("e2e", "The CUDA engine end to end on random LLaMA-3-shaped models");
  cmd->add_option("--shape", o->shape, "8b or 70b")->check(CLI::IsMember({"8b", "70b"}))->capture_default_str();
  cmd->add_option("--weights", o->weights, "w4, w3, w2 (LUT, NF table) and/or the dense baseline in the --dtype type: dense (or bf16, or fp16 with --dtype float16)")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("--group-size", o->group_size, "LUT group size")->check(CLI::IsMember({32, 64, 128, 256}));
  cmd->add_option("--batches", o->batches, "Decode batch sizes")->delimiter(',')->capture_default_str();
  cmd->add_option("--context", o->context, "Context length of decoding sequences")->capture_default_str();
  cmd->add_option("--prefill", o->prefill, "Prompt lengths to time prefill for")->delimiter(',');
  cmd->add_option("--steps", o->steps, "Timed decode steps per batch size (median)")->capture_default_str();
  cmd->add_flag("--compare-invariant", o->compare_invariant,
                "Also run the LUT models in batch-invariant mode (what it costs)");
  cmd->add_flag("--profile", o->profile,
                "Time every kernel kind with CUDA events (eager launches; the figures then include "
                "the events' cost) and print where a step's time goes");
  cmd->add_option("--ablate", o->ablate,
                  "Leave these kernel kinds (comma-separated --profile names, e.g. \"attention,lm head\", or "
                  "\"sampling\") out of every step, to time what each costs in graph replays; the outputs are "
                  "then meaningless");
  cmd->add_option("--json", o->json_path, "Write the results as JSON");
  cmd->add_option("--markdown", o->markdown_path, "Write the table as markdown");
  AddGpuFlags(cmd, &o->backend);
  cmd->callback([o] { ExitIfError(RunE2e(*o)); });
}

}  // namespace flute::cli
