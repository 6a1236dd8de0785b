// The subcommands of the `flute` program. Each Add*Command registers its options on the
// CLI11 app and a callback that runs it; a failing command throws CLI::RuntimeError with
// its exit code after printing its error to stderr.
#pragma once

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace flute::cli {

void AddAllCommands(CLI::App& app);

void AddGenerateCommand(CLI::App& app);
void AddPerplexityCommand(CLI::App& app);
void AddInitRandomModelCommand(CLI::App& app);
void AddTokenizeCommand(CLI::App& app);  // tokenize_command.cc
void AddBenchCommand(CLI::App& app);  // the `bench` group; benchmarks register under it
void AddBenchKernelCommand(CLI::App& bench);  // `flute bench kernel` (bench_kernel_command.cc)
void AddQuantizeCommand(CLI::App& app);
void AddServeCommand(CLI::App& app);
void AddClientCommand(CLI::App& app);
void AddHealthCommand(CLI::App& app);  // health_command.cc
void AddBenchServeCommand(CLI::App& bench);  // under `bench`
void AddBenchE2eCommand(CLI::App& bench);    // `flute bench e2e` (bench_e2e_command.cc)

// Prints "error: <message>" to stderr and throws CLI::RuntimeError(1) when !status.ok().
void ExitIfError(const absl::Status& status);

}  // namespace flute::cli
