// flute: serve, run and quantize LUT-quantized LLaMA models. See `flute --help`.
#include "CLI/CLI.hpp"
#include "server/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"flute: LUT-quantized LLaMA inference"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "flute 0.1.0");
  flute::cli::AddAllCommands(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
