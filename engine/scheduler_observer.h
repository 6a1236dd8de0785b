// Callbacks through which the scheduler reports what it does, so that the server can feed
// its metrics without the engine knowing about Prometheus. Called on the engine thread;
// implementations must be quick and must not call back into the scheduler.
#pragma once

#include <string>

namespace flute {

struct StepStats {
  double seconds = 0;       // Backend::Forward plus sampling
  bool has_prefill = false; // the step held prompt tokens (a prefill chunk)
  int batch_size = 0;       // sequences in the step
  int num_tokens = 0;       // tokens fed through the model
};

struct FinishedStats {
  const char* finish_reason = "";  // FinishReasonName(...)
  double e2e_seconds = 0;          // arrival -> finish
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

struct LoadStats {
  int running = 0;
  int waiting = 0;
  int used_kv_blocks = 0;
  int total_kv_blocks = 0;
};

class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  virtual void OnStep(const StepStats& step) {}
  virtual void OnScheduled(double queue_seconds) {}     // first admission of a request
  virtual void OnFirstToken(double seconds) {}          // arrival -> first token
  virtual void OnInterToken(double seconds) {}          // between a stream's tokens
  virtual void OnFinished(const FinishedStats& stats) {}
  virtual void OnPreemption() {}
  virtual void OnLoad(const LoadStats& load) {}         // after every step
};

}  // namespace flute
