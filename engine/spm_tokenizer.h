// SentencePiece (`tokenizer.model`, LLaMA-2 style) tokenizer with Hugging Face LlamaTokenizer
// semantics. SentencePiece itself runs inside libflute_spm.so, loaded with dlopen (see
// spm_plugin/spm_plugin_api.h for why).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer.h"

namespace flute {

// Loads the SentencePiece model `model_path`. When `config_dir` is not empty, its
// tokenizer_config.json (add_bos_token, add_eos_token, legacy, add_prefix_space, bos/eos
// tokens, added_tokens_decoder) and generation_config.json (eos_token_id) are read if present.
//
// Encode/Decode follow transformers' (slow) LlamaTokenizer: special-token strings in the text
// ("<s>", "</s>", "<unk>", ...) become their ids; with legacy=false a "▁" is prepended to the
// text (not after special tokens) and the model's add_dummy_prefix is switched off.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSpmTokenizer(const std::string& model_path,
                                                            const std::string& config_dir);

// Where libflute_spm.so is looked for, in order: $FLUTE_SPM_PLUGIN, the directory of the
// running executable, and <that directory>/../lib.
std::vector<std::string> SpmPluginSearchPaths();

}  // namespace flute
