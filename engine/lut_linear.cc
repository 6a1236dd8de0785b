#include "engine/lut_linear.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace flute {

LutLinear::LutLinear(const lut::LutShape& shape, const uint8_t* packed, const uint16_t* scales_f16,
                     std::vector<float> table, std::string method)
    : Linear(static_cast<int>(shape.n), static_cast<int>(shape.k)),
      shape_(shape),
      packed_(packed),
      scales_(scales_f16),
      table_(std::move(table)),
      method_(std::move(method)) {}

LutLinear::LutLinear(const lut::LutShape& shape, std::vector<uint8_t> owned_packed, const uint16_t* scales_f16,
                     std::vector<float> table, std::string method)
    : LutLinear(shape, owned_packed.data(), scales_f16, std::move(table), std::move(method)) {
  owned_packed_ = std::move(owned_packed);  // a vector's move keeps its buffer: packed_ stays valid
}

void LutLinear::DequantizeRows(int row_begin, int row_end, float* out) const {
  lut::DequantizeRows(shape_, packed_, scales_, table_.data(), row_begin, row_end, out);
}

int LutLinear::row_alignment() const { return lut::RowAlignment(shape_); }

std::string LutLinear::Describe() const {
  return absl::StrCat("lut ", method_, shape_.bits, " g", shape_.group_size, " [", shape_.n, ", ",
                      shape_.k, "]");
}

std::vector<uint8_t> LutLinear::UnpackedCodes() const {
  std::vector<uint8_t> codes(static_cast<size_t>(shape_.n * shape_.k));
  lut::UnpackCodes(shape_, packed_, codes.data());
  return codes;
}

absl::StatusOr<std::unique_ptr<Linear>> LoadLutLinear(TensorClaims& claims, const std::string& prefix,
                                                      int out_features, int in_features,
                                                      const QuantizationConfig& quant) {
  lut::LutShape shape{out_features, in_features, quant.bits, quant.group_size};
  absl::Status shape_ok = lut::CheckShape(shape);
  if (!shape_ok.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": cannot be LUT-quantized: ", shape_ok.message()));
  }
  const int64_t packed_bytes = static_cast<int64_t>(lut::PackedCodeBytes(shape));
  ASSIGN_OR_RETURN(const TensorView* qweight,
                   claims.Claim(prefix + ".qweight", DType::kU8, {packed_bytes}));
  ASSIGN_OR_RETURN(const TensorView* scales,
                   claims.Claim(prefix + ".scales", DType::kF16,
                                {shape.n, shape.k / shape.group_size}));
  const std::string table_name = quant.table_per_layer ? prefix + ".table" : kModelTableName;
  ASSIGN_OR_RETURN(const TensorView* table_view,
                   claims.Claim(table_name, DType::kF32, {int64_t{1} << quant.bits}));
  std::vector<float> table(size_t{1} << quant.bits);
  std::memcpy(table.data(), table_view->data, table.size() * sizeof(float));
  const auto* packed = static_cast<const uint8_t*>(qweight->data);
  if (quant.format_version == 1 && shape.bits == 3) {  // the 3-bit layout changed in version 2
    std::vector<uint8_t> upgraded(packed, packed + packed_bytes);
    lut::UpgradeLayoutFromVersion1(shape, upgraded.data());
    return std::unique_ptr<Linear>(new LutLinear(shape, std::move(upgraded),
                                                 static_cast<const uint16_t*>(scales->data),
                                                 std::move(table), quant.method));
  }
  return std::unique_ptr<Linear>(new LutLinear(shape, packed,
                                               static_cast<const uint16_t*>(scales->data),
                                               std::move(table), quant.method));
}

}  // namespace flute
