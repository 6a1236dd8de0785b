#include "engine/plugin_paths.h"

#include <climits>
#include <cstdlib>

#include <unistd.h>

namespace flute {

std::string ExecutableDir() {
  char buffer[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return "";
  std::string path(buffer, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

std::vector<std::string> PluginSearchPaths(const char* env_var, const std::string& file_name) {
  std::vector<std::string> paths;
  if (const char* env = std::getenv(env_var); env != nullptr && *env != '\0') paths.push_back(env);
  const std::string exe_dir = ExecutableDir();
  if (!exe_dir.empty()) {
    paths.push_back(exe_dir + "/" + file_name);
    paths.push_back(exe_dir + "/../lib/" + file_name);
  }
  return paths;
}

}  // namespace flute
