// Read-only, memory-mapped access to safetensors files, single or sharded.
//
// Format: 8-byte little-endian header length H, then H bytes of JSON
// {"name": {"dtype": "BF16", "shape": [N, K], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {...}}, then the data; offsets are relative to the end of the header.
// Every offset, size and dtype is validated against the file size at open time, so a
// TensorView never points outside the mapping.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/dtype.h"

namespace flute {

// A tensor inside a mapped file. `data` stays valid while the owning file is alive.
struct TensorView {
  std::string name;
  std::string file;  // path of the file that holds it (for error messages)
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t num_bytes = 0;

  int64_t num_elements() const;
  std::string ShapeString() const;  // "[512, 4096]"
};

class SafetensorsFile {
 public:
  // Maps `path` and parses its header. Errors name the file and what is wrong with it.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory: `model.safetensors`, or the shards listed in
// `model.safetensors.index.json` (each shard mapped once; every tensor the index names
// must be in the shard it names).
class TensorStore {
 public:
  static absl::StatusOr<std::unique_ptr<TensorStore>> OpenDirectory(const std::string& dir);
  // Builds a store from already-open files (tests, the quantizer's output check).
  static absl::StatusOr<std::unique_ptr<TensorStore>> FromFiles(
      std::vector<std::unique_ptr<SafetensorsFile>> files);

  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  const std::map<std::string, const TensorView*>& tensors() const { return index_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

// Writes tensors to a safetensors file (the quantizer and the tests use it). Tensors are
// written in the order given; `data` must hold num_bytes bytes.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t num_bytes;
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace flute
