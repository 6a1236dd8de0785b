// Scalar conversions between fp32, fp16 and bf16, checked against the IEEE definitions.
#include "engine/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace flute {
namespace {

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// The value of a half from its definition: (-1)^s × 2^(e-15) × 1.m, or 2^-14 × 0.m.
double HalfValueByDefinition(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  if (exponent == 0x1f) {
    return mantissa == 0 ? sign * std::numeric_limits<double>::infinity()
                         : std::numeric_limits<double>::quiet_NaN();
  }
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

TEST(HalfToFloat, AllBitPatternsMatchTheDefinition) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float got = HalfToFloat(static_cast<uint16_t>(h));
    const double want = HalfValueByDefinition(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << h;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << std::hex << h;
      EXPECT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << h;  // -0 keeps its sign
    }
  }
}

TEST(FloatToHalf, RoundTripsEveryHalf) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    if (std::isnan(HalfToFloat(bits))) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(HalfToFloat(bits))))) << std::hex << h;
    } else {
      EXPECT_EQ(FloatToHalf(HalfToFloat(bits)), bits) << std::hex << h;
    }
  }
}

// Reference rounding: the nearest finite half by exhaustive search among neighbours, ties
// to the even mantissa, overflow past 65520 to infinity.
uint16_t NearestHalf(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return sign | 0x7c00;
  uint16_t best = 0;
  double best_error = std::numeric_limits<double>::infinity();
  for (uint16_t h = 0; h < 0x7c00; ++h) {
    const double error = std::fabs(HalfValueByDefinition(h) - a);
    if (error < best_error || (error == best_error && (h & 1) == 0)) {
      best = h;
      best_error = error;
    }
  }
  return sign | best;
}

TEST(FloatToHalf, RoundsToNearestEvenOnRandomFloats) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> log_magnitude(-27.0f, 17.0f);
  for (int i = 0; i < 300; ++i) {
    const float f = (i % 2 ? -1.0f : 1.0f) * std::exp2(log_magnitude(rng));
    EXPECT_EQ(FloatToHalf(f), NearestHalf(f)) << f;
  }
}

TEST(FloatToHalf, TiesGoToEven) {
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: rounds down to the even 1.0.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3·2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even): rounds up.
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  // Subnormal ties: 2^-25 is halfway between 0 and the smallest subnormal 2^-24.
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25) * 1.0001f), 0x0001);
  EXPECT_EQ(FloatToHalf(3 * std::ldexp(1.0f, -25)), 0x0002);
}

TEST(FloatToHalf, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FloatToHalf(inf), 0x7c00);
  EXPECT_EQ(FloatToHalf(-inf), 0xfc00);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);  // largest half
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);  // below the midpoint to 65536
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // the midpoint rounds to even: infinity
  EXPECT_EQ(FloatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(1e-30f), 0x0000);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  // A NaN whose payload lives only in the low float bits must not become infinity.
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(BitsToFloat(0x7f800001u)))));
}

TEST(Bf16, ConversionsMatchTheDefinition) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(b));
    EXPECT_EQ(FloatBits(f), b << 16);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(f))));
    } else {
      EXPECT_EQ(FloatToBf16(f), b) << std::hex << b;
    }
  }
}

TEST(Bf16, RoundsToNearestEven) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even (1.0) wins.
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()),
            0x7f80);  // rounds up to inf, as torch does
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x00018000u)), 0x0002);  // subnormal tie, odd -> even up
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(BitsToFloat(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(BitsToFloat(0xffffffffu)))));
}

TEST(ConvertToFloat, EachFloatDTypeDecodesItsBytes) {
  const std::vector<float> values = {0.0f, -1.5f, 3.140625f, 65504.0f, std::ldexp(1.0f, -24)};
  std::vector<uint16_t> half, bf16;
  for (float v : values) {
    half.push_back(FloatToHalf(v));
    bf16.push_back(FloatToBf16(v));
  }
  std::vector<float> out(values.size());
  ConvertToFloat(DType::kF32, values.data(), values.size(), out.data());
  EXPECT_EQ(out, values);
  ConvertToFloat(DType::kF16, half.data(), half.size(), out.data());
  EXPECT_EQ(out, values);  // every value is exact in fp16
  ConvertToFloat(DType::kBF16, bf16.data(), bf16.size(), out.data());
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(out[i], Bf16ToFloat(bf16[i]));
  EXPECT_EQ(out[2], 3.140625f);
}

TEST(ParseDType, KnownNamesAndSizes) {
  const std::pair<const char*, size_t> known[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2},
                                                  {"U8", 1},  {"I64", 8}, {"BOOL", 1}};
  for (const auto& [name, size] : known) {
    absl::StatusOr<DType> dtype = ParseDType(name, "test");
    ASSERT_TRUE(dtype.ok()) << dtype.status();
    EXPECT_EQ(DTypeName(*dtype), name);
    EXPECT_EQ(DTypeSize(*dtype), size);
  }
}

TEST(ParseDType, UnknownNameIsAnErrorNamingIt) {
  absl::StatusOr<DType> dtype = ParseDType("F8_E4M3", "tensor \"w\"");
  ASSERT_FALSE(dtype.ok());
  EXPECT_EQ(dtype.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dtype.status().message().find("F8_E4M3"), std::string::npos) << dtype.status();
  EXPECT_NE(dtype.status().message().find("tensor \"w\""), std::string::npos) << dtype.status();
}

}  // namespace
}  // namespace flute
