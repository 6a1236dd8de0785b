// `flute bench kernel [ARGS...]`: runs flute-bench-kernel (the LUT-GEMM vs cuBLAS benchmark)
// found next to the flute binary. It is a separate program because it links cuBLAS, which
// the server process must not (docs/toolchain.md, trap 3). Arguments after `kernel` are
// passed through unchanged (see bench/lut_gemm_bench.cu for the list).
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/plugin_paths.h"
#include "server/commands.h"

namespace flute::cli {
namespace {


absl::Status RunBenchKernel(const std::vector<std::string>& args) {
  const std::string program = ExecutableDir() + "/flute-bench-kernel";
  if (access(program.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(
        program, " not found or not executable: it is built only when CUDA (nvcc) is available; "
                 "build the target flute-bench-kernel"));
  }
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed for flute-bench-kernel");
  if (pid == 0) {
    execv(program.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return absl::InternalError("waitpid failed");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("flute-bench-kernel failed (exit status ",
                                            WIFEXITED(status) ? WEXITSTATUS(status) : -1, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

void AddBenchKernelCommand(CLI::App& bench) {
  CLI::App* cmd = bench.add_subcommand(
      "kernel", "LUT-GEMM vs cuBLAS on the GPU (runs flute-bench-kernel; extra args pass through: "
                "--shapes KxN,.. --m 1,2,.. --configs 4g128,.. --dtypes fp16,bf16 --md F --json F)");
  cmd->allow_extras();
  cmd->prefix_command();
  cmd->callback([cmd] { ExitIfError(RunBenchKernel(cmd->remaining())); });
}

}  // namespace flute::cli
