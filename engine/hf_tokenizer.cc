#include "engine/hf_tokenizer.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/bpe.h"
#include "engine/byte_level.h"
#include "engine/pcre2_regex.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace flute {
namespace {

using Json = nlohmann::json;

// GPT-2's pre-tokenizer pattern, used by a ByteLevel pre-tokenizer with use_regex=true.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct AddedToken {
  int32_t id;
  std::string content;
  bool special, lstrip, rstrip, single_word;
};

// Unicode White_Space (Rust's char::is_whitespace), for added tokens' lstrip/rstrip.
bool IsUnicodeWhiteSpace(uint32_t cp) {
  return IsPythonWhitespace(cp) && !(cp >= 0x1C && cp <= 0x1F);
}

uint32_t DecodeAt(std::string_view s, size_t pos, size_t* len) {
  size_t invalid = 0;
  bool incomplete = false;
  *len = DecodeUtf8Char(s.substr(pos), &invalid, &incomplete);
  if (*len == 0) {
    *len = 1;
    return 0xFFFD;
  }
  const auto* b = reinterpret_cast<const uint8_t*>(s.data() + pos);
  if (*len == 1) return b[0];
  if (*len == 2) return ((b[0] & 0x1Fu) << 6) | (b[1] & 0x3Fu);
  if (*len == 3) return ((b[0] & 0x0Fu) << 12) | ((b[1] & 0x3Fu) << 6) | (b[2] & 0x3Fu);
  return ((b[0] & 0x07u) << 18) | ((b[1] & 0x3Fu) << 12) | ((b[2] & 0x3Fu) << 6) | (b[3] & 0x3Fu);
}

// The code point that ends just before byte `end`, and its length.
uint32_t DecodeBefore(std::string_view s, size_t end, size_t* len) {
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
  const uint32_t cp = DecodeAt(s, start, len);
  if (start + *len != end) {
    *len = 1;
    return 0xFFFD;
  }
  return cp;
}

bool IsWordChar(uint32_t cp) {
  return cp == '_' || (cp < 0x80 ? std::isalnum(static_cast<int>(cp)) != 0 : cp != 0xFFFD);
}

absl::StatusOr<Json> ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  Json json = Json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, " is not valid JSON"));
  return json;
}

// A token name in tokenizer_config.json: a string or {"content": "..."}; "" if neither.
std::string TokenName(const Json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return "";
}

class HfTokenizer final : public Tokenizer {
 public:
  absl::Status Load(const std::string& path, const std::string& model_dir);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const override;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override;
  std::string TokenBytes(int32_t id) const override;
  int vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_id_; }
  std::vector<int32_t> eos_ids() const override { return eos_ids_; }
  bool IsSpecial(int32_t id) const override { return special_ids_.count(id) > 0; }

 private:
  absl::Status LoadModel(const Json& model);
  absl::Status LoadPreTokenizer(const Json& pre_tokenizer);
  absl::Status LoadAddedTokens(const Json& added_tokens);
  absl::Status LoadPostProcessor(const Json& post_processor);
  absl::Status LoadConfig(const std::string& model_dir);
  int32_t AddedTokenId(const std::string& content) const;

  // The leftmost, then longest, added token in `text` at or after `from`: its index in
  // added_, and the span it covers (widened by lstrip/rstrip). False if none.
  bool FindAddedToken(std::string_view text, size_t from, size_t* index, size_t* begin,
                      size_t* end) const;
  absl::Status EncodeOrdinary(std::string_view text, std::vector<int32_t>* ids) const;

  std::string path_;
  BpeModel bpe_;
  std::unique_ptr<Pcre2Regex> split_;
  std::vector<AddedToken> added_;           // longest content first
  bool added_first_byte_[256] = {};
  std::vector<const AddedToken*> added_by_id_;  // index id - added_base_
  int32_t added_base_ = 0;
  std::unordered_set<int32_t> special_ids_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;  // add_special_tokens=true
  int vocab_size_ = 0;
  int32_t bos_id_ = -1;
  std::vector<int32_t> eos_ids_;
};

absl::Status HfTokenizer::Load(const std::string& path, const std::string& model_dir) {
  path_ = path;
  ASSIGN_OR_RETURN(Json json, ReadJson(path));
  if (!json.is_object()) return absl::InvalidArgumentError(path + ": top level is not an object");
  if (json.contains("normalizer") && !json["normalizer"].is_null()) {
    return absl::UnimplementedError(absl::StrCat(
        path, ": normalizer of type ", json["normalizer"].value("type", std::string("?")),
        " is not supported (only null, as LLaMA-3 has)"));
  }
  if (!json.contains("model")) return absl::InvalidArgumentError(path + ": no \"model\"");
  RETURN_IF_ERROR(LoadModel(json["model"]));
  RETURN_IF_ERROR(LoadPreTokenizer(json.value("pre_tokenizer", Json())));
  const Json& decoder = json.value("decoder", Json());
  if (!decoder.is_object() || decoder.value("type", std::string()) != "ByteLevel") {
    return absl::UnimplementedError(path + ": decoder must be ByteLevel (found " +
                                    decoder.dump() + ")");
  }
  RETURN_IF_ERROR(LoadAddedTokens(json.value("added_tokens", Json::array())));
  RETURN_IF_ERROR(LoadPostProcessor(json.value("post_processor", Json())));
  if (!model_dir.empty()) RETURN_IF_ERROR(LoadConfig(model_dir));
  // LLaMA-3's names, for files that do not say: BOS, and the end-of-text/turn/message ids
  // that end a generation.
  if (bos_id_ < 0) bos_id_ = AddedTokenId("<|begin_of_text|>");
  for (const char* name : {"<|end_of_text|>", "<|eot_id|>", "<|eom_id|>"}) {
    const int32_t id = AddedTokenId(name);
    if (id >= 0 && std::find(eos_ids_.begin(), eos_ids_.end(), id) == eos_ids_.end()) {
      eos_ids_.push_back(id);
    }
  }
  return absl::OkStatus();
}

absl::Status HfTokenizer::LoadModel(const Json& model) {
  if (!model.is_object() || model.value("type", std::string()) != "BPE") {
    return absl::UnimplementedError(path_ + ": model.type must be \"BPE\"");
  }
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    if (model.contains(field) && !model[field].is_null()) {
      return absl::UnimplementedError(absl::StrCat(path_, ": model.", field, " is not supported"));
    }
  }
  if (model.value("byte_fallback", false)) {
    return absl::UnimplementedError(path_ + ": model.byte_fallback=true is not supported");
  }
  const Json& vocab = model.value("vocab", Json());
  if (!vocab.is_object()) return absl::InvalidArgumentError(path_ + ": model.vocab is not an object");
  std::string bytes;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) {
      return absl::InvalidArgumentError(path_ + ": model.vocab[\"" + it.key() + "\"] is not an id");
    }
    // Byte-level tokens go back to raw bytes; anything else is kept as its UTF-8.
    if (!ByteLevelToBytes(it.key(), &bytes)) bytes = it.key();
    RETURN_IF_ERROR(bpe_.AddToken(bytes, it.value().get<int32_t>()));
  }
  RETURN_IF_ERROR(bpe_.FinishVocab());
  const Json& merges = model.value("merges", Json::array());
  if (!merges.is_array()) return absl::InvalidArgumentError(path_ + ": model.merges is not a list");
  std::string left, right;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Json& merge = merges[rank];
    std::string a, b;
    if (merge.is_string()) {  // "a b"
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(path_, ": model.merges[", rank, "] \"", s,
                                                       "\" is not two tokens separated by a space"));
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      a = merge[0].get<std::string>();  // ["a", "b"]
      b = merge[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": model.merges[", rank,
                                                     "] is neither \"a b\" nor [\"a\", \"b\"]"));
    }
    if (!ByteLevelToBytes(a, &left)) left = a;
    if (!ByteLevelToBytes(b, &right)) right = b;
    RETURN_IF_ERROR(bpe_.AddMerge(left, right, static_cast<int32_t>(rank)));
  }
  bpe_.set_ignore_merges(model.value("ignore_merges", false));
  vocab_size_ = bpe_.max_id() + 1;
  return absl::OkStatus();
}

absl::Status HfTokenizer::LoadPreTokenizer(const Json& pre_tokenizer) {
  std::vector<Json> steps;
  if (pre_tokenizer.is_object() && pre_tokenizer.value("type", std::string()) == "Sequence") {
    for (const Json& step : pre_tokenizer.value("pretokenizers", Json::array())) steps.push_back(step);
  } else {
    steps.push_back(pre_tokenizer);
  }
  std::string pattern;
  bool byte_level = false;
  for (const Json& step : steps) {
    const std::string type = step.is_object() ? step.value("type", std::string()) : "";
    if (type == "Split" && !byte_level && pattern.empty()) {
      const Json& p = step.value("pattern", Json());
      if (!p.is_object() || !p.contains("Regex") || !p["Regex"].is_string()) {
        return absl::UnimplementedError(path_ + ": pre_tokenizer Split needs a {\"Regex\": ...} pattern");
      }
      if (step.value("behavior", std::string()) != "Isolated" || step.value("invert", false)) {
        return absl::UnimplementedError(path_ + ": pre_tokenizer Split must be Isolated, not inverted");
      }
      pattern = p["Regex"].get<std::string>();
    } else if (type == "ByteLevel" && !byte_level) {
      if (step.value("add_prefix_space", false)) {
        return absl::UnimplementedError(path_ + ": ByteLevel add_prefix_space=true is not supported");
      }
      if (step.value("use_regex", true)) {
        if (!pattern.empty()) {
          return absl::UnimplementedError(path_ + ": Split followed by ByteLevel use_regex=true is not supported");
        }
        pattern = kGpt2Pattern;
      }
      byte_level = true;
    } else {
      return absl::UnimplementedError(absl::StrCat(path_, ": pre_tokenizer step ", step.dump(),
                                                   " is not supported (expected Split, ByteLevel)"));
    }
  }
  if (!byte_level) return absl::UnimplementedError(path_ + ": pre_tokenizer must include ByteLevel");
  ASSIGN_OR_RETURN(split_, Pcre2Regex::Compile(pattern));
  return absl::OkStatus();
}

absl::Status HfTokenizer::LoadAddedTokens(const Json& added_tokens) {
  if (!added_tokens.is_array()) return absl::InvalidArgumentError(path_ + ": added_tokens is not a list");
  int32_t max_id = -1, min_id = INT32_MAX;
  for (const Json& t : added_tokens) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
        !t.contains("content") || !t["content"].is_string() || t["content"].get<std::string>().empty()) {
      return absl::InvalidArgumentError(path_ + ": added_tokens entry " + t.dump() +
                                        " needs an integer id and a non-empty content");
    }
    AddedToken token{t["id"].get<int32_t>(), t["content"].get<std::string>(), t.value("special", false),
                     t.value("lstrip", false), t.value("rstrip", false), t.value("single_word", false)};
    if (token.id < 0) return absl::InvalidArgumentError(path_ + ": added token id is negative");
    if (!IsValidUtf8(token.content)) {
      return absl::InvalidArgumentError(path_ + ": added token content is not UTF-8");
    }
    if (token.special) special_ids_.insert(token.id);
    max_id = std::max(max_id, token.id);
    min_id = std::min(min_id, token.id);
    added_.push_back(std::move(token));
  }
  std::stable_sort(added_.begin(), added_.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  if (!added_.empty()) {
    added_base_ = min_id;
    added_by_id_.assign(max_id - min_id + 1, nullptr);
    for (const AddedToken& t : added_) {
      added_by_id_[t.id - min_id] = &t;
      added_first_byte_[static_cast<uint8_t>(t.content[0])] = true;
    }
    vocab_size_ = std::max(vocab_size_, max_id + 1);
  }
  return absl::OkStatus();
}


int32_t HfTokenizer::AddedTokenId(const std::string& content) const {
  for (const AddedToken& t : added_) {
    if (t.content == content) return t.id;
  }
  return bpe_.TokenId(content);
}

// TemplateProcessing's "single" template: special tokens before and after sequence A.
absl::Status HfTokenizer::LoadPostProcessor(const Json& post_processor) {
  if (post_processor.is_null()) return absl::OkStatus();
  const std::string type = post_processor.value("type", std::string());
  if (type == "Sequence") {
    for (const Json& p : post_processor.value("processors", Json::array())) {
      RETURN_IF_ERROR(LoadPostProcessor(p));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type != "TemplateProcessing") {
    return absl::UnimplementedError(path_ + ": post_processor of type \"" + type + "\" is not supported");
  }
  const Json& special = post_processor.value("special_tokens", Json::object());
  bool after_sequence = false;
  for (const Json& item : post_processor.value("single", Json::array())) {
    if (item.contains("Sequence")) {
      after_sequence = true;
      continue;
    }
    const std::string name = item.contains("SpecialToken") ? item["SpecialToken"].value("id", std::string()) : "";
    if (name.empty()) {
      return absl::InvalidArgumentError(path_ + ": post_processor.single item " + item.dump() + " not understood");
    }
    std::vector<int32_t> ids;
    if (special.contains(name) && special[name].contains("ids")) {
      ids = special[name]["ids"].get<std::vector<int32_t>>();
    } else {
      const int32_t id = AddedTokenId(name);
      if (id < 0) return absl::InvalidArgumentError(path_ + ": post_processor token " + name + " is unknown");
      ids.push_back(id);
    }
    auto& target = after_sequence ? suffix_ids_ : prefix_ids_;
    target.insert(target.end(), ids.begin(), ids.end());
  }
  if (!prefix_ids_.empty()) bos_id_ = prefix_ids_.front();
  return absl::OkStatus();
}

// tokenizer_config.json (bos_token, eos_token; LlamaTokenizer's add_bos/eos_token) and
// generation_config.json (eos_token_id) of the model directory, when present.
absl::Status HfTokenizer::LoadConfig(const std::string& model_dir) {
  const std::string config_path = model_dir + "/tokenizer_config.json";
  if (std::ifstream(config_path).good()) {
    ASSIGN_OR_RETURN(Json config, ReadJson(config_path));
    const std::string bos = TokenName(config.value("bos_token", Json()));
    const std::string eos = TokenName(config.value("eos_token", Json()));
    if (!bos.empty()) {
      bos_id_ = AddedTokenId(bos);
      if (bos_id_ < 0) return absl::InvalidArgumentError(config_path + ": bos_token " + bos + " is not a token");
    }
    if (!eos.empty()) {
      const int32_t id = AddedTokenId(eos);
      if (id < 0) return absl::InvalidArgumentError(config_path + ": eos_token " + eos + " is not a token");
      eos_ids_.push_back(id);
    }
    // transformers' LlamaTokenizerFast rebuilds its post-processor from these flags.
    if (config.value("tokenizer_class", std::string()).rfind("LlamaTokenizer", 0) == 0) {
      prefix_ids_.clear();
      suffix_ids_.clear();
      if (config.value("add_bos_token", true) && bos_id_ >= 0) prefix_ids_.push_back(bos_id_);
      if (config.value("add_eos_token", false) && !eos_ids_.empty()) suffix_ids_.push_back(eos_ids_[0]);
    }
  }
  const std::string generation_path = model_dir + "/generation_config.json";
  if (std::ifstream(generation_path).good()) {
    ASSIGN_OR_RETURN(Json generation, ReadJson(generation_path));
    const Json& eos = generation.value("eos_token_id", Json());
    std::vector<int32_t> ids;
    if (eos.is_number_integer()) ids.push_back(eos.get<int32_t>());
    if (eos.is_array()) {
      for (const Json& e : eos) {
        if (e.is_number_integer()) ids.push_back(e.get<int32_t>());
      }
    }
    for (int32_t id : ids) {
      if (std::find(eos_ids_.begin(), eos_ids_.end(), id) == eos_ids_.end()) eos_ids_.push_back(id);
    }
  }
  return absl::OkStatus();
}

bool HfTokenizer::FindAddedToken(std::string_view text, size_t from, size_t* index, size_t* begin,
                                 size_t* end) const {
  for (size_t pos = from; pos < text.size(); ++pos) {
    if (!added_first_byte_[static_cast<uint8_t>(text[pos])]) continue;
    for (size_t i = 0; i < added_.size(); ++i) {  // longest first
      const AddedToken& t = added_[i];
      if (text.compare(pos, t.content.size(), t.content) != 0) continue;
      size_t b = pos, e = pos + t.content.size(), len = 0;
      if (t.single_word) {
        if ((b > 0 && IsWordChar(DecodeBefore(text, b, &len))) ||
            (e < text.size() && IsWordChar(DecodeAt(text, e, &len)))) {
          continue;
        }
      }
      while (t.lstrip && b > from && IsUnicodeWhiteSpace(DecodeBefore(text, b, &len))) b -= len;
      while (t.rstrip && e < text.size() && IsUnicodeWhiteSpace(DecodeAt(text, e, &len))) e += len;
      *index = i;
      *begin = b;
      *end = e;
      return true;
    }
  }
  return false;
}

absl::Status HfTokenizer::EncodeOrdinary(std::string_view text, std::vector<int32_t>* ids) const {
  if (text.empty()) return absl::OkStatus();
  std::vector<std::pair<size_t, size_t>> words;
  RETURN_IF_ERROR(split_->FindAll(text, &words));
  size_t covered = 0;  // Isolated: the text between matches forms pieces of its own
  for (const auto& [begin, end] : words) {
    if (begin > covered) bpe_.EncodeWord(text.substr(covered, begin - covered), ids);
    bpe_.EncodeWord(text.substr(begin, end - begin), ids);
    covered = end;
  }
  if (covered < text.size()) bpe_.EncodeWord(text.substr(covered), ids);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::Encode(std::string_view text,
                                                         bool add_special_tokens) const {
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text to encode is not valid UTF-8");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = prefix_ids_;
  size_t pos = 0, index = 0, begin = 0, end = 0;
  while (pos < text.size() && FindAddedToken(text, pos, &index, &begin, &end)) {
    RETURN_IF_ERROR(EncodeOrdinary(text.substr(pos, begin - pos), &ids));
    ids.push_back(added_[index].id);
    pos = end;
  }
  if (pos < text.size()) RETURN_IF_ERROR(EncodeOrdinary(text.substr(pos), &ids));
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

std::string HfTokenizer::TokenBytes(int32_t id) const {
  if (id >= added_base_ && static_cast<size_t>(id - added_base_) < added_by_id_.size() &&
      added_by_id_[id - added_base_] != nullptr) {
    return added_by_id_[id - added_base_]->content;
  }
  const std::string* bytes = bpe_.TokenBytes(id);
  return bytes ? *bytes : std::string();
}

std::string HfTokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    bytes += TokenBytes(id);  // unknown ids add nothing, as in Hugging Face
  }
  return Utf8Lossy(bytes);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& tokenizer_json_path,
                                                           const std::string& model_dir_or_empty) {
  auto tokenizer = std::make_unique<HfTokenizer>();
  RETURN_IF_ERROR(tokenizer->Load(tokenizer_json_path, model_dir_or_empty));
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace flute
