#include "server/commands.h"

#include <iostream>

namespace flute::cli {

void AddAllCommands(CLI::App& app) {
  AddGenerateCommand(app);
  AddPerplexityCommand(app);
  AddInitRandomModelCommand(app);
  AddTokenizeCommand(app);
  AddBenchCommand(app);
  AddQuantizeCommand(app);
  AddServeCommand(app);
  AddClientCommand(app);
  AddHealthCommand(app);
}

void ExitIfError(const absl::Status& status) {
  if (status.ok()) return;
  std::cerr << "error: " << status.message() << std::endl;
  throw CLI::RuntimeError(1);
}

}  // namespace flute::cli
