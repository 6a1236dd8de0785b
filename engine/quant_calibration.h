// Learned LUT quantization ("NFL") of a dense LLaMA checkpoint: calibration windows run
// through the model one decoder layer at a time; each group of projections that share an
// input (q/k/v, o, gate/up, down) is quantized with the statistics H = XᵀX of that input as
// the quantized model so far produces it (sequential, so later layers see — and correct
// for — the errors of earlier ones).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model_config.h"
#include "engine/quantizer.h"
#include "engine/safetensors.h"

namespace flute {

// The seven projection kinds of a decoder layer, and their checkpoint prefixes
// ("model.layers.3.self_attn.q_proj"; the weight is `<prefix>.weight`).
extern const char* const kProjectionKinds[7];
std::string ProjectionPrefix(int layer, const std::string& kind);

// Quantizes one matrix W[n, k] (fp32, row-major) given its input statistics H = XᵀX [k, k]
// (row-major, summed over calibration tokens).
using CalibratedQuantizeFn =
    std::function<QuantizedMatrix(const float* w, const lut::LutShape& shape, const std::vector<float>& xtx)>;

struct CalibrationOptions {
  int window = 512;       // tokens per calibration sequence (positions 0..window-1)
  int max_windows = 16;   // calibration windows used (from the start of the token file)
};

// Quantizes every projection of every layer of the dense model in `store`; returns them by
// prefix. `progress(done, total)` after each projection group.
absl::StatusOr<std::map<std::string, QuantizedMatrix>> QuantizeWithCalibration(
    const ModelConfig& config, const TensorStore& store, const std::vector<int32_t>& tokens,
    int bits, int group_size, const CalibratedQuantizeFn& quantize, const CalibrationOptions& options,
    const std::function<void(int, int)>& progress = nullptr);

}  // namespace flute
