// Host-side validation of the per-row sampling parameters (built with or without CUDA).
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/sampling.h"

namespace flute::gpu {
namespace {

absl::Status OutOfRange(int row, const char* field, const std::string& range, double value) {
  return absl::InvalidArgumentError(
      absl::StrCat("sampling row ", row, ": ", field, " must be in ", range, ", got ", value));
}

absl::Status ValidateRow(const SamplingRow& p, int row) {
  if (!(std::isfinite(p.temperature) && p.temperature >= 0.0f && p.temperature <= 100.0f)) {
    return OutOfRange(row, "temperature", "[0, 100]", p.temperature);
  }
  if (p.top_k < 0) return OutOfRange(row, "top_k", "[0, inf) (0 = off)", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return OutOfRange(row, "top_p", "(0, 1]", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return OutOfRange(row, "min_p", "[0, 1]", p.min_p);
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= 10.0f)) {
    return OutOfRange(row, "repetition_penalty", "(0, 10]", p.repetition_penalty);
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return OutOfRange(row, "presence_penalty", "[-2, 2]", p.presence_penalty);
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return OutOfRange(row, "frequency_penalty", "[-2, 2]", p.frequency_penalty);
  }
  if (p.num_logprobs < 0 || p.num_logprobs > kMaxLogprobs) {
    return OutOfRange(row, "num_logprobs", absl::StrCat("[0, ", kMaxLogprobs, "]"),
                      p.num_logprobs);
  }
  if (p.penalty_begin < 0 || p.penalty_end < p.penalty_begin) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling row ", row, ": penalty range must satisfy 0 <= penalty_begin <= penalty_end, got [",
        p.penalty_begin, ", ", p.penalty_end, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateSamplingRows(const SamplingRow* host_params, int rows, int vocab) {
  if (vocab <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: vocab must be positive, got ", vocab));
  }
  if (rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: rows must be >= 0, got ", rows));
  }
  if (rows > 0 && host_params == nullptr) {
    return absl::InvalidArgumentError("sampling: host_params must be set when rows > 0");
  }
  for (int r = 0; r < rows; ++r) {
    absl::Status status = ValidateRow(host_params[r], r);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace flute::gpu
