#include "engine/cuda/step_profiler.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace flute {

StepProfiler::~StepProfiler() {
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
}

cudaEvent_t StepProfiler::NextEvent() {
  if (used_ == events_.size()) {
    cudaEvent_t e;
    cudaEventCreate(&e);
    events_.push_back(e);
  }
  return events_[used_++];
}

void StepProfiler::Begin(cudaStream_t stream) {
  stream_ = stream;
  used_ = 0;
  kinds_.clear();
  cudaEventRecord(NextEvent(), stream_);
}

void StepProfiler::Mark(const char* kind) {
  cudaEventRecord(NextEvent(), stream_);
  kinds_.push_back(kind);
}

void StepProfiler::End() {
  cudaEventSynchronize(events_[used_ - 1]);
  for (size_t i = 0; i < kinds_.size(); ++i) {
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, events_[i], events_[i + 1]);
    total_ms_[kinds_[i]] += ms;
    ++launches_[kinds_[i]];
  }
  ++steps_;
}

std::string StepProfiler::Report() const {
  std::vector<std::pair<double, std::string>> rows;
  double sum = 0.0;
  for (const auto& [kind, ms] : total_ms_) {
    rows.push_back({ms, kind});
    sum += ms;
  }
  std::sort(rows.rbegin(), rows.rend());
  std::string out = absl::StrFormat("%-14s %10s %7s %12s %9s   (%d steps, %.3f ms per step)\n", "kernel kind",
                                    "total ms", "share", "µs per step", "launches", steps_,
                                    steps_ ? sum / steps_ : 0.0);
  for (const auto& [ms, kind] : rows) {
    absl::StrAppendFormat(&out, "%-14s %10.3f %6.1f%% %12.1f %9.1f\n", kind, ms, 100.0 * ms / sum,
                          1e3 * ms / std::max(1, steps_),
                          static_cast<double>(launches_.at(kind)) / std::max(1, steps_));
  }
  return out;
}

}  // namespace flute
