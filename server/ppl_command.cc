// `flute ppl`: perplexity of a token file, windows as in the reference evaluation.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "engine/backend.h"
#include "engine/perplexity.h"
#include "engine/status_macros.h"
#include "server/commands.h"
#include "server/gpu_flags.h"

namespace flute::cli {
namespace {

struct PerplexityOptions {
  std::string model_dir;
  std::string tokens_path;
  std::string tokens_dtype = "u16";
  std::string device = "cpu";
  int window = 512;
  int max_windows = 0;
  int threads = 0;
  BackendOptions backend;
};

absl::Status RunPerplexity(const PerplexityOptions& o) {
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, ReadTokenFile(o.tokens_path, o.tokens_dtype));
  BackendOptions backend_options = o.backend;
  backend_options.device = o.device;
  backend_options.num_threads = o.threads;
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CreateBackend(o.model_dir, backend_options));
  std::cerr << "backend: " << backend->Describe() << std::endl;
  auto progress = [](int done, int total) {
    std::cerr << "\rwindows " << done << "/" << total << std::flush;
  };
  ASSIGN_OR_RETURN(PerplexityResult r, ComputePerplexity(*backend, ids, o.window, o.max_windows, progress));
  std::cerr << std::endl;
  std::cout << absl::StrFormat("windows=%d scored_tokens=%d mean_nll=%.6f", r.num_windows, r.num_scored,
                               r.mean_nll)
            << std::endl;
  std::cout << absl::StrFormat("ppl=%.4f", r.perplexity) << std::endl;
  return absl::OkStatus();
}

}  // namespace

void AddPerplexityCommand(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  CLI::App* cmd = app.add_subcommand("ppl", "Perplexity of a token file (last line: ppl=<value>)");
  cmd->add_option("--model", o->model_dir, "Model directory")->required();
  cmd->add_option("--tokens", o->tokens_path, "Little-endian token ids")->required();
  cmd->add_option("--tokens-dtype", o->tokens_dtype, "u16 or u32")->check(CLI::IsMember({"u16", "u32"}));
  cmd->add_option("--window", o->window, "Tokens per window");
  cmd->add_option("--max-windows", o->max_windows, "Score only the first N windows (0 = all)");
  cmd->add_option("--device", o->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--threads", o->threads, "CPU threads (0 = all)");
  AddGpuFlags(cmd, &o->backend);
  cmd->callback([o] { ExitIfError(RunPerplexity(*o)); });
}

}  // namespace flute::cli
