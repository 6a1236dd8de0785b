// Feeds the scheduler's reports into the Prometheus metrics (server/metrics.h).
#pragma once

#include "engine/scheduler_observer.h"
#include "server/metrics.h"

namespace flute::server {

class MetricsObserver : public SchedulerObserver {
 public:
  // `metrics` must outlive this observer.
  explicit MetricsObserver(ServerMetrics* metrics) : metrics_(metrics) {}

  void OnStep(const StepStats& step) override;
  void OnScheduled(double queue_seconds) override;
  void OnFirstToken(double seconds) override;
  void OnInterToken(double seconds) override;
  void OnFinished(const FinishedStats& stats) override;
  void OnPreemption() override;
  void OnLoad(const LoadStats& load) override;

 private:
  ServerMetrics* const metrics_;
};

}  // namespace flute::server
