// `flute quantize`: converts a dense LLaMA checkpoint directory into a LUT-quantized one.
//
// Output directory (a Hugging Face-style checkpoint):
//   config.json          the input's, plus "quantization_config": {method, bits, group_size,
//                        format_version, table_per_layer, modules}
//   model.safetensors    per quantized module `<prefix>.qweight` (U8, lut::PackCodes order,
//                        [PackedCodeBytes]) and `<prefix>.scales` (F16 [N, K / G]); the table
//                        as one model-level F32 [2^b] tensor `lut_table` (table_per_layer
//                        false); every other tensor copied unchanged.
//   tokenizer files and generation_config.json, copied.
// The input is streamed tensor by tensor from its memory mapping, and the pages of each
// tensor are released once it is written, so peak memory is about one weight matrix (plus
// the calibration activations for "nfl").
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/quantizer.h"

namespace flute {

struct QuantizeOptions {
  std::string input_dir;
  std::string output_dir;
  int bits = 4;
  int group_size = 128;
  std::string method = "nf";     // nf | nfl | uniform | table:FILE
  std::string calib_tokens;      // token file (u16) for nfl
  std::string calib_tokens_dtype = "u16";
  int calib_windows = 16;        // nfl: calibration windows of 512 tokens
  bool quantize_lm_head = false;
  bool force = false;            // replace an existing output directory
};

struct QuantizeProgress {
  int64_t bytes_done = 0;        // input bytes processed
  int64_t bytes_total = 0;
  std::string stage;             // "calibrating" or "writing"
  std::string tensor;            // the tensor just finished
};

// The table a method string names for `bits` ("nf", "nfl" -> NF; "uniform"; "table:FILE").
absl::StatusOr<std::vector<float>> TableForMethod(const std::string& method, int bits);

absl::Status QuantizeCheckpoint(const QuantizeOptions& options,
                                const std::function<void(const QuantizeProgress&)>& progress = nullptr);

// Reads one quantized module back from a checkpoint written by QuantizeCheckpoint: codes
// unpacked to one per byte, scales and the table (for inspection and tests).
absl::StatusOr<QuantizedMatrix> ReadQuantizedModule(const std::string& checkpoint_dir, const std::string& prefix);

}  // namespace flute
