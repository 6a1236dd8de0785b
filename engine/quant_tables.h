// The lookup tables of LUT quantization: NormalFloat (NF2/NF3/NF4), uniform, and tables the
// user supplies as a JSON file. Every table has 2^bits entries in ascending order.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace flute {

// NFb as the man-page model's README defines it (the QLoRA construction): 2^(b-1) positive
// and 2^(b-1)-1 negative standard normal quantiles, evenly spaced in probability from
// 1 - offset down to 1/2 with offset = (1/32 + 1/30) / 2, plus an exact zero, each side
// divided by its largest quantile so the table spans [-1, 1]. bits in {2, 3, 4}.
std::vector<float> NormalFloatTable(int bits);

// 2^bits evenly spaced values from -1 to 1 (no exact zero).
std::vector<float> UniformTable(int bits);

// Parses a JSON list of exactly 2^bits finite, distinct numbers (sorted on return).
// `source` names the file in errors. InvalidArgument says what is wrong.
absl::StatusOr<std::vector<float>> ParseTableJson(const std::string& json_text, int bits,
                                                  const std::string& source);
// Reads and parses a table file (NotFound names the path).
absl::StatusOr<std::vector<float>> LoadTableFile(const std::string& path, int bits);

// The inverse of the standard normal CDF, p in (0, 1) (bisection on erfc; ~1e-15 accurate).
double NormalQuantile(double p);

}  // namespace flute
