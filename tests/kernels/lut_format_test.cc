// The packed LUT format: shape rules, pack/unpack round trip, dequantization and the
// reference matmul, each against a naive computation on fresh random data.
#include "kernels/lut_format.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/lut_layout_v1.h"

namespace flute::lut {
namespace {

// fp16 bits of a float that is exactly representable as a normal fp16 (used for scales).
uint16_t FloatToHalfExact(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  const uint32_t sign = (b >> 16) & 0x8000;
  const int exp = static_cast<int>((b >> 23) & 0xff) - 127 + 15;
  return static_cast<uint16_t>(sign | (exp << 10) | ((b >> 13) & 0x3ff));
}

struct RandomMatrix {
  LutShape shape;
  std::vector<uint8_t> codes, packed;
  std::vector<uint16_t> scales;
  std::vector<float> scale_values, table;
};

RandomMatrix MakeRandom(const LutShape& s, std::mt19937& rng) {
  RandomMatrix r;
  r.shape = s;
  r.codes.resize(s.n * s.k);
  std::uniform_int_distribution<int> code(0, (1 << s.bits) - 1);
  for (auto& c : r.codes) c = static_cast<uint8_t>(code(rng));
  r.packed.assign(PackedCodeBytes(s), 0xAB);
  PackCodes(s, r.codes.data(), r.packed.data());
  std::uniform_int_distribution<int> mant(0, 1023), exp(-6, 2);
  for (int64_t i = 0; i < s.n * (s.k / s.group_size); ++i) {
    const float v = std::ldexp(1.0f + mant(rng) / 1024.0f, exp(rng)) * (rng() & 1 ? -1 : 1);
    r.scale_values.push_back(v);
    r.scales.push_back(FloatToHalfExact(v));
  }
  std::normal_distribution<float> normal;
  for (int i = 0; i < (1 << s.bits); ++i) r.table.push_back(normal(rng));
  return r;
}

// Every bits x group size, with the smallest allowed shape and the man-page / odd ones.
std::vector<LutShape> AllShapes() {
  std::vector<LutShape> shapes;
  for (int bits : {2, 3, 4}) {
    for (int g : {32, 64, 128, 256}) {
      const int64_t kmin = std::max(128, g);
      for (auto nk : std::vector<std::pair<int64_t, int64_t>>{
               {16, kmin}, {48, 2 * kmin}, {128, 512}, {512, 512}, {512, 1536}, {80, 768}}) {
        if (nk.second % kmin == 0) shapes.push_back({nk.first, nk.second, bits, g});
      }
    }
  }
  return shapes;
}

TEST(LutFormatTest, CheckShapeAcceptsModelShapesAndRejectsOthers) {
  for (int bits : {2, 3, 4}) {
    for (int g : {32, 64, 128, 256}) {
      for (auto nk : std::vector<std::pair<int64_t, int64_t>>{
               {6144, 4096}, {4096, 4096}, {28672, 4096}, {4096, 14336}, {10240, 8192},
               {8192, 8192}, {57344, 8192}, {8192, 28672}, {128256, 4096}, {128256, 8192},
               {512, 512}, {128, 512}, {1536, 512}, {4096, 512}, {512, 1536}}) {
        EXPECT_TRUE(CheckShape({nk.first, nk.second, bits, g}).ok())
            << nk.first << "x" << nk.second << " b=" << bits << " G=" << g;
      }
    }
  }
  EXPECT_FALSE(CheckShape({4096, 4096, 5, 128}).ok());
  EXPECT_FALSE(CheckShape({4096, 4096, 4, 48}).ok());
  EXPECT_FALSE(CheckShape({4100, 4096, 4, 128}).ok());
  EXPECT_FALSE(CheckShape({4096, 4000, 4, 128}).ok());
  EXPECT_FALSE(CheckShape({4096, 384, 4, 256}).ok());
  EXPECT_FALSE(CheckShape({0, 4096, 4, 128}).ok());
  const absl::Status bad_k = CheckShape({4096, 4000, 4, 128});
  EXPECT_NE(bad_k.message().find("4000"), std::string::npos) << bad_k;
}

TEST(LutFormatTest, PackedBytesAreExact) {
  for (const LutShape& s : AllShapes()) {
    EXPECT_EQ(PackedCodeBytes(s), static_cast<size_t>(s.n * s.k * s.bits / 8));
  }
}

TEST(LutFormatTest, PackUnpackRoundTripEveryBitsAndGroup) {
  std::mt19937 rng(std::random_device{}());
  for (const LutShape& s : AllShapes()) {
    RandomMatrix r = MakeRandom(s, rng);
    std::vector<uint8_t> back(r.codes.size(), 0xFF);
    UnpackCodes(s, r.packed.data(), back.data());
    ASSERT_EQ(back, r.codes) << s.n << "x" << s.k << " b=" << s.bits << " G=" << s.group_size;
  }
}

TEST(LutFormatTest, PackingUsesEveryBitOfTheBuffer) {
  // Two code matrices differing in one code must pack differently (no bit is dropped).
  std::mt19937 rng(std::random_device{}());
  for (int bits : {2, 3, 4}) {
    const LutShape s{32, 256, bits, 128};
    RandomMatrix r = MakeRandom(s, rng);
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<uint8_t> codes = r.codes;
      const size_t i = rng() % codes.size();
      codes[i] = static_cast<uint8_t>((codes[i] + 1) % (1 << bits));
      std::vector<uint8_t> packed(PackedCodeBytes(s));
      PackCodes(s, codes.data(), packed.data());
      EXPECT_NE(packed, r.packed);
    }
  }
}

// The contract between the 3-bit layout and the kernels' Pair3Indices (lut_gemm_device.cuh),
// emulated here with the same shifts and masks: byte j of index word 2i + o of a lane is the
// pair index lo4 | hi2 << 4 of its pair 8i + 2j + o, where pair p = 4 kk + r holds the codes at
// (row g + 8 (r & 1), columns 16 kk + 8 (r >> 1) + 2 q and + 1), lo4 = (c0 & 3) | (c1 & 3) << 2
// and hi2 = (c0 >> 2) | (c1 >> 2) << 1.
TEST(LutFormatTest, ThreeBitIndexWordsComeFromOneShiftAndMaskPerFourPairs) {
  std::mt19937 rng(std::random_device{}());
  const LutShape s{16, 128, 3, 128};  // one tile
  RandomMatrix r = MakeRandom(s, rng);
  for (int lane = 0; lane < 32; ++lane) {
    uint32_t w[4], hw[2];
    std::memcpy(w, &r.packed[16 * lane], 16);
    std::memcpy(hw, &r.packed[512 + 8 * lane], 8);
    for (int i = 0; i < 4; ++i) {
      const uint32_t h = hw[i >> 1];
      const uint32_t words[2] = {(w[i] & 0x0f0f0f0fu) | (((i & 1) ? h << 2 : h << 4) & 0x30303030u),
                                 ((w[i] >> 4) & 0x0f0f0f0fu) | (((i & 1) ? h >> 2 : h) & 0x30303030u)};
      for (int o = 0; o < 2; ++o) {
        for (int j = 0; j < 4; ++j) {
          const int p = 8 * i + 2 * j + o;
          const int row = lane / 4 + 8 * (p & 1), col = 16 * (p >> 2) + 8 * ((p >> 1) & 1) + 2 * (lane % 4);
          const unsigned c0 = r.codes[row * 128 + col], c1 = r.codes[row * 128 + col + 1];
          const unsigned expected = (c0 & 3) | (c1 & 3) << 2 | ((c0 >> 2) | (c1 >> 2) << 1) << 4;
          ASSERT_EQ((words[o] >> (8 * j)) & 0xffu, expected) << "lane " << lane << " pair " << p;
        }
      }
    }
  }
}

// Checkpoints of format version 1 hold another 3-bit high plane; the upgrade moves its fields
// (2 and 4 bits: the layouts are the same, and the bytes stay).
TEST(LutFormatTest, UpgradeFromVersion1GivesTheSameCodes) {
  EXPECT_EQ(kLayoutVersion, 2);
  std::mt19937 rng(std::random_device{}());
  for (const LutShape& s : AllShapes()) {
    if (s.group_size != 128) continue;
    RandomMatrix r = MakeRandom(s, rng);
    std::vector<uint8_t> v1(PackedCodeBytes(s));
    testing::PackCodesLayoutVersion1(s, r.codes.data(), v1.data());
    if (s.bits != 3) {
      EXPECT_EQ(v1, r.packed) << "b=" << s.bits;
    } else {
      EXPECT_NE(v1, r.packed);
    }
    UpgradeLayoutFromVersion1(s, v1.data());
    ASSERT_EQ(v1, r.packed) << s.n << "x" << s.k << " b=" << s.bits;
  }
}

// InterleaveRowHalves moves packed pair fields: unpacked, its output is the gate and up rows
// interleaved in runs of 8, exactly; InterleaveRowBlocks does the same for plain rows.
TEST(LutFormatTest, InterleaveRowHalvesEqualsInterleavedRowsRepacked) {
  std::mt19937 rng(std::random_device{}());
  for (int bits : {2, 3, 4}) {
    for (int64_t n : {16, 48}) {
      const LutShape half{n, 384, bits, 128};
      const size_t count = static_cast<size_t>(n * half.k);
      std::vector<uint8_t> gate(count), up(count);
      for (auto& c : gate) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      for (auto& c : up) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      std::vector<uint8_t> gate_packed(PackedCodeBytes(half)), up_packed(PackedCodeBytes(half));
      PackCodes(half, gate.data(), gate_packed.data());
      PackCodes(half, up.data(), up_packed.data());
      const LutShape whole{2 * n, half.k, bits, 128};
      std::vector<uint8_t> packed(PackedCodeBytes(whole), 0xA5), codes(2 * count), expected(2 * count);
      InterleaveRowHalves(half, gate_packed.data(), up_packed.data(), packed.data());
      UnpackCodes(whole, packed.data(), codes.data());
      InterleaveRowBlocks(gate.data(), up.data(), n, half.k, expected.data());
      for (int64_t r = 0; r < 2 * n; ++r) {  // the rule, spelled out
        const std::vector<uint8_t>& src = (r % 16) < 8 ? gate : up;
        const int64_t src_row = 8 * (r / 16) + r % 8;
        ASSERT_TRUE(std::equal(src.begin() + src_row * half.k, src.begin() + (src_row + 1) * half.k,
                               expected.begin() + r * half.k)) << "row " << r;
      }
      ASSERT_EQ(codes, expected) << "bits=" << bits << " n=" << n;
    }
  }
}

TEST(LutFormatTest, DequantizeRowsEqualsTableTimesScale) {
  std::mt19937 rng(std::random_device{}());
  for (const LutShape& s : AllShapes()) {
    RandomMatrix r = MakeRandom(s, rng);
    // The whole matrix and a sub-range of rows aligned to RowAlignment.
    const int64_t align = RowAlignment(s);
    for (auto range : std::vector<std::pair<int64_t, int64_t>>{
             {0, s.n}, {s.n > align ? align : 0, s.n}}) {
      const int64_t rows = range.second - range.first;
      std::vector<float> out(rows * s.k, NAN);
      DequantizeRows(s, r.packed.data(), r.scales.data(), r.table.data(), range.first,
                     range.second, out.data());
      for (int64_t n = range.first; n < range.second; ++n) {
        for (int64_t k = 0; k < s.k; ++k) {
          const float want = r.table[r.codes[n * s.k + k]] *
                             r.scale_values[n * (s.k / s.group_size) + k / s.group_size];
          ASSERT_EQ(out[(n - range.first) * s.k + k], want)
              << "n=" << n << " k=" << k << " b=" << s.bits << " G=" << s.group_size;
        }
      }
    }
  }
}

TEST(LutFormatTest, ReferenceMatmulEqualsNaiveDoubleLoop) {
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> normal;
  for (const LutShape& s : AllShapes()) {
    RandomMatrix r = MakeRandom(s, rng);
    for (int64_t m : {1, 3}) {
      std::vector<float> x(m * s.k);
      for (auto& v : x) v = normal(rng);
      std::vector<float> y(m * s.n, NAN);
      ReferenceMatmul(s, r.packed.data(), r.scales.data(), r.table.data(), x.data(), m,
                      y.data());
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t n = 0; n < s.n; ++n) {
          double want = 0, magnitude = 0;
          for (int64_t k = 0; k < s.k; ++k) {
            const double w = static_cast<double>(r.table[r.codes[n * s.k + k]]) *
                             r.scale_values[n * (s.k / s.group_size) + k / s.group_size];
            want += w * x[i * s.k + k];
            magnitude += std::fabs(w * x[i * s.k + k]);
          }
          ASSERT_NEAR(y[i * s.n + n], want, 1e-5 * magnitude + 1e-6)
              << "m=" << i << " n=" << n << " b=" << s.bits << " G=" << s.group_size;
        }
      }
    }
  }
}

TEST(LutFormatTest, DequantizeRowsThroughput) {
  // Not a pass/fail speed gate (machines differ); prints the rate the CPU backend gets.
  std::mt19937 rng(1234);
  for (int bits : {2, 3, 4}) {
    const LutShape s{1024, 4096, bits, 128};
    RandomMatrix r = MakeRandom(s, rng);
    // 16 rows at a time into a cache-resident buffer, as a CPU matmul uses it.
    std::vector<float> out(16 * s.k);
    const auto t0 = std::chrono::steady_clock::now();
    const int reps = 3;
    for (int i = 0; i < reps; ++i) {
      for (int64_t row = 0; row < s.n; row += 16) {
        DequantizeRows(s, r.packed.data(), r.scales.data(), r.table.data(), row, row + 16,
                       out.data());
      }
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double rate = reps * s.n * s.k / sec / 1e9;
    std::printf("DequantizeRows b=%d: %.2f G weights/s (one core)\n", bits, rate);
    EXPECT_GT(rate, 0.0);
  }
}

}  // namespace
}  // namespace flute::lut
