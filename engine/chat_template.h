// Chat templates: renders a conversation into the prompt string the model was trained on,
// exactly as transformers' apply_chat_template(..., tokenize=False) renders the model's Jinja
// template. There is no Jinja engine here: known templates are recognised by their source
// and rendered in C++. Supported: LLaMA-3 instruct (both published variants: with and
// without the add_generation_prompt condition) and LLaMA-3.1 instruct (no tools; "Today
// Date" is the template's default, 26 Jul 2024, as transformers passes no date_string).
// Any other template is a clear error.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace flute {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", ...
  std::string content;
};

enum class ChatTemplateKind {
  kLlama3,               // generation prompt only when add_generation_prompt
  kLlama3AlwaysPrompt,   // the first LLaMA-3 release: generation prompt always appended
  kLlama31,
};

// Which known template `template_source` (the Jinja text) is, or InvalidArgument.
absl::StatusOr<ChatTemplateKind> RecognizeChatTemplate(const std::string& template_source);

// Renders `messages` with the template whose Jinja source is `template_source`.
absl::StatusOr<std::string> ApplyChatTemplate(const std::string& template_source,
                                              const std::vector<ChatMessage>& messages,
                                              bool add_generation_prompt,
                                              const std::string& bos_token);

// The chat template of a model: `model_dir`/chat_template.jinja if present, else
// `chat_template` of `model_dir`/tokenizer_config.json (a string, or a list of
// {"name", "template"} of which "default" is taken).
absl::StatusOr<std::string> LoadChatTemplate(const std::string& model_dir);

}  // namespace flute
