#include "tests/test_util.h"

#include <cstdlib>
#include <filesystem>
#include <random>

namespace flute::testing {

std::string SharedDir() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("FLUTE_SHARED_DIR"); env != nullptr && *env != '\0') {
    return fs::is_directory(env) ? std::string(env) : std::string();
  }
  const fs::path candidate = fs::path(FLUTE_SOURCE_DIR) / ".." / "shared";
  return fs::is_directory(candidate / "models") ? fs::canonical(candidate).string() : std::string();
}

std::string TestDataPath(const std::string& relative) {
  return (std::filesystem::path(FLUTE_SOURCE_DIR) / "tests" / relative).string();
}

std::string MakeTempDir(const std::string& prefix) {
  namespace fs = std::filesystem;
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fs::path dir = fs::temp_directory_path() / (prefix + "-" + std::to_string(rd()));
    if (fs::create_directory(dir)) return dir.string();
  }
  return fs::temp_directory_path().string();
}

}  // namespace flute::testing
