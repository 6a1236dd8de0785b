// Element types of checkpoint tensors and the scalar conversions between them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace flute {

enum class DType { kF32, kF16, kBF16, kU8, kI8, kU16, kI16, kU32, kI32, kI64, kF64, kBool };

// Size of one element in bytes.
size_t DTypeSize(DType dtype);
// The safetensors spelling ("F32", "BF16", ...). (Debian's Abseil has its own
// absl::string_view, so names are plain C strings to mix with absl::StrCat.)
const char* DTypeName(DType dtype);
// Parses a safetensors dtype string; InvalidArgument naming `what` for an unknown one.
absl::StatusOr<DType> ParseDType(std::string_view name, std::string_view what);

inline float Bf16ToFloat(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even, NaN kept quiet; matches torch's float -> bfloat16 cast.
inline uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// IEEE half <-> float, exact (subnormals, inf, NaN), round to nearest even.
float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float f);

// Converts `count` elements of `dtype` (F32, F16 or BF16) at `src` to float.
void ConvertToFloat(DType dtype, const void* src, size_t count, float* dst);

}  // namespace flute
