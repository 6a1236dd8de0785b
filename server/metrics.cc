#include "server/metrics.h"

#include <exception>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace flute::server {
namespace {

using prometheus::Histogram;

// Bucket upper bounds (seconds unless noted). They start low enough to resolve a fast GPU:
// one decode step of a small model on an H100 takes a few milliseconds.
const Histogram::BucketBoundaries& TimeToFirstTokenBuckets() {
  static const Histogram::BucketBoundaries b = {0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                                0.15,  0.2,  0.3,  0.5,  0.75, 1.0,  2.5,
                                                5.0,   7.5,  10.0, 20.0, 40.0, 80.0};
  return b;
}
const Histogram::BucketBoundaries& InterTokenLatencyBuckets() {
  static const Histogram::BucketBoundaries b = {
      0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03,
      0.04,  0.05,  0.075, 0.1,   0.15,  0.2,    0.3,  0.4,   0.5,  0.75,  1.0, 2.5};
  return b;
}
const Histogram::BucketBoundaries& RequestLatencyBuckets() {
  static const Histogram::BucketBoundaries b = {0.01, 0.025, 0.05, 0.1,  0.25, 0.5,  1.0,
                                                2.5,  5.0,   10.0, 15.0, 20.0, 30.0, 40.0,
                                                60.0, 120.0, 240.0, 480.0};
  return b;
}
const Histogram::BucketBoundaries& QueueTimeBuckets() {
  static const Histogram::BucketBoundaries b = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                0.05,   0.1,   0.25,   0.5,   1.0,  2.5,
                                                5.0,    10.0,  30.0,   60.0,  120.0};
  return b;
}
const Histogram::BucketBoundaries& StepDurationBuckets() {
  static const Histogram::BucketBoundaries b = {0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075,
                                                0.01,   0.015, 0.02,  0.03,  0.05,  0.075,
                                                0.1,    0.25,  0.5,   1.0,   2.5,   5.0};
  return b;
}
const Histogram::BucketBoundaries& BatchSizeBuckets() {  // sequences, not seconds
  static const Histogram::BucketBoundaries b = {1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256};
  return b;
}

Histogram* AddHistogram(prometheus::Registry& registry, const std::string& name,
                        const std::string& help, const Histogram::BucketBoundaries& buckets) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add({}, buckets);
}
prometheus::Counter* AddCounter(prometheus::Registry& registry, const std::string& name,
                                const std::string& help) {
  return &prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({});
}
prometheus::Gauge* AddGauge(prometheus::Registry& registry, const std::string& name,
                            const std::string& help) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({});
}

// CivetWeb's listening_ports syntax: "host:port", IPv6 hosts in brackets.
std::string ListeningAddress(const std::string& host, int port) {
  const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';
  return ipv6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

}  // namespace

ServerMetrics::ServerMetrics(const BuildInfo& build_info)
    : registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  time_to_first_token_ = AddHistogram(
      r, "flute_time_to_first_token_seconds",
      "Time from request arrival to its first generated token.", TimeToFirstTokenBuckets());
  inter_token_latency_ = AddHistogram(
      r, "flute_inter_token_latency_seconds",
      "Time between consecutive generated tokens of one request.", InterTokenLatencyBuckets());
  e2e_latency_ = AddHistogram(r, "flute_e2e_request_latency_seconds",
                              "Time from request arrival to its last token (finished requests).",
                              RequestLatencyBuckets());
  queue_time_ = AddHistogram(r, "flute_request_queue_time_seconds",
                             "Time a request waited before it was first scheduled.",
                             QueueTimeBuckets());
  auto& steps = prometheus::BuildHistogram()
                    .Name("flute_engine_step_duration_seconds")
                    .Help("Duration of one engine step (forward pass + sampling), by phase.")
                    .Register(r);
  prefill_step_ = &steps.Add({{"phase", "prefill"}}, StepDurationBuckets());
  decode_step_ = &steps.Add({{"phase", "decode"}}, StepDurationBuckets());
  batch_size_ = AddHistogram(r, "flute_batch_size", "Running sequences in one engine step.",
                             BatchSizeBuckets());

  prompt_tokens_ = AddCounter(r, "flute_prompt_tokens_total", "Prompt tokens processed.");
  generation_tokens_ = AddCounter(r, "flute_generation_tokens_total", "Tokens generated.");
  preemptions_ = AddCounter(r, "flute_num_preemptions_total",
                            "Sequences preempted (KV blocks freed, recomputed later).");
  request_success_ = &prometheus::BuildCounter()
                          .Name("flute_request_success_total")
                          .Help("Finished requests, by finish reason.")
                          .Register(r);
  requests_by_code_ = &prometheus::BuildCounter()
                           .Name("flute_requests_total")
                           .Help("Generate RPCs completed, by gRPC status code.")
                           .Register(r);
  // Pre-create the common series so that rate() and dashboards see zeros, not gaps.
  for (const char* reason : {"length", "eos", "stop_token", "stop_sequence", "cancelled"}) {
    request_success_->Add({{"finished_reason", reason}});
  }
  requests_by_code_->Add({{"grpc_code", "OK"}});

  running_ = AddGauge(r, "flute_num_requests_running", "Requests in the running batch.");
  waiting_ = AddGauge(r, "flute_num_requests_waiting", "Requests waiting to be scheduled.");
  kv_cache_usage_ = AddGauge(r, "flute_kv_cache_usage_perc",
                             "Fraction of KV-cache blocks in use (1 = full).");
  gpu_memory_used_ = AddGauge(r, "flute_gpu_memory_used_bytes",
                              "Device memory in use by this process (0 on the CPU backend).");
  prometheus::BuildGauge()
      .Name("flute_build_info")
      .Help("Build and model information; the value is always 1.")
      .Register(r)
      .Add({{"version", build_info.version},
            {"device", build_info.device},
            {"model", build_info.model},
            {"quantization", build_info.quantization}})
      .Set(1);
}

ServerMetrics::~ServerMetrics() = default;

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Create(
    const std::string& bind_address, int port, const BuildInfo& build_info) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics port: expected 0..65535, got ", port));
  }
  std::unique_ptr<ServerMetrics> metrics(new ServerMetrics(build_info));
  const std::string address = ListeningAddress(bind_address, port);
  try {
    metrics->exposer_ = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve metrics on ", address, ": ", e.what(),
        " (port in use, or cuBLAS linked into the process: toolchain.md trap 3)"));
  }
  metrics->exposer_->RegisterCollectable(metrics->registry_);
  const std::vector<int> ports = metrics->exposer_->GetListeningPorts();
  metrics->port_ = ports.empty() ? port : ports.front();
  return metrics;
}

std::unique_ptr<ServerMetrics> ServerMetrics::CreateWithoutExposer(const BuildInfo& build_info) {
  return std::unique_ptr<ServerMetrics>(new ServerMetrics(build_info));
}

std::string ServerMetrics::SerializeText() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

void ServerMetrics::ObserveTimeToFirstToken(double s) { time_to_first_token_->Observe(s); }
void ServerMetrics::ObserveInterTokenLatency(double s) { inter_token_latency_->Observe(s); }
void ServerMetrics::ObserveE2eLatency(double s) { e2e_latency_->Observe(s); }
void ServerMetrics::ObserveQueueTime(double s) { queue_time_->Observe(s); }

void ServerMetrics::ObserveStep(const std::string& phase, double seconds, int batch_size) {
  (phase == "prefill" ? prefill_step_ : decode_step_)->Observe(seconds);
  batch_size_->Observe(batch_size);
}

void ServerMetrics::AddPromptTokens(int64_t n) {
  if (n > 0) prompt_tokens_->Increment(static_cast<double>(n));
}
void ServerMetrics::AddGenerationTokens(int64_t n) {
  if (n > 0) generation_tokens_->Increment(static_cast<double>(n));
}
void ServerMetrics::CountRequestFinished(const std::string& reason) {
  request_success_->Add({{"finished_reason", reason.empty() ? "unknown" : reason}}).Increment();
}
void ServerMetrics::CountGrpcStatus(const std::string& code_name) {
  requests_by_code_->Add({{"grpc_code", code_name}}).Increment();
}
void ServerMetrics::CountPreemption() { preemptions_->Increment(); }

void ServerMetrics::SetRunning(int n) { running_->Set(n); }
void ServerMetrics::SetWaiting(int n) { waiting_->Set(n); }
void ServerMetrics::SetKvCacheUsage(double ratio) { kv_cache_usage_->Set(ratio); }
void ServerMetrics::SetGpuMemoryBytes(int64_t bytes) {
  gpu_memory_used_->Set(static_cast<double>(bytes));
}

}  // namespace flute::server
