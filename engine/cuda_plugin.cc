// The public CUDA-backend API (engine/cuda_backend.h), served by the plugin libflute_cuda.so
// loaded with dlopen on first use (engine/cuda_plugin.h says why).
#include <dlfcn.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "engine/cuda_backend.h"
#include "engine/cuda_plugin.h"
#include "engine/plugin_paths.h"

namespace flute {
namespace {

struct CudaPlugin {
  FluteCudaCreateBackendFn create = nullptr;
  FluteCudaCreateRandomBackendFn create_random = nullptr;
  FluteCudaAsBenchFn as_bench = nullptr;
};

absl::StatusOr<CudaPlugin> LoadPlugin() {
  std::string tried;
  for (const std::string& path : PluginSearchPaths("FLUTE_CUDA_PLUGIN", "libflute_cuda.so")) {
    void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      const char* why = dlerror();
      absl::StrAppend(&tried, "\n  ", path, ": ", why ? why : "not loadable");
      continue;
    }
    const auto version = reinterpret_cast<FluteCudaPluginVersionFn>(dlsym(library, "flute_cuda_plugin_version"));
    CudaPlugin plugin;
    plugin.create = reinterpret_cast<FluteCudaCreateBackendFn>(dlsym(library, "flute_cuda_create_backend"));
    plugin.create_random =
        reinterpret_cast<FluteCudaCreateRandomBackendFn>(dlsym(library, "flute_cuda_create_random_backend"));
    plugin.as_bench = reinterpret_cast<FluteCudaAsBenchFn>(dlsym(library, "flute_cuda_as_bench"));
    if (!version || !plugin.create || !plugin.create_random || !plugin.as_bench) {
      return absl::FailedPreconditionError(absl::StrCat(path, " is not a flute CUDA plugin (entry points missing)"));
    }
    if (version() != kCudaPluginVersion) {
      return absl::FailedPreconditionError(absl::StrCat(path, " is plugin version ", version(), ", this flute needs ",
                                                        kCudaPluginVersion, ": rebuild both together"));
    }
    return plugin;
  }
  return absl::UnimplementedError(absl::StrCat(
      "device \"cuda\": the CUDA engine libflute_cuda.so was not found (it is built only when nvcc is "
      "present; set FLUTE_CUDA_PLUGIN to its path). Tried:", tried));
}

const absl::StatusOr<CudaPlugin>& Plugin() {
  static const absl::StatusOr<CudaPlugin> plugin = LoadPlugin();  // loaded once per process
  return plugin;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(ModelConfig config,
                                                           std::unique_ptr<ModelWeights> weights,
                                                           const BackendOptions& options) {
  if (!Plugin().ok()) return Plugin().status();
  absl::StatusOr<std::unique_ptr<Backend>> out = absl::InternalError("CUDA plugin returned nothing");
  Plugin()->create(&config, weights.release(), &options, &out);
  return out;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateRandomCudaBackend(const ModelConfig& config,
                                                                 const BackendOptions& options,
                                                                 uint64_t seed) {
  if (!Plugin().ok()) return Plugin().status();
  absl::StatusOr<std::unique_ptr<Backend>> out = absl::InternalError("CUDA plugin returned nothing");
  Plugin()->create_random(&config, &options, seed, &out);
  return out;
}

CudaBenchHooks* AsCudaBench(Backend* backend) {
  return Plugin().ok() ? Plugin()->as_bench(backend) : nullptr;
}

}  // namespace flute
