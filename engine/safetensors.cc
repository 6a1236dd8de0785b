#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace flute {
namespace {

using Json = nlohmann::json;

constexpr char kSingleFileName[] = "model.safetensors";
constexpr char kIndexFileName[] = "model.safetensors.index.json";
constexpr char kMetadataKey[] = "__metadata__";

// Reads a non-negative JSON integer into `out`; false when `value` is anything else.
bool ReadNonNegative(const Json& value, uint64_t* out) {
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
    return true;
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(value.get<int64_t>());
    return true;
  }
  return false;
}

absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view what) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), ": malformed JSON: ", e.what()));
  }
}

// Validates one header entry {"dtype", "shape", "data_offsets"} against a data region of
// `data_size` bytes and fills `view` (data pointer relative to `data_begin`).
absl::Status ParseTensorEntry(const std::string& path, const std::string& name, const Json& entry,
                              const char* data_begin, uint64_t data_size, TensorView* view) {
  const std::string where = absl::StrCat(path, ": tensor \"", name, "\"");
  if (!entry.is_object())
    return absl::InvalidArgumentError(absl::StrCat(where, ": entry is not an object"));
  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"dtype\" missing or not a string"));
  }
  ASSIGN_OR_RETURN(view->dtype, ParseDType(dtype_it->get<std::string>(), where));

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"shape\" missing or not an array"));
  }
  uint64_t num_elements = 1;
  for (const Json& dim : *shape_it) {
    uint64_t size = 0;
    if (!ReadNonNegative(dim, &size) ||
        size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": shape ", shape_it->dump(), " must hold non-negative integers"));
    }
    if (size != 0 && num_elements > std::numeric_limits<uint64_t>::max() / 8 / size) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": shape ", shape_it->dump(), " is too large"));
    }
    num_elements *= size;
    view->shape.push_back(static_cast<int64_t>(size));
  }

  const auto offsets_it = entry.find("data_offsets");
  uint64_t begin = 0, end = 0;
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !ReadNonNegative((*offsets_it)[0], &begin) || !ReadNonNegative((*offsets_it)[1], &end) ||
      begin > end) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": \"data_offsets\" must be [begin, end] with 0 <= begin <= end, found ",
        offsets_it == entry.end() ? std::string("nothing") : offsets_it->dump()));
  }
  const uint64_t expected_bytes = num_elements * DTypeSize(view->dtype);
  if (end - begin != expected_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": data_offsets [", begin, ", ", end, "] span ", end - begin, " bytes but ",
        std::string(DTypeName(view->dtype)), " ", shape_it->dump(), " needs ", expected_bytes));
  }
  if (end > data_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": file is truncated: the tensor needs data bytes [", begin, ", ", end,
                     ") but only ", data_size, " data bytes are present"));
  }
  view->name = name;
  view->file = path;
  view->data = data_begin + begin;
  view->num_bytes = static_cast<size_t>(expected_bytes);
  return absl::OkStatus();
}

absl::Status ParseMetadata(const std::string& path, const Json& value,
                           std::map<std::string, std::string>* metadata) {
  if (value.is_null()) return absl::OkStatus();
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"__metadata__\" must be an object of strings"));
  }
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"__metadata__\" entry \"", key,
                                                     "\" must be a string, found ", item.dump()));
    }
    (*metadata)[key] = item.get<std::string>();
  }
  return absl::OkStatus();
}

// Maps `path` read-only. Returns the mapping and its size.
absl::StatusOr<std::pair<void*, size_t>> MapFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    const std::string message = absl::StrCat("cannot open ", path, ": ", std::strerror(error));
    return error == ENOENT ? absl::NotFoundError(message) : absl::PermissionDeniedError(message);
  }
  struct stat info;
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(info.st_size);
  if (size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a safetensors file: ", size, " bytes, need at least 8 for the header length"));
  }
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int error = errno;
  ::close(fd);
  if (mapping == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("cannot mmap ", path, ": ", std::strerror(error)));
  }
  return std::make_pair(mapping, size);
}

}  // namespace

int64_t TensorView::num_elements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

std::string TensorView::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(auto mapped, MapFile(path));
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapped.first;
  file->mapping_size_ = mapped.second;

  const auto* bytes = static_cast<const unsigned char*>(file->mapping_);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];  // little-endian
  const uint64_t available = file->mapping_size_ - 8;
  if (header_size > available) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": header length ", header_size, " beyond file size ", file->mapping_size_,
        " (at most ", available, " bytes can follow the 8-byte length)"));
  }
  const std::string_view header_text(reinterpret_cast<const char*>(bytes + 8), header_size);
  ASSIGN_OR_RETURN(Json header, ParseJson(header_text, absl::StrCat(path, ": safetensors header")));
  if (!header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": safetensors header is not a JSON object"));
  }
  const char* data_begin = reinterpret_cast<const char*>(bytes + 8 + header_size);
  const uint64_t data_size = available - header_size;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      RETURN_IF_ERROR(ParseMetadata(path, entry, &file->metadata_));
      continue;
    }
    TensorView view;
    RETURN_IF_ERROR(ParseTensorEntry(path, name, entry, data_begin, data_size, &view));
    file->tensors_.emplace(name, std::move(view));
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

absl::StatusOr<std::unique_ptr<TensorStore>> TensorStore::FromFiles(
    std::vector<std::unique_ptr<SafetensorsFile>> files) {
  auto store = std::make_unique<TensorStore>();
  store->files_ = std::move(files);
  for (const auto& file : store->files_) {
    for (const auto& [name, view] : file->tensors()) {
      auto [it, inserted] = store->index_.emplace(name, &view);
      if (!inserted) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor \"", name, "\" appears in two files: ", it->second->file, " and ",
                         file->path()));
      }
    }
  }
  return store;
}

namespace {

// Parses the index's weight_map: tensor name -> shard file name (a plain name in `dir`).
absl::StatusOr<std::map<std::string, std::string>> ReadWeightMap(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", index_path));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSIGN_OR_RETURN(Json index, ParseJson(text, index_path));
  const auto map_it = index.is_object() ? index.find("weight_map") : index.end();
  if (map_it == index.end() || !map_it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": \"weight_map\" object missing"));
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : map_it->items()) {
    if (!shard.is_string() || shard.get<std::string>().empty() ||
        shard.get<std::string>().find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": weight_map[\"", name,
                       "\"] must be a file name in the same directory, found ", shard.dump()));
    }
    weight_map[name] = shard.get<std::string>();
  }
  return weight_map;
}

absl::StatusOr<std::unique_ptr<TensorStore>> OpenSharded(const std::string& dir,
                                                         const std::string& index_path) {
  ASSIGN_OR_RETURN(auto weight_map, ReadWeightMap(index_path));
  std::map<std::string, size_t> shard_positions;  // shard file name -> index in `files`
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  for (const auto& [name, shard] : weight_map) {
    if (shard_positions.count(shard) != 0) continue;
    const std::string shard_path = (std::filesystem::path(dir) / shard).string();
    auto file = SafetensorsFile::Open(shard_path);
    if (!file.ok()) {
      return absl::Status(
          file.status().code(),
          absl::StrCat("shard ", shard, " named by ", index_path, ": ", file.status().message()));
    }
    shard_positions[shard] = files.size();
    files.push_back(*std::move(file));
  }
  for (const auto& [name, shard] : weight_map) {
    const SafetensorsFile& file = *files[shard_positions[shard]];
    if (file.tensors().count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor \"", name,
                                                     "\" is mapped to ", shard,
                                                     " but that shard does not contain it"));
    }
  }
  return TensorStore::FromFiles(std::move(files));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorStore>> TensorStore::OpenDirectory(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path index_path = fs::path(dir) / kIndexFileName;
  const fs::path single_path = fs::path(dir) / kSingleFileName;
  std::error_code error;
  if (fs::exists(index_path, error)) return OpenSharded(dir, index_path.string());
  if (fs::exists(single_path, error)) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single_path.string()));
    std::vector<std::unique_ptr<SafetensorsFile>> files;
    files.push_back(std::move(file));
    return FromFiles(std::move(files));
  }
  return absl::NotFoundError(absl::StrCat("no checkpoint in ", dir, ": neither ", kIndexFileName,
                                          " nor ", kSingleFileName, " exists there"));
}

const TensorView* TensorStore::Find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const TensorToWrite& tensor : tensors) {
    uint64_t num_elements = 1;
    for (int64_t dim : tensor.shape) {
      if (dim < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor \"", tensor.name, "\" has a negative dimension"));
      }
      num_elements *= static_cast<uint64_t>(dim);
    }
    if (num_elements * DTypeSize(tensor.dtype) != tensor.num_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor \"", tensor.name, "\": ", tensor.num_bytes, " bytes given but ",
          std::string(DTypeName(tensor.dtype)), " [", absl::StrJoin(tensor.shape, ", "), "] needs ",
          num_elements * DTypeSize(tensor.dtype)));
    }
    if (tensor.name == kMetadataKey || !names.insert(tensor.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor name \"", tensor.name, "\" is reserved or repeated"));
    }
    header[tensor.name] = {{"dtype", std::string(DTypeName(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.num_bytes}}};
    offset += tensor.num_bytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // data starts 8-byte aligned

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot create ", path));
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header_text.size() >> (8 * i));
  out.write(reinterpret_cast<const char*>(length), sizeof length);
  out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  for (const TensorToWrite& tensor : tensors) {
    out.write(static_cast<const char*>(tensor.data),
              static_cast<std::streamsize>(tensor.num_bytes));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

}  // namespace flute
