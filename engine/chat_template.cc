#include "engine/chat_template.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "engine/byte_level.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace flute {
namespace {

// Canonical form of Jinja source for comparing templates: comments {# #} dropped, white
// space outside string literals dropped (so indentation and line breaks between tags do not
// matter: the LLaMA-3.1 template trims them all with "{%-"/"{{-", which stay), and inside
// literals a raw newline/CR/tab written as its escape (Jinja reads both the same). Text
// inside literals is otherwise kept exactly, so a changed header or date is a mismatch.
std::string Squash(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (quote == 0) {
      if (s.compare(i, 2, "{#") == 0) {
        const size_t end = s.find("#}", i + 2);
        if (end == std::string::npos) break;
        i = end + 1;
      } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
        if (c == '\'' || c == '"') quote = c;
        out += c;
      }
      continue;
    }
    if (c == '\\' && i + 1 < s.size()) {
      out += c;
      out += s[++i];
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      if (c == quote) quote = 0;
      out += c;
    }
  }
  return out;
}

bool ContainsAll(const std::string& squashed, const std::vector<std::string>& fragments) {
  for (const std::string& f : fragments) {
    if (squashed.find(Squash(f)) == std::string::npos) return false;
  }
  return true;
}

// LLaMA-3's two published templates, whole: one turn = header + trimmed content +
// <|eot_id|>, BOS before the first turn, then the generation prompt (always, in the first
// release; later only with add_generation_prompt).
constexpr char kLlama3Body[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}";
constexpr char kLlama3ConditionalPrompt[] =
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}";
constexpr char kLlama3AlwaysPrompt[] = "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}";

// LLaMA-3.1: everything that shapes the output of a conversation without tools.
const std::vector<std::string>& Llama31Fragments() {
  static const auto* fragments = new std::vector<std::string>{
      "{{- bos_token }}",
      "{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}",
      "{%- if messages[0]['role'] == 'system' %}"
      "{%- set system_message = messages[0]['content']|trim %}"
      "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}",
      "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}",
      "{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
      "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}",
      "{{- system_message }}{{- \"<|eot_id|>\" }}",
      "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
      "message['content'] | trim + '<|eot_id|>' }}",
      "{%- if add_generation_prompt %}"
      "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}",
  };
  return *fragments;
}

std::string Turn(const std::string& role, const std::string& content) {
  return "<|start_header_id|>" + role + "<|end_header_id|>\n\n" +
         std::string(PythonStrip(content)) + "<|eot_id|>";
}

constexpr char kAssistantHeader[] = "<|start_header_id|>assistant<|end_header_id|>\n\n";

std::string RenderLlama3(const std::vector<ChatMessage>& messages, bool generation_prompt,
                         const std::string& bos_token) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0) out += bos_token;
    out += Turn(messages[i].role, messages[i].content);
  }
  if (generation_prompt) out += kAssistantHeader;
  return out;
}

absl::StatusOr<std::string> RenderLlama31(const std::vector<ChatMessage>& messages,
                                          bool add_generation_prompt,
                                          const std::string& bos_token) {
  if (messages.empty()) {
    return absl::InvalidArgumentError("the LLaMA-3.1 chat template needs at least one message");
  }
  for (const ChatMessage& m : messages) {
    if (m.role == "tool" || m.role == "ipython") {
      return absl::UnimplementedError("chat role \"" + m.role +
                                      "\" (tool results) is not supported by this renderer");
    }
  }
  size_t first = 0;
  std::string system_message;
  if (messages[0].role == "system") {
    system_message = std::string(PythonStrip(messages[0].content));
    first = 1;
  }
  std::string out = bos_token + "<|start_header_id|>system<|end_header_id|>\n\n" +
                    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
                    system_message + "<|eot_id|>";
  for (size_t i = first; i < messages.size(); ++i) out += Turn(messages[i].role, messages[i].content);
  if (add_generation_prompt) out += kAssistantHeader;
  return out;
}

}  // namespace

absl::StatusOr<ChatTemplateKind> RecognizeChatTemplate(const std::string& template_source) {
  const std::string squashed = Squash(template_source);
  if (squashed.find("strftime_now") != std::string::npos) {
    return absl::InvalidArgumentError(
        "unsupported chat template: it takes today's date from strftime_now (LLaMA-3.2 style); "
        "supported are the LLaMA-3 and LLaMA-3.1 instruct templates");
  }
  if (ContainsAll(squashed, Llama31Fragments())) return ChatTemplateKind::kLlama31;
  const std::string body = kLlama3Body;
  if (squashed == Squash(body + kLlama3ConditionalPrompt)) return ChatTemplateKind::kLlama3;
  if (squashed == Squash(body + kLlama3AlwaysPrompt)) return ChatTemplateKind::kLlama3AlwaysPrompt;
  return absl::InvalidArgumentError(
      "unknown chat template (supported: LLaMA-3 and LLaMA-3.1 instruct); it begins with \"" +
      template_source.substr(0, 80) + "\"");
}

absl::StatusOr<std::string> ApplyChatTemplate(const std::string& template_source,
                                              const std::vector<ChatMessage>& messages,
                                              bool add_generation_prompt,
                                              const std::string& bos_token) {
  ASSIGN_OR_RETURN(const ChatTemplateKind kind, RecognizeChatTemplate(template_source));
  switch (kind) {
    case ChatTemplateKind::kLlama3:
      return RenderLlama3(messages, add_generation_prompt, bos_token);
    case ChatTemplateKind::kLlama3AlwaysPrompt:
      return RenderLlama3(messages, /*generation_prompt=*/true, bos_token);
    case ChatTemplateKind::kLlama31:
      return RenderLlama31(messages, add_generation_prompt, bos_token);
  }
  return absl::InternalError("unhandled chat template kind");
}

absl::StatusOr<std::string> LoadChatTemplate(const std::string& model_dir) {
  std::ifstream jinja(model_dir + "/chat_template.jinja", std::ios::binary);
  if (jinja) {
    std::stringstream buffer;
    buffer << jinja.rdbuf();
    return buffer.str();
  }
  const std::string path = model_dir + "/tokenizer_config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError("no chat template: neither " + model_dir +
                               "/chat_template.jinja nor " + path + " exists");
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const nlohmann::json config = nlohmann::json::parse(buffer.str(), nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(path + " is not a JSON object");
  }
  const nlohmann::json& chat_template = config.value("chat_template", nlohmann::json());
  if (chat_template.is_string()) return chat_template.get<std::string>();
  if (chat_template.is_array()) {
    for (const auto& entry : chat_template) {
      if (entry.is_object() && entry.value("name", std::string()) == "default" &&
          entry.contains("template") && entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
    return absl::InvalidArgumentError(path + ": chat_template list has no \"default\" entry");
  }
  return absl::NotFoundError(path + " has no chat_template (a model without a chat format)");
}

}  // namespace flute
