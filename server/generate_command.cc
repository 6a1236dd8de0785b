// `flute generate`: one prompt, one continuation, streamed to stdout as it is produced.
#include <chrono>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "engine/backend.h"
#include "engine/generation.h"
#include "engine/status_macros.h"
#include "engine/streaming_detokenizer.h"
#include "engine/tokenizer.h"
#include "server/commands.h"
#include "server/gpu_flags.h"

namespace flute::cli {
namespace {

struct GenerateOptions {
  std::string model_dir;
  std::string prompt;
  std::string device = "cpu";
  int max_new_tokens = 128;
  int threads = 0;
  bool ignore_eos = false;
  SamplingParams sampling;
  uint64_t seed = 0;
  bool has_seed = false;
  BackendOptions backend;
};

absl::Status RunGenerate(const GenerateOptions& o) {
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(o.model_dir));
  BackendOptions backend_options = o.backend;
  backend_options.device = o.device;
  backend_options.num_threads = o.threads;
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CreateBackend(o.model_dir, backend_options));
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt, tokenizer->Encode(o.prompt, /*add_special_tokens=*/true));

  GenerationOptions options;
  options.max_new_tokens = o.max_new_tokens;
  options.sampling = o.sampling;
  if (o.has_seed) options.sampling.seed = o.seed;
  if (!o.ignore_eos) options.stop_token_ids = tokenizer->eos_ids();

  StreamingDetokenizer detokenizer(*tokenizer, /*skip_special_tokens=*/true);
  auto print_token = [&](int32_t id) { std::cout << detokenizer.Push(id) << std::flush; };
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(GenerationResult result, GenerateSequence(*backend, prompt, options, print_token));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << detokenizer.Flush() << std::endl;
  std::cerr << absl::StrFormat("[%d prompt tokens, %d generated, finish_reason=%s, %.1f tokens/s overall]",
                               prompt.size(), result.tokens.size(), result.finish_reason,
                               result.tokens.size() / seconds)
            << std::endl;
  return absl::OkStatus();
}

}  // namespace

void AddGenerateCommand(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate a continuation of a prompt");
  cmd->add_option("--model", o->model_dir, "Model directory (Hugging Face layout)")->required();
  cmd->add_option("--prompt", o->prompt, "Prompt text")->required();
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Tokens to generate at most")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temperature", o->sampling.temperature, "0 = greedy");
  cmd->add_option("--top-k", o->sampling.top_k, "Keep the k most likely tokens (0 = off)");
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass (1 = off)");
  cmd->add_option("--min-p", o->sampling.min_p, "Drop tokens below min_p x the top probability");
  cmd->add_option("--repetition-penalty", o->sampling.repetition_penalty, "1 = off");
  cmd->add_option("--presence-penalty", o->sampling.presence_penalty, "0 = off");
  cmd->add_option("--frequency-penalty", o->sampling.frequency_penalty, "0 = off");
  cmd->add_option_function<uint64_t>("--seed", [o](uint64_t s) { o->seed = s; o->has_seed = true; },
                                     "Random seed (same seed and request, same output)");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-sequence tokens");
  cmd->add_option("--device", o->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--threads", o->threads, "CPU threads (0 = all)");
  AddGpuFlags(cmd, &o->backend);
  cmd->callback([o] { ExitIfError(RunGenerate(*o)); });
}

}  // namespace flute::cli
