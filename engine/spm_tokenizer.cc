// SentencePiece tokenizer client: loads libflute_spm.so with dlopen and reproduces
// transformers' LlamaTokenizer (slow, sentencepiece-backed) encode/decode on top of it.
#include "engine/spm_tokenizer.h"

#include "engine/plugin_paths.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/spm_plugin/spm_plugin_api.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace flute {
namespace {

using Json = nlohmann::json;

constexpr char kSpaceSymbol[] = "\xe2\x96\x81";  // "▁", SentencePiece's escaped space
constexpr char kReplacementChar[] = "\xef\xbf\xbd";  // U+FFFD

// ---------------------------------------------------------------------------------------------
// The plugin: function pointers looked up once per process; the library is never unloaded.

struct SpmApi {
  decltype(&flute_spm_api_version) api_version;
  decltype(&flute_spm_create) create;
  decltype(&flute_spm_destroy) destroy;
  decltype(&flute_spm_free) free;
  decltype(&flute_spm_encode) encode;
  decltype(&flute_spm_decode) decode;
  decltype(&flute_spm_id_to_piece) id_to_piece;
  decltype(&flute_spm_piece_to_id) piece_to_id;
  decltype(&flute_spm_vocab_size) vocab_size;
  decltype(&flute_spm_bos_id) bos_id;
  decltype(&flute_spm_eos_id) eos_id;
  decltype(&flute_spm_unk_id) unk_id;
  decltype(&flute_spm_pad_id) pad_id;
  decltype(&flute_spm_is_control) is_control;
  decltype(&flute_spm_is_byte) is_byte;
  decltype(&flute_spm_is_unknown) is_unknown;
  decltype(&flute_spm_is_unused) is_unused;
  decltype(&flute_spm_model_add_dummy_prefix) model_add_dummy_prefix;
};

#if defined(__SANITIZE_ADDRESS__)
#define FLUTE_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FLUTE_UNDER_ASAN 1
#endif
#endif

int PluginDlopenFlags() {
#ifdef FLUTE_UNDER_ASAN
  return RTLD_NOW | RTLD_LOCAL;  // AddressSanitizer refuses RTLD_DEEPBIND
#else
  return RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif
}


template <typename Fn>
bool LookUp(void* library, const char* name, Fn* fn, std::string* missing) {
  *fn = reinterpret_cast<Fn>(dlsym(library, name));
  if (*fn == nullptr) absl::StrAppend(missing, missing->empty() ? "" : ", ", name);
  return *fn != nullptr;
}

absl::Status BindApi(void* library, const std::string& path, SpmApi* api) {
  std::string missing;
  LookUp(library, "flute_spm_api_version", &api->api_version, &missing);
  LookUp(library, "flute_spm_create", &api->create, &missing);
  LookUp(library, "flute_spm_destroy", &api->destroy, &missing);
  LookUp(library, "flute_spm_free", &api->free, &missing);
  LookUp(library, "flute_spm_encode", &api->encode, &missing);
  LookUp(library, "flute_spm_decode", &api->decode, &missing);
  LookUp(library, "flute_spm_id_to_piece", &api->id_to_piece, &missing);
  LookUp(library, "flute_spm_piece_to_id", &api->piece_to_id, &missing);
  LookUp(library, "flute_spm_vocab_size", &api->vocab_size, &missing);
  LookUp(library, "flute_spm_bos_id", &api->bos_id, &missing);
  LookUp(library, "flute_spm_eos_id", &api->eos_id, &missing);
  LookUp(library, "flute_spm_unk_id", &api->unk_id, &missing);
  LookUp(library, "flute_spm_pad_id", &api->pad_id, &missing);
  LookUp(library, "flute_spm_is_control", &api->is_control, &missing);
  LookUp(library, "flute_spm_is_byte", &api->is_byte, &missing);
  LookUp(library, "flute_spm_is_unknown", &api->is_unknown, &missing);
  LookUp(library, "flute_spm_is_unused", &api->is_unused, &missing);
  LookUp(library, "flute_spm_model_add_dummy_prefix", &api->model_add_dummy_prefix, &missing);
  if (!missing.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("SentencePiece plugin '", path, "' lacks the functions: ", missing));
  }
  if (api->api_version() != FLUTE_SPM_API_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrCat("SentencePiece plugin '", path, "' has API version ", api->api_version(),
                     ", this program expects ", FLUTE_SPM_API_VERSION, " (rebuild it)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SpmApi> LoadPlugin() {
  std::vector<std::string> tried;
  for (const std::string& path : SpmPluginSearchPaths()) {
    void* library = dlopen(path.c_str(), PluginDlopenFlags());
    if (library == nullptr) {
      const char* why = dlerror();
      tried.push_back(absl::StrCat(path, " (", why ? why : "not loadable", ")"));
      continue;
    }
    SpmApi api;
    absl::Status bound = BindApi(library, path, &api);
    if (!bound.ok()) {
      dlclose(library);
      tried.push_back(absl::StrCat(path, " (", bound.message(), ")"));
      continue;
    }
    return api;
  }
  return absl::NotFoundError(absl::StrCat(
      "SentencePiece plugin libflute_spm.so not found; set FLUTE_SPM_PLUGIN to its path. Tried: ",
      absl::StrJoin(tried, "; ")));
}

// Loaded at the first use; a failure is remembered (and reported) for the whole process.
absl::StatusOr<const SpmApi*> GetSpmApi() {
  static std::once_flag once;
  static absl::StatusOr<SpmApi>* loaded = nullptr;
  std::call_once(once, [] { loaded = new absl::StatusOr<SpmApi>(LoadPlugin()); });
  if (!loaded->ok()) return loaded->status();
  return &loaded->value();
}

// ---------------------------------------------------------------------------------------------
// Configuration from tokenizer_config.json / generation_config.json.

struct SpmConfig {
  bool add_bos = true;
  bool add_eos = false;
  bool legacy = true;            // transformers' default when the config does not say
  bool add_prefix_space = true;
  std::optional<std::string> bos_token, eos_token, unk_token, pad_token;
  std::vector<std::string> extra_special_tokens;  // additional_special_tokens + added tokens
  std::vector<int64_t> generation_eos_ids;
};

absl::StatusOr<std::optional<Json>> ReadJsonIfPresent(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::optional<Json>();
  Json json = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed JSON"));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object"));
  }
  return std::optional<Json>(std::move(json));
}

// A token field: "<s>", {"content": "<s>", ...} or null.
absl::StatusOr<std::optional<std::string>> TokenField(const Json& config, const char* key,
                                                      const std::string& file) {
  if (!config.contains(key) || config[key].is_null()) return std::optional<std::string>();
  const Json& value = config[key];
  if (value.is_string()) return std::optional<std::string>(value.get<std::string>());
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return std::optional<std::string>(value["content"].get<std::string>());
  }
  return absl::InvalidArgumentError(absl::StrCat(
      file, ": '", key, "' must be a string or an object with a string 'content', got ",
      value.dump()));
}

absl::StatusOr<bool> BoolField(const Json& config, const char* key, bool default_value,
                               const std::string& file) {
  if (!config.contains(key) || config[key].is_null()) return default_value;
  if (!config[key].is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": '", key, "' must be true or false, got ", config[key].dump()));
  }
  return config[key].get<bool>();
}

absl::Status ReadTokenizerConfig(const std::string& file, const Json& config, SpmConfig* out) {
  ASSIGN_OR_RETURN(out->add_bos, BoolField(config, "add_bos_token", true, file));
  ASSIGN_OR_RETURN(out->add_eos, BoolField(config, "add_eos_token", false, file));
  ASSIGN_OR_RETURN(out->legacy, BoolField(config, "legacy", true, file));
  ASSIGN_OR_RETURN(out->add_prefix_space, BoolField(config, "add_prefix_space", true, file));
  ASSIGN_OR_RETURN(out->bos_token, TokenField(config, "bos_token", file));
  ASSIGN_OR_RETURN(out->eos_token, TokenField(config, "eos_token", file));
  ASSIGN_OR_RETURN(out->unk_token, TokenField(config, "unk_token", file));
  ASSIGN_OR_RETURN(out->pad_token, TokenField(config, "pad_token", file));
  if (config.contains("additional_special_tokens") &&
      config["additional_special_tokens"].is_array()) {
    for (const Json& token : config["additional_special_tokens"]) {
      if (token.is_string()) out->extra_special_tokens.push_back(token.get<std::string>());
      if (token.is_object() && token.contains("content") && token["content"].is_string()) {
        out->extra_special_tokens.push_back(token["content"].get<std::string>());
      }
    }
  }
  if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object()) {
    for (const auto& item : config["added_tokens_decoder"].items()) {
      const Json& token = item.value();
      if (token.is_object() && token.contains("content") && token["content"].is_string()) {
        out->extra_special_tokens.push_back(token["content"].get<std::string>());
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ReadGenerationConfig(const std::string& file, const Json& config, SpmConfig* out) {
  if (!config.contains("eos_token_id") || config["eos_token_id"].is_null()) {
    return absl::OkStatus();
  }
  const Json& value = config["eos_token_id"];
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": 'eos_token_id' must be an integer or a list of integers, got ", value.dump()));
  };
  if (value.is_number_integer()) {
    out->generation_eos_ids.push_back(value.get<int64_t>());
  } else if (value.is_array()) {
    for (const Json& id : value) {
      if (!id.is_number_integer()) return bad();
      out->generation_eos_ids.push_back(id.get<int64_t>());
    }
  } else {
    return bad();
  }
  return absl::OkStatus();
}

absl::StatusOr<SpmConfig> ReadConfig(const std::string& config_dir) {
  SpmConfig config;
  if (config_dir.empty()) return config;
  const std::string tokenizer_file = config_dir + "/tokenizer_config.json";
  ASSIGN_OR_RETURN(std::optional<Json> tokenizer_config, ReadJsonIfPresent(tokenizer_file));
  if (tokenizer_config) RETURN_IF_ERROR(ReadTokenizerConfig(tokenizer_file, *tokenizer_config, &config));
  const std::string generation_file = config_dir + "/generation_config.json";
  ASSIGN_OR_RETURN(std::optional<Json> generation_config, ReadJsonIfPresent(generation_file));
  if (generation_config) {
    RETURN_IF_ERROR(ReadGenerationConfig(generation_file, *generation_config, &config));
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers.

// Length of the well-formed UTF-8 character at s[pos], or 0 when it is not one (truncated,
// overlong, surrogate, beyond U+10FFFF, stray continuation byte).
size_t ValidUtf8CharLength(const std::string& s, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) return 1;
  size_t length;
  uint32_t min_code, code;
  if ((b0 & 0xe0) == 0xc0) {
    length = 2, min_code = 0x80, code = b0 & 0x1f;
  } else if ((b0 & 0xf0) == 0xe0) {
    length = 3, min_code = 0x800, code = b0 & 0x0f;
  } else if ((b0 & 0xf8) == 0xf0) {
    length = 4, min_code = 0x10000, code = b0 & 0x07;
  } else {
    return 0;
  }
  if (pos + length > s.size()) return 0;
  for (size_t i = 1; i < length; ++i) {
    if ((byte(pos + i) & 0xc0) != 0x80) return 0;
    code = (code << 6) | (byte(pos + i) & 0x3f);
  }
  if (code < min_code || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return 0;
  return length;
}

// Bytes of byte-fallback pieces as SentencePiece renders them: each well-formed character as
// is, each byte that does not start one as U+FFFD.
void AppendBytesAsUtf8(const std::string& bytes, std::string* out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t length = ValidUtf8CharLength(bytes, pos);
    if (length == 0) {
      out->append(kReplacementChar);
      ++pos;
    } else {
      out->append(bytes, pos, length);
      pos += length;
    }
  }
}

// `s` with every `from` replaced by `to` (Debian's absl::string_view is not std::string_view,
// so absl::StrReplaceAll does not take std::string_view).
std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// ---------------------------------------------------------------------------------------------

struct HandleDeleter {
  const SpmApi* api;
  void operator()(FluteSpm* handle) const { api->destroy(handle); }
};

enum class PieceKind : uint8_t { kNormal, kControl, kByte, kUnknown, kUnused };

class SpmTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const SpmApi* api,
                                                           const std::string& model_path,
                                                           SpmConfig config);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                               bool add_special_tokens) const override;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override;
  std::string TokenBytes(int32_t id) const override;
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  std::vector<int32_t> eos_ids() const override { return eos_ids_; }
  bool IsSpecial(int32_t id) const override {
    return special_ids_.count(id) > 0 || (InVocab(id) && kinds_[id] == PieceKind::kControl);
  }

 private:
  SpmTokenizer(const SpmApi* api, FluteSpm* handle, SpmConfig config)
      : api_(api), handle_(handle, HandleDeleter{api}), config_(std::move(config)) {}

  absl::Status Initialize(const std::string& model_path);
  // Adds `token` to the special tokens split out of text, when it is in the vocabulary.
  void AddSpecialToken(const std::string& token);
  bool InVocab(int32_t id) const { return id >= 0 && id < static_cast<int32_t>(pieces_.size()); }
  int32_t PieceToId(const std::string& piece) const {
    return api_->piece_to_id(handle_.get(), piece.data(), piece.size());
  }

  absl::StatusOr<std::vector<int32_t>> SpEncode(std::string_view text) const;
  // LlamaTokenizer._tokenize: SentencePiece on one chunk of text between special tokens.
  absl::Status EncodeChunk(std::string_view chunk, std::vector<int32_t>* ids) const;
  // Splits text into runs of plain text and special tokens (longest match first).
  absl::Status EncodeSplittingSpecials(std::string_view text, std::vector<int32_t>* ids) const;
  // SentencePiece's decode of a run of non-special pieces; `texts` are the piece strings.
  std::string DecodeRun(const std::vector<std::pair<int32_t, std::string>>& run) const;

  const SpmApi* api_;
  std::unique_ptr<FluteSpm, HandleDeleter> handle_;
  SpmConfig config_;
  bool dummy_prefix_in_use_ = false;      // SentencePiece adds "▁" itself (legacy mode)
  std::vector<std::string> pieces_;       // id -> piece
  std::vector<PieceKind> kinds_;          // id -> kind
  std::vector<uint8_t> byte_values_;      // id -> byte, for kByte pieces
  int32_t bos_id_ = -1;
  int32_t unk_id_ = -1;
  int32_t space_piece_id_ = -1;           // the piece "▁", or -1
  size_t unk_prefix_length_ = 0;          // ids SentencePiece gives for the unk token's text
  std::vector<int32_t> eos_ids_;
  std::unordered_set<int32_t> special_ids_;
  std::vector<std::pair<std::string, int32_t>> split_tokens_;  // longest first
  bool split_first_byte_[256] = {};
};

absl::StatusOr<std::unique_ptr<Tokenizer>> SpmTokenizer::Create(const SpmApi* api,
                                                                const std::string& model_path,
                                                                SpmConfig config) {
  char* error = nullptr;
  FluteSpm* handle = api->create(model_path.c_str(), config.legacy ? 0 : 1, &error);
  if (handle == nullptr) {
    std::string message = error ? error : "unknown error";
    api->free(error);
    return absl::InvalidArgumentError(message);
  }
  std::unique_ptr<SpmTokenizer> tokenizer(new SpmTokenizer(api, handle, std::move(config)));
  RETURN_IF_ERROR(tokenizer->Initialize(model_path));
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

absl::Status SpmTokenizer::Initialize(const std::string& model_path) {
  FluteSpm* h = handle_.get();
  const int32_t size = api_->vocab_size(h);
  if (size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(model_path, ": empty vocabulary"));
  }
  pieces_.resize(size);
  kinds_.resize(size);
  byte_values_.assign(size, 0);
  for (int32_t id = 0; id < size; ++id) {
    size_t length = 0;
    const char* piece = api_->id_to_piece(h, id, &length);
    pieces_[id].assign(piece ? piece : "", length);
    kinds_[id] = api_->is_control(h, id)   ? PieceKind::kControl
                 : api_->is_byte(h, id)    ? PieceKind::kByte
                 : api_->is_unknown(h, id) ? PieceKind::kUnknown
                 : api_->is_unused(h, id)  ? PieceKind::kUnused
                                           : PieceKind::kNormal;
    if (kinds_[id] == PieceKind::kByte) {  // "<0xAB>"
      byte_values_[id] = static_cast<uint8_t>(std::strtoul(pieces_[id].c_str() + 3, nullptr, 16));
    }
  }
  dummy_prefix_in_use_ = config_.legacy && api_->model_add_dummy_prefix(h);
  unk_id_ = api_->unk_id(h);
  bos_id_ = api_->bos_id(h);
  if (config_.bos_token && InVocab(PieceToId(*config_.bos_token)) &&
      pieces_[PieceToId(*config_.bos_token)] == *config_.bos_token) {
    bos_id_ = PieceToId(*config_.bos_token);
  }
  const int32_t space_id = PieceToId(kSpaceSymbol);
  space_piece_id_ = (InVocab(space_id) && pieces_[space_id] == kSpaceSymbol) ? space_id : -1;

  // Special tokens as transformers sees them: BOS, EOS, UNK, PAD, additional/added tokens.
  for (int32_t id : {bos_id_, api_->eos_id(h), unk_id_, api_->pad_id(h)}) {
    if (InVocab(id)) AddSpecialToken(pieces_[id]);
  }
  for (const auto& token : {config_.bos_token, config_.eos_token, config_.unk_token,
                            config_.pad_token}) {
    if (token) AddSpecialToken(*token);
  }
  for (const std::string& token : config_.extra_special_tokens) AddSpecialToken(token);
  std::sort(split_tokens_.begin(), split_tokens_.end(),
            [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });

  // EOS: the model's, tokenizer_config's and generation_config's, without repeats.
  const auto add_eos = [&](int64_t id) {
    if (id >= 0 && id < size && std::find(eos_ids_.begin(), eos_ids_.end(), id) == eos_ids_.end())
      eos_ids_.push_back(static_cast<int32_t>(id));
  };
  if (config_.eos_token) {  // first: it is the EOS that add_eos_token appends
    const int32_t id = PieceToId(*config_.eos_token);
    if (InVocab(id) && pieces_[id] == *config_.eos_token) add_eos(id);
  }
  add_eos(api_->eos_id(h));
  for (int64_t id : config_.generation_eos_ids) {
    if (id < 0 || id >= size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "generation_config.json: eos_token_id ", id, " is outside the vocabulary [0, ", size,
          ") of ", model_path));
    }
    add_eos(id);
  }

  if (InVocab(unk_id_)) {
    ASSIGN_OR_RETURN(std::vector<int32_t> unk_ids, SpEncode(pieces_[unk_id_]));
    unk_prefix_length_ = unk_ids.size();
  }
  return absl::OkStatus();
}

void SpmTokenizer::AddSpecialToken(const std::string& token) {
  if (token.empty()) return;
  const int32_t id = PieceToId(token);
  if (!InVocab(id) || pieces_[id] != token) return;  // not a piece of this model
  special_ids_.insert(id);
  for (const auto& existing : split_tokens_) {
    if (existing.first == token) return;
  }
  split_tokens_.emplace_back(token, id);
  split_first_byte_[static_cast<uint8_t>(token[0])] = true;
}

absl::StatusOr<std::vector<int32_t>> SpmTokenizer::SpEncode(std::string_view text) const {
  int32_t* raw_ids = nullptr;
  size_t count = 0;
  char* error = nullptr;
  if (api_->encode(handle_.get(), text.data(), text.size(), &raw_ids, &count, &error) != 0) {
    std::string message = error ? error : "SentencePiece encode failed";
    api_->free(error);
    return absl::InternalError(message);
  }
  std::vector<int32_t> ids(raw_ids, raw_ids + count);
  api_->free(raw_ids);
  return ids;
}

absl::Status SpmTokenizer::EncodeChunk(std::string_view chunk, std::vector<int32_t>* ids) const {
  if (chunk.empty()) return absl::OkStatus();
  const bool keep_leading_space =
      !config_.legacy && (StartsWith(chunk, kSpaceSymbol) || chunk[0] == ' ');
  if (!keep_leading_space) {
    ASSIGN_OR_RETURN(std::vector<int32_t> piece_ids, SpEncode(chunk));
    ids->insert(ids->end(), piece_ids.begin(), piece_ids.end());
    return absl::OkStatus();
  }
  // transformers encodes "<unk>" + chunk and drops the unk text's ids, so that SentencePiece
  // keeps the chunk's leading "▁" even where its normalizer would strip leading whitespace.
  const std::string prefixed = (InVocab(unk_id_) ? pieces_[unk_id_] : std::string()) + std::string(chunk);
  ASSIGN_OR_RETURN(std::vector<int32_t> piece_ids, SpEncode(prefixed));
  const size_t drop = std::min(unk_prefix_length_, piece_ids.size());
  ids->insert(ids->end(), piece_ids.begin() + drop, piece_ids.end());
  return absl::OkStatus();
}

absl::Status SpmTokenizer::EncodeSplittingSpecials(std::string_view text,
                                                   std::vector<int32_t>* ids) const {
  size_t chunk_begin = 0, pos = 0;
  while (pos < text.size()) {
    int32_t matched_id = -1;
    size_t matched_length = 0;
    if (split_first_byte_[static_cast<uint8_t>(text[pos])]) {
      for (const auto& [token, id] : split_tokens_) {
        if (text.compare(pos, token.size(), token) == 0) {
          matched_id = id;
          matched_length = token.size();
          break;  // longest first
        }
      }
    }
    if (matched_id < 0) {
      ++pos;
      continue;
    }
    RETURN_IF_ERROR(EncodeChunk(text.substr(chunk_begin, pos - chunk_begin), ids));
    ids->push_back(matched_id);
    pos += matched_length;
    chunk_begin = pos;
  }
  return EncodeChunk(text.substr(chunk_begin), ids);
}

absl::StatusOr<std::vector<int32_t>> SpmTokenizer::Encode(std::string_view text,
                                                          bool add_special_tokens) const {
  std::vector<int32_t> ids;
  if (add_special_tokens && config_.add_bos && InVocab(bos_id_)) ids.push_back(bos_id_);
  const size_t body_begin = ids.size();
  if (!text.empty()) {
    if (config_.legacy) {
      RETURN_IF_ERROR(EncodeSplittingSpecials(text, &ids));
    } else {
      // LlamaTokenizer.tokenize with legacy=false: literal "▁" become spaces, one "▁" is
      // prepended, and dropped again when a special token follows it directly.
      std::string prepared = ReplaceAll(text, kSpaceSymbol, " ");
      if (config_.add_prefix_space) prepared.insert(0, kSpaceSymbol);
      RETURN_IF_ERROR(EncodeSplittingSpecials(prepared, &ids));
      if (ids.size() - body_begin > 1 && ids[body_begin] == space_piece_id_ &&
          special_ids_.count(ids[body_begin + 1]) > 0) {
        ids.erase(ids.begin() + body_begin);
      }
    }
  }
  // eos_ids_[0] is tokenizer_config's eos_token when it names a piece, else the model's EOS.
  if (add_special_tokens && config_.add_eos && !eos_ids_.empty()) ids.push_back(eos_ids_[0]);
  return ids;
}

std::string SpmTokenizer::DecodeRun(
    const std::vector<std::pair<int32_t, std::string>>& run) const {
  std::string out, pending_bytes;
  bool first = true;
  for (const auto& [id, text] : run) {
    if (kinds_[id] == PieceKind::kByte) {
      pending_bytes.push_back(static_cast<char>(byte_values_[id]));
      first = false;
      continue;
    }
    AppendBytesAsUtf8(pending_bytes, &out);
    pending_bytes.clear();
    if (kinds_[id] == PieceKind::kControl) continue;  // invisible in SentencePiece's decode
    std::string_view piece = text;
    if (first && dummy_prefix_in_use_ && StartsWith(piece, kSpaceSymbol)) {
      piece.remove_prefix(sizeof(kSpaceSymbol) - 1);
    }
    out += ReplaceAll(piece, kSpaceSymbol, " ");
    first = false;
  }
  AppendBytesAsUtf8(pending_bytes, &out);
  return out;
}

std::string SpmTokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  // A port of LlamaTokenizer.convert_tokens_to_string over the kept tokens.
  std::vector<std::pair<int32_t, std::string>> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special_tokens && special_ids_.count(id) > 0) continue;
    tokens.emplace_back(id, InVocab(id) ? pieces_[id] : std::string(kReplacementChar));
  }
  if (tokens.empty()) return "";
  if (config_.add_prefix_space && InVocab(tokens[0].first) &&
      StartsWith(tokens[0].second, kSpaceSymbol)) {
    tokens[0].second.erase(0, sizeof(kSpaceSymbol) - 1);  // the "▁" Encode prepended
  }
  std::string out;
  std::vector<std::pair<int32_t, std::string>> run;
  bool previous_special = false;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto& [id, text] = tokens[i];
    if (!InVocab(id)) {  // out of range: shown, never silently dropped
      out += DecodeRun(run) + text;
      run.clear();
      continue;
    }
    if (special_ids_.count(id) > 0) {
      if (!previous_special && i != 0 && config_.legacy) out += " ";
      out += DecodeRun(run) + text;
      run.clear();
      previous_special = true;
    } else {
      if (previous_special && i == 1 && config_.add_prefix_space &&
          !StartsWith(text, kSpaceSymbol)) {
        out += " ";
      }
      run.push_back(tokens[i]);
      previous_special = false;
    }
  }
  out += DecodeRun(run);
  return out;
}

std::string SpmTokenizer::TokenBytes(int32_t id) const {
  if (!InVocab(id)) return kReplacementChar;
  switch (kinds_[id]) {
    case PieceKind::kByte:
      return std::string(1, static_cast<char>(byte_values_[id]));
    case PieceKind::kControl:
    case PieceKind::kUnknown:
      return pieces_[id];
    default:
      if (special_ids_.count(id) > 0) return pieces_[id];
      return ReplaceAll(pieces_[id], kSpaceSymbol, " ");
  }
}

}  // namespace

std::vector<std::string> SpmPluginSearchPaths() {
  return PluginSearchPaths("FLUTE_SPM_PLUGIN", "libflute_spm.so");
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSpmTokenizer(const std::string& model_path,
                                                            const std::string& config_dir) {
  if (access(model_path.c_str(), R_OK) != 0) {
    return absl::NotFoundError(
        absl::StrCat("SentencePiece model '", model_path, "' does not exist or is unreadable"));
  }
  ASSIGN_OR_RETURN(SpmConfig config, ReadConfig(config_dir));
  ASSIGN_OR_RETURN(const SpmApi* api, GetSpmApi());
  return SpmTokenizer::Create(api, model_path, std::move(config));
}

}  // namespace flute
