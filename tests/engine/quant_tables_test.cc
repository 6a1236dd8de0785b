// The LUT tables: NF tables against published reference values, uniform, user JSON tables.
#include <cmath>
#include <vector>

#include "engine/quant_tables.h"
#include "gtest/gtest.h"

namespace flute {
namespace {

void ExpectTableNear(const std::vector<float>& actual, const std::vector<double>& expected, double tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], tolerance) << "entry " << i;
}

TEST(QuantTables, Nf4EqualsQloraTable) {
  // The NF4 table as published with QLoRA (bitsandbytes), to float32 precision.
  const std::vector<double> qlora = {-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                                     -0.28444138169288757, -0.18477343022823334, -0.09105003625154495, 0.0,
                                     0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                                     0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                                     0.7229568362236023, 1.0};
  ExpectTableNear(NormalFloatTable(4), qlora, 2e-7);
}

TEST(QuantTables, Nf3EqualsReadmeTable) {
  // ../shared/models/manpage-llama-22m/README.md, 4 decimals.
  ExpectTableNear(NormalFloatTable(3), {-1, -0.4786, -0.2171, 0, 0.1609, 0.3379, 0.5626, 1}, 5e-5);
}

TEST(QuantTables, Nf2FollowsTheSameConstruction) {
  // 2 positive quantiles (p = 0.9677, 0.7339), 1 negative (p = 0.9677), zero; normalized.
  ExpectTableNear(NormalFloatTable(2), {-1, 0, 0.33791524, 1}, 1e-6);
}

TEST(QuantTables, NfTablesAreSortedWithExactZeroAndEnds) {
  for (int bits = 2; bits <= 4; ++bits) {
    const std::vector<float> t = NormalFloatTable(bits);
    ASSERT_EQ(t.size(), size_t{1} << bits);
    EXPECT_EQ(t.front(), -1.0f);
    EXPECT_EQ(t.back(), 1.0f);
    EXPECT_EQ(t[(1 << (bits - 1)) - 1], 0.0f) << "bits " << bits;
    for (size_t i = 1; i < t.size(); ++i) EXPECT_LT(t[i - 1], t[i]);
  }
}

TEST(QuantTables, NormalQuantileMatchesKnownValues) {
  EXPECT_NEAR(NormalQuantile(0.975), 1.959963984540054, 1e-12);
  EXPECT_NEAR(NormalQuantile(0.5), 0.0, 1e-14);
  EXPECT_NEAR(NormalQuantile(0.001), -3.090232306167813, 1e-11);
}

TEST(QuantTables, UniformIsEvenlySpacedOverMinusOneToOne) {
  const std::vector<float> t = UniformTable(4);
  ASSERT_EQ(t.size(), 16u);
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(t[i], -1.0 + 2.0 * i / 15, 1e-7);
  EXPECT_EQ(UniformTable(2), (std::vector<float>{-1.0f, -1.0f / 3, 1.0f / 3, 1.0f}));
}

TEST(QuantTables, ParsesAndSortsAUserTable) {
  auto table = ParseTableJson("[1, -1, 0.25, -0.5]", 2, "t.json");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(*table, (std::vector<float>{-1.0f, -0.5f, 0.25f, 1.0f}));
}

TEST(QuantTables, RejectsBadUserTables) {
  struct Case {
    const char* json;
    const char* message;
  };
  const Case cases[] = {
      {"[1, 2, 3", "not valid JSON"},
      {"{\"a\": 1}", "expected a JSON list"},
      {"[1, 2, 3]", "needs exactly 4 values"},
      {"[1, 2, 3, 4, 5]", "found 5"},
      {"[1, \"x\", 3, 4]", "entry 1 is a string"},
      {"[1, 1, 3, 4]", "appears twice"},
      {"[0, -0, 0, 0]", "appears twice"},
  };
  for (const Case& c : cases) {
    auto table = ParseTableJson(c.json, 2, "bad.json");
    ASSERT_FALSE(table.ok()) << c.json;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(table.status().message().find(c.message), std::string::npos) << table.status();
    EXPECT_NE(table.status().message().find("bad.json"), std::string::npos) << table.status();
  }
  auto missing = LoadTableFile("/nonexistent/table.json", 3);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/table.json"), std::string::npos);
}

}  // namespace
}  // namespace flute
