// Per-kernel timing of forward steps with CUDA events (BackendOptions::profile): where a
// step's time goes, by kernel kind. Eager launches only (graphs are off while profiling);
// the events add a little time of their own, so use it to compare kinds, not as a benchmark.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <string>
#include <vector>

namespace flute {

class StepProfiler {
 public:
  ~StepProfiler();
  void Begin(cudaStream_t stream);  // before a step's first launch
  void Mark(const char* kind);      // after each launch: the time since the last mark is `kind`'s
  void End();                       // after the step's last launch: waits and accumulates
  // "kind  total ms  share  per step µs  launches per step" rows, largest first, over all
  // profiled steps (launches: the marks of that kind, e.g. 2 for lm head: gather + GEMM).
  std::string Report() const;
  void Reset() {
    total_ms_.clear();
    launches_.clear();
    steps_ = 0;
  }

 private:
  cudaEvent_t NextEvent();
  cudaStream_t stream_ = nullptr;
  std::vector<cudaEvent_t> events_;  // events_[0] starts the step
  std::vector<const char*> kinds_;   // kinds_[i] ends at events_[i + 1]
  size_t used_ = 0;
  std::map<std::string, double> total_ms_;
  std::map<std::string, int> launches_;
  int steps_ = 0;
};

}  // namespace flute
