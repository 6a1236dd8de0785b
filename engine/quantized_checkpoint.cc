#include "engine/quantized_checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/dtype.h"
#include "engine/lut_linear.h"
#include "engine/model_config.h"
#include "engine/perplexity.h"
#include "engine/quant_calibration.h"
#include "engine/quant_tables.h"
#include "engine/safetensors.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace flute {
namespace fs = std::filesystem;
namespace {

constexpr char kOutputFileName[] = "model.safetensors";
constexpr const char* kTableTensorName = kModelTableName;  // the model-level table LoadLutLinear reads
const char* const kDefaultModules[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

// A weight matrix to quantize: its module prefix ("model.layers.0.mlp.up_proj"), the
// module kind ("up_proj") and the source tensor (`<prefix>.weight`, or the embedding when
// a tied LM head is quantized).
struct PlannedMatrix {
  std::string prefix;
  const TensorView* source = nullptr;
  lut::LutShape shape;
};

// One tensor of the output file; offset is relative to the start of the data section.
struct OutputTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t num_bytes = 0;
  uint64_t offset = 0;
};

struct Plan {
  std::vector<PlannedMatrix> matrices;
  std::vector<const TensorView*> copied;
  std::vector<std::string> modules;
  std::map<std::string, OutputTensor> outputs;  // by name
  uint64_t data_bytes = 0;
  int64_t input_bytes = 0;
};

bool IsFloat(DType dtype) { return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16; }

// The module kind of a projection weight name ("model.layers.3.mlp.up_proj.weight" -> "up_proj"),
// empty for anything else.
std::string ProjectionKind(const std::string& name) {
  if (!absl::StartsWith(name, "model.layers.") || !absl::EndsWith(name, ".weight")) return "";
  const std::string prefix = name.substr(0, name.size() - 7);
  const std::string kind = prefix.substr(prefix.rfind('.') + 1);
  for (const char* module : kDefaultModules) {
    if (kind == module) return kind;
  }
  return "";
}

absl::Status AddMatrix(Plan& plan, const std::string& prefix, const TensorView* source, int bits, int group_size) {
  if (!IsFloat(source->dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", source->name, " in ", source->file, " has dtype ", std::string(DTypeName(source->dtype)),
        "; only F32, F16 and BF16 weights can be quantized"));
  }
  if (source->shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", source->name, " has shape ", source->ShapeString(),
                                                   "; a weight matrix [out_features, in_features] was expected"));
  }
  const lut::LutShape shape{source->shape[0], source->shape[1], bits, group_size};
  RETURN_IF_ERROR(CheckQuantizable(shape, "tensor " + source->name));
  plan.matrices.push_back({prefix, source, shape});
  plan.input_bytes += static_cast<int64_t>(source->num_bytes);
  return absl::OkStatus();
}

void AddOutput(Plan& plan, const std::string& name, DType dtype, std::vector<int64_t> shape) {
  uint64_t count = 1;
  for (int64_t dim : shape) count *= static_cast<uint64_t>(dim);
  plan.outputs[name] = {name, dtype, std::move(shape), count * DTypeSize(dtype), 0};
}

// Decides what is quantized and what is copied, checks every matrix before anything is
// written, and lays the output out: tensors sorted by element size (largest first), so
// that every tensor starts aligned to its element size without gaps.
absl::StatusOr<Plan> MakePlan(const ModelConfig& config, const TensorStore& store, const QuantizeOptions& options) {
  Plan plan;
  plan.modules.assign(std::begin(kDefaultModules), std::end(kDefaultModules));
  if (options.quantize_lm_head) plan.modules.push_back("lm_head");
  for (const auto& [name, view] : store.tensors()) {
    const bool lm_head = name == "lm_head.weight" && options.quantize_lm_head && !config.tie_word_embeddings;
    if (!ProjectionKind(name).empty() || lm_head) {
      RETURN_IF_ERROR(AddMatrix(plan, name.substr(0, name.size() - 7), view, options.bits, options.group_size));
    } else if (!(name == "lm_head.weight" && options.quantize_lm_head)) {
      plan.copied.push_back(view);
      plan.input_bytes += static_cast<int64_t>(view->num_bytes);
    }
  }
  if (options.quantize_lm_head && config.tie_word_embeddings) {
    // A tied head is quantized from the embedding, which stays as it is for the lookup.
    const TensorView* embed = store.Find("model.embed_tokens.weight");
    if (embed == nullptr) return absl::InvalidArgumentError("checkpoint has no model.embed_tokens.weight");
    RETURN_IF_ERROR(AddMatrix(plan, "lm_head", embed, options.bits, options.group_size));
  }
  if (plan.matrices.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no weight matrix of ", options.input_dir,
                     " is a LLaMA projection (model.layers.N.self_attn.q_proj.weight, ...); nothing to quantize"));
  }
  for (const TensorView* view : plan.copied) AddOutput(plan, view->name, view->dtype, view->shape);
  for (const PlannedMatrix& m : plan.matrices) {
    AddOutput(plan, m.prefix + ".qweight", DType::kU8, {static_cast<int64_t>(lut::PackedCodeBytes(m.shape))});
    AddOutput(plan, m.prefix + ".scales", DType::kF16, {m.shape.n, m.shape.k / m.shape.group_size});
  }
  AddOutput(plan, kTableTensorName, DType::kF32, {int64_t{1} << options.bits});
  std::vector<OutputTensor*> order;
  for (auto& [name, tensor] : plan.outputs) order.push_back(&tensor);
  std::stable_sort(order.begin(), order.end(), [](const OutputTensor* a, const OutputTensor* b) {
    return DTypeSize(a->dtype) > DTypeSize(b->dtype);
  });
  for (OutputTensor* tensor : order) {
    tensor->offset = plan.data_bytes;
    plan.data_bytes += tensor->num_bytes;
  }
  return plan;
}

std::string HeaderText(const Plan& plan, const QuantizeOptions& options) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}, {"flute_quantization", options.method}};
  for (const auto& [name, tensor] : plan.outputs) {
    header[name] = {{"dtype", std::string(DTypeName(tensor.dtype))},
                    {"shape", tensor.shape},
                    {"data_offsets", {tensor.offset, tensor.offset + tensor.num_bytes}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  return text;
}

// Drops the pages of [data, data + bytes) of a read-only file mapping from this process's
// resident set (they are re-read from the file if touched again).
void ReleasePages(const void* data, size_t bytes) {
  const long page = sysconf(_SC_PAGESIZE);
  uintptr_t begin = reinterpret_cast<uintptr_t>(data) / page * page;
  uintptr_t end = reinterpret_cast<uintptr_t>(data) + bytes;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

class OutputFile {
 public:
  ~OutputFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  absl::Status Open(const std::string& path, uint64_t data_start) {
    path_ = path;
    data_start_ = data_start;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd_ < 0) return absl::PermissionDeniedError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
    return absl::OkStatus();
  }
  // Writes at an absolute file position.
  absl::Status WriteAt(uint64_t position, const void* data, size_t bytes) {
    const char* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t n = ::pwrite(fd_, p, std::min<size_t>(bytes, size_t{1} << 26), static_cast<off_t>(position));
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::DataLossError(absl::StrCat("error writing ", path_, ": ", std::strerror(errno)));
      }
      p += n;
      position += static_cast<uint64_t>(n);
      bytes -= static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }
  absl::Status WriteTensor(const OutputTensor& tensor, const void* data) {
    return WriteAt(data_start_ + tensor.offset, data, tensor.num_bytes);
  }
  absl::Status Close() {
    const int result = ::close(fd_);
    fd_ = -1;
    if (result != 0) return absl::DataLossError(absl::StrCat("error closing ", path_, ": ", std::strerror(errno)));
    return absl::OkStatus();
  }

 private:
  std::string path_;
  uint64_t data_start_ = 0;
  int fd_ = -1;
};

absl::Status CheckOutputDirectory(const QuantizeOptions& options) {
  std::error_code error;
  if (!fs::exists(options.output_dir, error)) return absl::OkStatus();
  if (!options.force) {
    return absl::AlreadyExistsError(absl::StrCat("output directory ", options.output_dir,
                                                 " already exists; pass --force to replace it"));
  }
  if (!fs::is_directory(options.output_dir, error)) {
    return absl::AlreadyExistsError(absl::StrCat(options.output_dir, " exists and is not a directory"));
  }
  const fs::path in = fs::weakly_canonical(options.input_dir, error);
  const fs::path out = fs::weakly_canonical(options.output_dir, error);
  const std::string in_text = in.string() + "/", out_text = out.string() + "/";
  if (absl::StartsWith(in_text, out_text)) {
    return absl::InvalidArgumentError(absl::StrCat("output directory ", options.output_dir,
                                                   " holds the input checkpoint; choose another --out"));
  }
  return absl::OkStatus();
}

absl::Status PrepareOutputDirectory(const QuantizeOptions& options) {
  std::error_code error;
  if (fs::exists(options.output_dir, error)) fs::remove_all(options.output_dir, error);
  if (error) return absl::PermissionDeniedError(absl::StrCat("cannot remove ", options.output_dir, ": ", error.message()));
  fs::create_directories(options.output_dir, error);
  if (error) return absl::PermissionDeniedError(absl::StrCat("cannot create ", options.output_dir, ": ", error.message()));
  return absl::OkStatus();
}

absl::Status CopyTokenizerFiles(const QuantizeOptions& options) {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(options.input_dir, error)) {
    const std::string name = entry.path().filename().string();
    const bool wanted = absl::StartsWith(name, "tokenizer") || name == "special_tokens_map.json" ||
                        name == "generation_config.json" || name == "added_tokens.json" ||
                        absl::StartsWith(name, "chat_template");
    if (!wanted || !entry.is_regular_file()) continue;
    fs::copy_file(entry.path(), fs::path(options.output_dir) / name, fs::copy_options::overwrite_existing, error);
    if (error) return absl::PermissionDeniedError(absl::StrCat("cannot copy ", entry.path().string(), ": ", error.message()));
  }
  return absl::OkStatus();
}

absl::Status WriteConfig(const QuantizeOptions& options, const Plan& plan, const std::string& method_name) {
  const std::string in_path = (fs::path(options.input_dir) / "config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadTextFile(in_path));
  nlohmann::json config = nlohmann::json::parse(text, nullptr, false);
  if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(in_path, ": not a JSON object"));
  nlohmann::json quant = {{"method", method_name},          {"bits", options.bits},
                          {"group_size", options.group_size}, {"format_version", lut::kLayoutVersion},
                          {"table_per_layer", false},         {"modules", plan.modules}};
  if (absl::StartsWith(options.method, "table:")) quant["table_source"] = options.method.substr(6);
  config["quantization_config"] = quant;
  const std::string out_path = (fs::path(options.output_dir) / "config.json").string();
  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  out << config.dump(2) << "\n";
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("error writing ", out_path));
  return absl::OkStatus();
}

absl::Status CheckOptions(const QuantizeOptions& options) {
  if (options.bits < 2 || options.bits > 4) {
    return absl::InvalidArgumentError(absl::StrCat("--bits must be 2, 3 or 4, got ", options.bits));
  }
  const int g = options.group_size;
  if (g != 32 && g != 64 && g != 128 && g != 256) {
    return absl::InvalidArgumentError(absl::StrCat("--group-size must be 32, 64, 128 or 256, got ", g));
  }
  if (options.method == "nfl" && options.calib_tokens.empty()) {
    return absl::InvalidArgumentError("--method nfl learns its scales on calibration data: pass --calib-tokens FILE");
  }
  if (options.method != "nfl" && !options.calib_tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--calib-tokens is only used by --method nfl, not ", options.method));
  }
  return absl::OkStatus();
}

// Learned scales for every projection (NFL), by module prefix.
absl::StatusOr<std::map<std::string, QuantizedMatrix>> Calibrate(
    const QuantizeOptions& options, const ModelConfig& config, const TensorStore& store,
    const std::vector<float>& table, const std::function<void(const QuantizeProgress&)>& progress) {
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens, ReadTokenFile(options.calib_tokens, options.calib_tokens_dtype));
  CalibrationOptions calibration;
  calibration.max_windows = options.calib_windows;
  auto quantize = [&table](const float* w, const lut::LutShape& shape, const std::vector<float>& xtx) {
    return QuantizeWithHessian(w, shape, table, xtx.data());
  };
  auto report = [&](int done, int total) {
    if (progress) progress({done, total, "calibrating", ""});
  };
  return QuantizeWithCalibration(config, store, tokens, options.bits, options.group_size, quantize, calibration,
                                 report);
}

}  // namespace

absl::StatusOr<std::vector<float>> TableForMethod(const std::string& method, int bits) {
  if (method == "nf" || method == "nfl") return NormalFloatTable(bits);
  if (method == "uniform") return UniformTable(bits);
  if (absl::StartsWith(method, "table:")) {
    const std::string path = method.substr(6);
    if (path.empty()) return absl::InvalidArgumentError("--method table:FILE needs a file name after \"table:\"");
    return LoadTableFile(path, bits);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--method must be nf, nfl, uniform or table:FILE, got \"", method, "\""));
}

absl::Status QuantizeCheckpoint(const QuantizeOptions& options,
                                const std::function<void(const QuantizeProgress&)>& progress) {
  RETURN_IF_ERROR(CheckOptions(options));
  ASSIGN_OR_RETURN(std::vector<float> table, TableForMethod(options.method, options.bits));
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.input_dir));
  if (config.quantization.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(options.input_dir, " is already quantized (",
                                                   config.quantization->method, config.quantization->bits,
                                                   "); quantize the original 16-bit checkpoint"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<TensorStore> store, TensorStore::OpenDirectory(options.input_dir));
  ASSIGN_OR_RETURN(Plan plan, MakePlan(config, *store, options));
  RETURN_IF_ERROR(CheckOutputDirectory(options));

  std::map<std::string, QuantizedMatrix> learned;
  if (options.method == "nfl") {
    ASSIGN_OR_RETURN(learned, Calibrate(options, config, *store, table, progress));
  }

  RETURN_IF_ERROR(PrepareOutputDirectory(options));
  const std::string header = HeaderText(plan, options);
  OutputFile out;
  RETURN_IF_ERROR(out.Open((fs::path(options.output_dir) / kOutputFileName).string(), 8 + header.size()));
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  RETURN_IF_ERROR(out.WriteAt(0, length, 8));
  RETURN_IF_ERROR(out.WriteAt(8, header.data(), header.size()));
  RETURN_IF_ERROR(out.WriteTensor(plan.outputs.at(kTableTensorName), table.data()));

  QuantizeProgress state{0, plan.input_bytes, "writing", ""};
  constexpr size_t kChunk = size_t{1} << 26;
  for (const TensorView* view : plan.copied) {
    const OutputTensor& tensor = plan.outputs.at(view->name);
    for (size_t done = 0; done < view->num_bytes; done += kChunk) {
      const size_t bytes = std::min(kChunk, view->num_bytes - done);
      const char* chunk = static_cast<const char*>(view->data) + done;
      RETURN_IF_ERROR(out.WriteAt(8 + header.size() + tensor.offset + done, chunk, bytes));
      ReleasePages(chunk, bytes);
    }
    state.bytes_done += static_cast<int64_t>(view->num_bytes);
    state.tensor = view->name;
    if (progress) progress(state);
  }
  for (const PlannedMatrix& m : plan.matrices) {
    QuantizedMatrix q;
    auto it = learned.find(m.prefix);
    if (it != learned.end()) {
      q = std::move(it->second);
      learned.erase(it);
    } else {
      std::vector<float> w(static_cast<size_t>(m.shape.n * m.shape.k));
      ConvertToFloat(m.source->dtype, m.source->data, w.size(), w.data());
      // NFL without calibration data for this matrix (the LM head): MSE-optimal scales.
      q = options.method == "nfl" ? QuantizeWeightedScales(w.data(), m.shape, table, nullptr)
                                  : QuantizeRtn(w.data(), m.shape, table);
    }
    ReleasePages(m.source->data, m.source->num_bytes);
    std::vector<uint8_t> packed(lut::PackedCodeBytes(m.shape));
    lut::PackCodes(m.shape, q.codes.data(), packed.data());
    RETURN_IF_ERROR(out.WriteTensor(plan.outputs.at(m.prefix + ".qweight"), packed.data()));
    RETURN_IF_ERROR(out.WriteTensor(plan.outputs.at(m.prefix + ".scales"), q.scales.data()));
    state.bytes_done += static_cast<int64_t>(m.source->num_bytes);
    state.tensor = m.prefix;
    if (progress) progress(state);
  }
  RETURN_IF_ERROR(out.Close());
  RETURN_IF_ERROR(CopyTokenizerFiles(options));
  const std::string method_name = absl::StartsWith(options.method, "table:") ? "table" : options.method;
  // Last, so that an interrupted run leaves no loadable checkpoint behind.
  return WriteConfig(options, plan, method_name);
}

absl::StatusOr<QuantizedMatrix> ReadQuantizedModule(const std::string& checkpoint_dir, const std::string& prefix) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(checkpoint_dir));
  if (!config.quantization.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(checkpoint_dir, " is not a quantized checkpoint"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<TensorStore> store, TensorStore::OpenDirectory(checkpoint_dir));
  const TensorView* qweight = store->Find(prefix + ".qweight");
  const TensorView* scales = store->Find(prefix + ".scales");
  const TensorView* table = store->Find(config.quantization->table_per_layer ? prefix + ".table" : kTableTensorName);
  if (!qweight || !scales || !table || scales->shape.size() != 2 || scales->dtype != DType::kF16 ||
      qweight->dtype != DType::kU8 || table->dtype != DType::kF32) {
    return absl::NotFoundError(absl::StrCat(checkpoint_dir, " has no complete quantized module ", prefix));
  }
  const int g = config.quantization->group_size;
  QuantizedMatrix q;
  q.shape = {scales->shape[0], scales->shape[1] * g, config.quantization->bits, g};
  if (qweight->num_bytes != lut::PackedCodeBytes(q.shape) ||
      table->num_elements() != (int64_t{1} << q.shape.bits)) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, ": qweight or table size does not match its scales"));
  }
  q.codes.resize(static_cast<size_t>(q.shape.n * q.shape.k));
  const uint8_t* packed = static_cast<const uint8_t*>(qweight->data);
  std::vector<uint8_t> upgraded;
  if (config.quantization->format_version == 1) {
    upgraded.assign(packed, packed + qweight->num_bytes);
    lut::UpgradeLayoutFromVersion1(q.shape, upgraded.data());
    packed = upgraded.data();
  }
  lut::UnpackCodes(q.shape, packed, q.codes.data());
  const uint16_t* s = static_cast<const uint16_t*>(scales->data);
  q.scales.assign(s, s + scales->num_elements());
  const float* t = static_cast<const float*>(table->data);
  q.table.assign(t, t + table->num_elements());
  return q;
}

}  // namespace flute
