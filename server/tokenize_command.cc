// `flute tokenize --tokenizer PATH --json-in FILE`: encodes each string of a JSON array as
// Hugging Face's encode(text, add_special_tokens=False) does and prints one JSON array of
// id arrays. PATH is a tokenizer.json, a tokenizer.model or a model directory.
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/commands.h"

namespace flute::cli {
namespace {

struct TokenizeOptions {
  std::string tokenizer_path;
  std::string json_in;
  bool add_special_tokens = false;
};

absl::StatusOr<std::vector<std::string>> ReadStringArray(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--json-in: cannot open ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const nlohmann::json json = nlohmann::json::parse(buffer.str(), nullptr, false);
  if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat("--json-in: ", path, " is not valid JSON"));
  if (!json.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("--json-in: ", path, " must hold a JSON array of strings, found ",
                                                   json.type_name()));
  }
  std::vector<std::string> texts;
  for (size_t i = 0; i < json.size(); ++i) {
    if (!json[i].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("--json-in: element ", i, " of ", path,
                                                     " is a ", json[i].type_name(), ", expected a string"));
    }
    texts.push_back(json[i].get<std::string>());
  }
  return texts;
}

absl::Status RunTokenize(const TokenizeOptions& o) {
  ASSIGN_OR_RETURN(std::vector<std::string> texts, ReadStringArray(o.json_in));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(o.tokenizer_path));
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = tokenizer->Encode(texts[i], o.add_special_tokens);
    if (!ids.ok()) {
      return absl::Status(ids.status().code(),
                          absl::StrCat("string ", i, " of ", o.json_in, ": ", ids.status().message()));
    }
    out.push_back(*ids);
  }
  std::cout << out.dump() << std::endl;
  return absl::OkStatus();
}

}  // namespace

void AddTokenizeCommand(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "Encode a JSON array of strings; prints one JSON array of id arrays");
  cmd->add_option("--tokenizer", o->tokenizer_path,
                  "tokenizer.json, tokenizer.model or a model directory")->required();
  cmd->add_option("--json-in", o->json_in, "File holding a JSON array of strings")->required();
  cmd->add_flag("--add-special-tokens", o->add_special_tokens,
                "Add what the tokenizer adds for add_special_tokens=True (BOS); default off");
  cmd->callback([o] { ExitIfError(RunTokenize(*o)); });
}

}  // namespace flute::cli
