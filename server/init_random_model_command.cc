// `flute init-random-model`: writes a small LLaMA-architecture checkpoint with RANDOM
// weights and a SentencePiece tokenizer trained on text every Debian system has, so the
// service can be tried and smoke-tested without downloading a model. Its output is
// gibberish by construction; the directory's README and config say so.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/dtype.h"
#include "engine/safetensors.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/commands.h"

namespace flute::cli {
namespace {

namespace fs = std::filesystem;

struct InitOptions {
  std::string out_dir;
  int hidden_size = 256;
  int num_layers = 4;
  int vocab_size = 2000;
  uint64_t seed = 0;
  bool force = false;
};

struct Shape {
  std::string name;
  std::vector<int64_t> dims;
  bool is_norm;
};

absl::Status WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

// Trains a byte-fallback BPE SentencePiece model (LLaMA-2 style ids: unk 0, bos 1, eos 2)
// on the license texts of base-files.
absl::Status TrainTokenizer(const fs::path& dir, int vocab_size) {
  std::vector<std::string> inputs;
  for (const char* name : {"GPL-3", "Apache-2.0", "LGPL-2.1", "MPL-2.0", "GFDL-1.3", "Artistic"}) {
    const fs::path p = fs::path("/usr/share/common-licenses") / name;
    if (fs::exists(p)) inputs.push_back(p.string());
  }
  if (inputs.empty()) return absl::NotFoundError("no training text in /usr/share/common-licenses");
  const std::string command = absl::StrCat(
      "spm_train --input=", absl::StrJoin(inputs, ","), " --model_prefix=", (dir / "tokenizer").string(),
      " --vocab_size=", vocab_size,
      " --model_type=bpe --byte_fallback=true --split_digits=true --character_coverage=1.0"
      " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=2 --minloglevel=2 > ",
      (dir / "spm_train.log").string(), " 2>&1");
  if (std::system(command.c_str()) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "spm_train failed (is Debian's `sentencepiece` package installed? run scripts/setup.sh); see ",
        (dir / "spm_train.log").string()));
  }
  fs::remove(dir / "tokenizer.vocab");
  fs::remove(dir / "spm_train.log");
  return absl::OkStatus();
}

nlohmann::json MakeConfig(const InitOptions& o) {
  const int head_dim = 64;
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"_flute_note", "RANDOM WEIGHTS made by `flute init-random-model` for smoke tests: output is gibberish"},
          {"vocab_size", o.vocab_size},
          {"hidden_size", o.hidden_size},
          {"intermediate_size", o.hidden_size * 3},
          {"num_hidden_layers", o.num_layers},
          {"num_attention_heads", o.hidden_size / head_dim},
          {"num_key_value_heads", std::max(1, o.hidden_size / head_dim / 2)},
          {"head_dim", head_dim},
          {"max_position_embeddings", 2048},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 500000.0},
          {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 512}}},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"torch_dtype", "bfloat16"}};
}

std::vector<Shape> TensorShapes(const nlohmann::json& c) {
  const int64_t h = c["hidden_size"], v = c["vocab_size"], inter = c["intermediate_size"];
  const int64_t q = static_cast<int64_t>(c["num_attention_heads"]) * 64;
  const int64_t kv = static_cast<int64_t>(c["num_key_value_heads"]) * 64;
  std::vector<Shape> shapes = {{"model.embed_tokens.weight", {v, h}, false},
                               {"model.norm.weight", {h}, true},
                               {"lm_head.weight", {v, h}, false}};
  for (int i = 0; i < static_cast<int>(c["num_hidden_layers"]); ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    shapes.push_back({p + "input_layernorm.weight", {h}, true});
    shapes.push_back({p + "post_attention_layernorm.weight", {h}, true});
    shapes.push_back({p + "self_attn.q_proj.weight", {q, h}, false});
    shapes.push_back({p + "self_attn.k_proj.weight", {kv, h}, false});
    shapes.push_back({p + "self_attn.v_proj.weight", {kv, h}, false});
    shapes.push_back({p + "self_attn.o_proj.weight", {h, q}, false});
    shapes.push_back({p + "mlp.gate_proj.weight", {inter, h}, false});
    shapes.push_back({p + "mlp.up_proj.weight", {inter, h}, false});
    shapes.push_back({p + "mlp.down_proj.weight", {h, inter}, false});
  }
  return shapes;
}

absl::Status WriteWeights(const fs::path& path, const nlohmann::json& config, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const std::vector<Shape> shapes = TensorShapes(config);
  std::vector<std::vector<uint16_t>> storage;
  std::vector<TensorToWrite> tensors;
  for (const Shape& s : shapes) {
    int64_t count = 1;
    for (int64_t d : s.dims) count *= d;
    std::vector<uint16_t> values(count);
    for (auto& v : values) v = FloatToBf16(s.is_norm ? 1.0f : normal(rng));
    storage.push_back(std::move(values));
    tensors.push_back({s.name, DType::kBF16, s.dims, storage.back().data(),
                       static_cast<size_t>(count) * 2});
  }
  return WriteSafetensors(path.string(), tensors, {{"format", "pt"}});
}

absl::Status RunInit(const InitOptions& o) {
  const fs::path dir(o.out_dir);
  if (fs::exists(dir / "config.json") && !o.force) {
    return absl::AlreadyExistsError(absl::StrCat(o.out_dir, " already holds a model (use --force to overwrite)"));
  }
  if (o.hidden_size % 128 != 0 || o.hidden_size < 128) {
    return absl::InvalidArgumentError(absl::StrCat("--hidden-size must be a multiple of 128, got ", o.hidden_size));
  }
  fs::create_directories(dir);
  RETURN_IF_ERROR(TrainTokenizer(dir, o.vocab_size));
  const nlohmann::json config = MakeConfig(o);
  RETURN_IF_ERROR(WriteFile(dir / "config.json", config.dump(2)));
  RETURN_IF_ERROR(WriteFile(dir / "tokenizer_config.json",
                            nlohmann::json{{"add_bos_token", true}, {"add_eos_token", false},
                                           {"bos_token", "<s>"}, {"eos_token", "</s>"},
                                           {"unk_token", "<unk>"}, {"legacy", false},
                                           {"tokenizer_class", "LlamaTokenizer"}}.dump(2)));
  RETURN_IF_ERROR(WriteFile(dir / "generation_config.json",
                            nlohmann::json{{"bos_token_id", 1}, {"eos_token_id", 2}}.dump(2)));
  RETURN_IF_ERROR(WriteWeights(dir / "model.safetensors", config, o.seed));
  RETURN_IF_ERROR(WriteFile(dir / "README.md",
                            "# RANDOM-WEIGHT test model\n\nMade by `flute init-random-model`: a LLaMA-"
                            "architecture checkpoint with random weights and a SentencePiece tokenizer "
                            "trained on Debian's license texts. It exercises the whole service; its "
                            "output is meaningless.\n"));
  std::cout << "wrote a random-weight LLaMA test model to " << o.out_dir << std::endl;
  return absl::OkStatus();
}

}  // namespace

void AddInitRandomModelCommand(CLI::App& app) {
  auto o = std::make_shared<InitOptions>();
  CLI::App* cmd = app.add_subcommand(
      "init-random-model", "Write a small RANDOM-weight LLaMA checkpoint for smoke tests (no download)");
  cmd->add_option("--out", o->out_dir, "Output directory")->required();
  cmd->add_option("--hidden-size", o->hidden_size, "Hidden size (multiple of 128)");
  cmd->add_option("--layers", o->num_layers, "Decoder layers")->check(CLI::Range(1, 64));
  cmd->add_option("--vocab-size", o->vocab_size, "Tokenizer vocabulary")->check(CLI::Range(300, 32000));
  cmd->add_option("--seed", o->seed, "Weight seed");
  cmd->add_flag("--force", o->force, "Overwrite an existing model");
  cmd->callback([o] { ExitIfError(RunInit(*o)); });
}

}  // namespace flute::cli
