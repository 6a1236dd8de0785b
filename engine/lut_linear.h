// A LUT-quantized weight matrix (packed b-bit codes, fp16 group scales, a 2^b-entry table)
// read in place from the mapped checkpoint, behind the Linear interface.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/linear.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "kernels/lut_format.h"

namespace flute {

class LutLinear : public Linear {
 public:
  // `packed`: PackedCodeBytes(shape) bytes; `scales_f16`: [N, K / G]; `table`: 2^bits floats
  // (copied, the table is tiny). The caller checked the shape and the sizes.
  LutLinear(const lut::LutShape& shape, const uint8_t* packed, const uint16_t* scales_f16,
            std::vector<float> table, std::string method);
  // The same over codes it owns (a checkpoint's codes converted at load).
  LutLinear(const lut::LutShape& shape, std::vector<uint8_t> owned_packed, const uint16_t* scales_f16,
            std::vector<float> table, std::string method);

  void DequantizeRows(int row_begin, int row_end, float* out) const override;
  int row_alignment() const override;
  std::string Describe() const override;

  const lut::LutShape& shape() const { return shape_; }
  const uint8_t* packed() const { return packed_; }
  const uint16_t* scales_f16() const { return scales_; }
  const std::vector<float>& table() const { return table_; }
  // The codes [N, K], one per byte (for inspection and tests).
  std::vector<uint8_t> UnpackedCodes() const;

 private:
  lut::LutShape shape_;
  std::vector<uint8_t> owned_packed_;  // empty unless the codes were converted at load
  const uint8_t* packed_;
  const uint16_t* scales_;
  std::vector<float> table_;
  std::string method_;
};

// Claims `<prefix>.qweight` (U8 [PackedCodeBytes]), `<prefix>.scales` (F16 [N, K / G]) and
// the table: `<prefix>.table` (F32 [2^bits]) when quant.table_per_layer, else the model-level
// `lut_table` (claimed by the first caller; later callers share it).
absl::StatusOr<std::unique_ptr<Linear>> LoadLutLinear(TensorClaims& claims, const std::string& prefix,
                                                      int out_features, int in_features,
                                                      const QuantizationConfig& quant);

// Name of the model-level table tensor when !table_per_layer.
inline constexpr char kModelTableName[] = "lut_table";

}  // namespace flute
