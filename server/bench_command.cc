// `flute bench <what>`: benchmark programs. Each benchmark registers itself under the
// `bench` group: AddBenchKernelCommand (kernels, issue 5), AddBenchServeCommand (server),
// AddBenchE2eCommand (the CUDA engine, issue 8).
#include "server/commands.h"

namespace flute::cli {

void AddBenchCommand(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (kernel, serve, e2e)");
  bench->require_subcommand(1);
  AddBenchServeCommand(*bench);
  // Registrations go here, one line each, e.g. AddBenchKernelCommand(*bench);
  AddBenchKernelCommand(*bench);
  AddBenchE2eCommand(*bench);
}

}  // namespace flute::cli
