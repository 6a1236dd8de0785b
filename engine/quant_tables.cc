#include "engine/quant_tables.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace flute {

double NormalQuantile(double p) {
  // Phi(x) = erfc(-x / sqrt 2) / 2 is increasing; bisect on [-40, 40].
  double lo = -40.0, hi = 40.0;
  for (int i = 0; i < 200 && hi - lo > 1e-15; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p) lo = mid; else hi = mid;
  }
  return 0.5 * (lo + hi);
}

namespace {

// count values evenly spaced in probability from `top` down to 1/2, the last (1/2) excluded:
// linspace(top, 0.5, count + 1)[:-1] mapped through the normal quantile.
std::vector<double> QuantilesDownToHalf(double top, int count) {
  std::vector<double> q(count);
  for (int i = 0; i < count; ++i) {
    const double p = top + (0.5 - top) * i / count;
    q[i] = NormalQuantile(p);
  }
  return q;
}

}  // namespace

std::vector<float> NormalFloatTable(int bits) {
  const int half = 1 << (bits - 1);
  const double top = 1.0 - 0.5 * (1.0 / 32.0 + 1.0 / 30.0);
  const std::vector<double> positive = QuantilesDownToHalf(top, half);      // half values
  const std::vector<double> negative = QuantilesDownToHalf(top, half - 1);  // half - 1 values
  std::vector<double> values;
  values.push_back(0.0);
  // One common normalizer: the largest quantile, the same on both sides.
  const double max_q = positive[0];
  for (double q : positive) values.push_back(q / max_q);
  for (double q : negative) values.push_back(-q / max_q);
  std::sort(values.begin(), values.end());
  return std::vector<float>(values.begin(), values.end());
}

std::vector<float> UniformTable(int bits) {
  const int count = 1 << bits;
  std::vector<float> table(count);
  for (int i = 0; i < count; ++i) {
    table[i] = static_cast<float>(-1.0 + 2.0 * i / (count - 1));
  }
  return table;
}

absl::StatusOr<std::vector<float>> ParseTableJson(const std::string& json_text, int bits,
                                                  const std::string& source) {
  const size_t expected = size_t{1} << bits;
  nlohmann::json json = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat("table file ", source, ": not valid JSON; expected a list of ", expected,
                     " numbers, e.g. [-1, -0.5, 0.5, 1] for 2 bits"));
  }
  if (!json.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("table file ", source, ": expected a JSON list of ",
                                                   expected, " numbers, found a ", json.type_name()));
  }
  if (json.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("table file ", source, ": a ", bits, "-bit table needs exactly ", expected,
                     " values (2^", bits, "), found ", json.size()));
  }
  std::vector<float> table;
  for (size_t i = 0; i < json.size(); ++i) {
    if (!json[i].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("table file ", source, ": entry ", i,
                                                     " is a ", json[i].type_name(), ", expected a number"));
    }
    const double v = json[i].get<double>();
    if (!std::isfinite(v) || std::fabs(v) > 1e30) {
      return absl::InvalidArgumentError(
          absl::StrCat("table file ", source, ": entry ", i, " is not a finite number"));
    }
    table.push_back(static_cast<float>(v));
  }
  std::sort(table.begin(), table.end());
  for (size_t i = 1; i < table.size(); ++i) {
    if (table[i] == table[i - 1]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "table file ", source, ": the value ", table[i], " appears twice; entries must be distinct"));
    }
  }
  if (std::max(std::fabs(table.front()), std::fabs(table.back())) == 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("table file ", source, ": all entries are zero"));
  }
  return table;
}

absl::StatusOr<std::vector<float>> LoadTableFile(const std::string& path, int bits) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("table file ", path, ": cannot be opened"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseTableJson(text.str(), bits, path);
}

}  // namespace flute
