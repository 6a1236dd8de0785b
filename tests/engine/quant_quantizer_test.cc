// Quantization of one matrix: round-to-nearest against its definition, the packed format
// round trip, and learned scales against RTN on the error they minimize.
#include <cmath>
#include <random>
#include <vector>

#include "engine/dtype.h"
#include "engine/quant_tables.h"
#include "engine/quantizer.h"
#include "gtest/gtest.h"
#include "kernels/lut_format.h"

namespace flute {
namespace {

std::vector<float> RandomWeights(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(count);
  for (float& x : w) x = normal(rng);
  // A few outliers, as real weights have.
  for (int64_t i = 0; i < count; i += 997) w[i] *= 8;
  return w;
}

TEST(Quantizer, NearestCodePicksTheClosestEntry) {
  const std::vector<float> table = NormalFloatTable(3);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1.3f, 1.3f);
  for (int i = 0; i < 2000; ++i) {
    const float x = uniform(rng);
    const int code = NearestCode(table, x);
    for (size_t c = 0; c < table.size(); ++c) EXPECT_LE(std::fabs(x - table[code]), std::fabs(x - table[c]));
  }
}

TEST(Quantizer, RtnMatchesItsDefinition) {
  for (int bits : {2, 3, 4}) {
    for (int g : {32, 64, 128, 256}) {
      const lut::LutShape shape{32, 512, bits, g};
      const std::vector<float> table = bits == 3 ? UniformTable(3) : NormalFloatTable(bits);
      const std::vector<float> w = RandomWeights(shape.n * shape.k, 10 * bits + g);
      const QuantizedMatrix q = QuantizeRtn(w.data(), shape, table);
      ASSERT_EQ(q.scales.size(), static_cast<size_t>(shape.n * shape.k / g));
      for (int64_t n = 0; n < shape.n; ++n) {
        for (int64_t group = 0; group < shape.k / g; ++group) {
          float absmax = 0;
          for (int i = 0; i < g; ++i) absmax = std::max(absmax, std::fabs(w[n * shape.k + group * g + i]));
          const uint16_t expected_scale = FloatToHalf(absmax);  // max |table| is 1
          ASSERT_EQ(q.scales[n * (shape.k / g) + group], expected_scale);
          const float s = HalfToFloat(expected_scale);
          for (int i = 0; i < g; ++i) {
            const int64_t index = n * shape.k + group * g + i;
            const float error = std::fabs(w[index] - s * table[q.codes[index]]);
            for (float t : table) ASSERT_LE(error, std::fabs(w[index] - s * t) * (1 + 1e-6f) + 1e-12f);
          }
        }
      }
    }
  }
}

TEST(Quantizer, PackedDequantizationEqualsTheDefinition) {
  for (int bits : {2, 3, 4}) {
    for (int g : {32, 128, 256}) {
      const lut::LutShape shape{48, 768, bits, g};
      ASSERT_TRUE(CheckQuantizable(shape, "w").ok());
      const std::vector<float> table = NormalFloatTable(bits);
      const std::vector<float> w = RandomWeights(shape.n * shape.k, bits + g);
      const QuantizedMatrix q = QuantizeRtn(w.data(), shape, table);
      std::vector<uint8_t> packed(lut::PackedCodeBytes(shape));
      lut::PackCodes(shape, q.codes.data(), packed.data());
      std::vector<uint8_t> unpacked(q.codes.size());
      lut::UnpackCodes(shape, packed.data(), unpacked.data());
      EXPECT_EQ(unpacked, q.codes);
      std::vector<float> dequantized(w.size());
      lut::DequantizeRows(shape, packed.data(), q.scales.data(), table.data(), 0, shape.n, dequantized.data());
      EXPECT_EQ(dequantized, Dequantize(q)) << "bits " << bits << " g " << g;
    }
  }
}

TEST(Quantizer, WeightedScalesNeverLoseToRtnOnTheirObjective) {
  const lut::LutShape shape{64, 256, 3, 128};
  const std::vector<float> table = NormalFloatTable(3);
  const std::vector<float> w = RandomWeights(shape.n * shape.k, 7);
  std::mt19937 rng(3);
  std::exponential_distribution<float> exponential(1.0f);
  std::vector<float> h(shape.k);
  for (float& x : h) x = exponential(rng);
  const QuantizedMatrix rtn = QuantizeRtn(w.data(), shape, table);
  const QuantizedMatrix learned = QuantizeWeightedScales(w.data(), shape, table, h.data());
  const double rtn_error = WeightedSquaredError(w.data(), rtn, h.data());
  const double learned_error = WeightedSquaredError(w.data(), learned, h.data());
  EXPECT_LE(learned_error, rtn_error);
  EXPECT_LT(learned_error, 0.9 * rtn_error);  // absmax is far from optimal at 3 bits
}

TEST(Quantizer, HessianQuantizationReducesOutputError) {
  // Correlated inputs X [m, k]; output error ||X (W - Ŵ)ᵀ||² must drop well below RTN's.
  const lut::LutShape shape{32, 256, 3, 64};
  const int m = 2048;
  const std::vector<float> table = NormalFloatTable(3);
  const std::vector<float> w = RandomWeights(shape.n * shape.k, 11);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m) * shape.k);
  for (int r = 0; r < m; ++r) {
    const float common = normal(rng);
    for (int c = 0; c < shape.k; ++c) x[r * shape.k + c] = normal(rng) * (1 + c % 7) + 0.8f * common;
  }
  std::vector<float> h(static_cast<size_t>(shape.k) * shape.k, 0.0f);
  for (int r = 0; r < m; ++r)
    for (int i = 0; i < shape.k; ++i)
      for (int j = 0; j < shape.k; ++j) h[i * shape.k + j] += x[r * shape.k + i] * x[r * shape.k + j];
  auto output_error = [&](const QuantizedMatrix& q) {
    const std::vector<float> w_hat = Dequantize(q);
    double error = 0;
    for (int r = 0; r < m; ++r) {
      for (int n = 0; n < shape.n; ++n) {
        double y = 0;
        for (int c = 0; c < shape.k; ++c) y += x[r * shape.k + c] * (w[n * shape.k + c] - w_hat[n * shape.k + c]);
        error += y * y;
      }
    }
    return error;
  };
  const double rtn = output_error(QuantizeRtn(w.data(), shape, table));
  const QuantizedMatrix learned = QuantizeWithHessian(w.data(), shape, table, h.data());
  const double hessian = output_error(learned);
  EXPECT_LT(hessian, 0.7 * rtn) << "rtn " << rtn << " hessian " << hessian;
  for (uint8_t code : learned.codes) ASSERT_LT(code, table.size());
}

TEST(Quantizer, RejectsShapesTheFormatCannotHold) {
  const absl::Status not_divisible = CheckQuantizable({64, 192, 4, 128}, "tensor w");
  ASSERT_FALSE(not_divisible.ok());
  EXPECT_NE(not_divisible.message().find("not divisible by the group size G = 128"), std::string::npos)
      << not_divisible;
  EXPECT_NE(not_divisible.message().find("tensor w"), std::string::npos);
  EXPECT_FALSE(CheckQuantizable({64, 256, 5, 128}, "w").ok());
  EXPECT_FALSE(CheckQuantizable({64, 256, 4, 16}, "w").ok());
  EXPECT_FALSE(CheckQuantizable({37, 256, 4, 128}, "w").ok());  // rows: multiple of 16
  EXPECT_TRUE(CheckQuantizable({4096, 14336, 4, 128}, "w").ok());
}

}  // namespace
}  // namespace flute
