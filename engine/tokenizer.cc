// LoadTokenizer: picks the tokenizer a model directory (or file) ships.
#include "engine/tokenizer.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "engine/hf_tokenizer.h"
#include "engine/spm_tokenizer.h"

namespace flute {
namespace {

bool IsDirectory(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool IsFile(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

std::string ParentDir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  if (IsDirectory(path)) {
    const std::string json_path = path + "/tokenizer.json";
    const std::string model_path = path + "/tokenizer.model";
    if (IsFile(json_path)) return LoadHfTokenizer(json_path, path);
    if (IsFile(model_path)) return LoadSpmTokenizer(model_path, path);
    return absl::NotFoundError(absl::StrCat("model directory '", path,
                                            "' has neither tokenizer.json nor tokenizer.model"));
  }
  if (!IsFile(path)) {
    return absl::NotFoundError(absl::StrCat("tokenizer path '", path, "' does not exist"));
  }
  // A file: tokenizer.json (by name or extension), otherwise a SentencePiece model. Its
  // directory's tokenizer_config.json / generation_config.json apply.
  if (EndsWith(path, ".json")) return LoadHfTokenizer(path, ParentDir(path));
  return LoadSpmTokenizer(path, ParentDir(path));
}

}  // namespace flute
