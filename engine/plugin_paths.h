// Where the engine looks for the shared libraries it loads with dlopen (libflute_spm.so,
// libflute_cuda.so): the path in an environment variable, then next to the executable,
// then in ../lib beside it (the build tree and the installed layout).
#pragma once

#include <string>
#include <vector>

namespace flute {

// The directory of the running executable, or "" when /proc/self/exe is unreadable.
std::string ExecutableDir();

// [$env_var if set, <exe dir>/file_name, <exe dir>/../lib/file_name].
std::vector<std::string> PluginSearchPaths(const char* env_var, const std::string& file_name);

}  // namespace flute
