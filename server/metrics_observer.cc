#include "server/metrics_observer.h"

namespace flute::server {

void MetricsObserver::OnStep(const StepStats& step) {
  metrics_->ObserveStep(step.has_prefill ? "prefill" : "decode", step.seconds, step.batch_size);
}

void MetricsObserver::OnScheduled(double queue_seconds) {
  metrics_->ObserveQueueTime(queue_seconds);
}

void MetricsObserver::OnFirstToken(double seconds) { metrics_->ObserveTimeToFirstToken(seconds); }

void MetricsObserver::OnInterToken(double seconds) { metrics_->ObserveInterTokenLatency(seconds); }

void MetricsObserver::OnFinished(const FinishedStats& stats) {
  metrics_->ObserveE2eLatency(stats.e2e_seconds);
  metrics_->AddPromptTokens(stats.prompt_tokens);
  metrics_->AddGenerationTokens(stats.completion_tokens);
  metrics_->CountRequestFinished(stats.finish_reason);
}

void MetricsObserver::OnPreemption() { metrics_->CountPreemption(); }

void MetricsObserver::OnLoad(const LoadStats& load) {
  metrics_->SetRunning(load.running);
  metrics_->SetWaiting(load.waiting);
  metrics_->SetKvCacheUsage(load.total_kv_blocks > 0
                                ? static_cast<double>(load.used_kv_blocks) / load.total_kv_blocks
                                : 0.0);
}

}  // namespace flute::server
