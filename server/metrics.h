// Prometheus metrics of the flute server (prometheus-cpp), served over HTTP at /metrics.
//
// Names carry the `flute_` prefix and vLLM's meanings (docs: serving-conventions.md):
//   histograms  flute_time_to_first_token_seconds, flute_inter_token_latency_seconds,
//               flute_e2e_request_latency_seconds, flute_request_queue_time_seconds,
//               flute_engine_step_duration_seconds{phase="prefill"|"decode"},
//               flute_batch_size (running sequences per engine step)
//   counters    flute_prompt_tokens_total, flute_generation_tokens_total,
//               flute_request_success_total{finished_reason},
//               flute_requests_total{grpc_code}, flute_num_preemptions_total
//   gauges      flute_num_requests_running, flute_num_requests_waiting,
//               flute_kv_cache_usage_perc (0..1), flute_gpu_memory_used_bytes,
//               flute_build_info{version,device,model,quantization} (always 1)
//
// Every method is thread-safe (prometheus-cpp metrics are atomic or internally locked), so
// the engine thread and the gRPC handler threads may call them concurrently. The scheduler
// feeds it through server/metrics_observer.h.
//
// The HTTP exposer (CivetWeb) cannot start threads in a process that links cuBLAS: its
// static TLS leaves no room on CivetWeb's small thread stacks (toolchain.md, trap 3). The
// `flute` binary must load cuBLAS with dlopen, if at all.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace prometheus {
class Counter;
class Exposer;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace flute::server {

// Labels of flute_build_info.
struct BuildInfo {
  std::string version;       // e.g. "0.1.0"
  std::string device;        // "cpu" or "cuda"
  std::string model;         // model directory's base name or the config's name
  std::string quantization;  // e.g. "nf4-g64", "none"
};

class ServerMetrics {
 public:
  // Registers every metric and starts an HTTP exposer serving /metrics on
  // `bind_address:port` (e.g. "0.0.0.0", 9090). Port 0 picks a free port; see port().
  // Fails with UNAVAILABLE (naming the address) when the exposer cannot start.
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Create(const std::string& bind_address,
                                                               int port,
                                                               const BuildInfo& build_info);
  // Registers every metric without an HTTP endpoint (metrics disabled, or tests that read
  // SerializeText()).
  static std::unique_ptr<ServerMetrics> CreateWithoutExposer(const BuildInfo& build_info);

  ~ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The port the exposer listens on (0 when created without an exposer).
  int port() const { return port_; }
  // The current metrics in Prometheus text exposition format (what /metrics returns).
  std::string SerializeText() const;

  // Per request (seconds).
  void ObserveTimeToFirstToken(double seconds);  // arrival -> first token sent
  void ObserveInterTokenLatency(double seconds);  // between consecutive tokens of a stream
  void ObserveE2eLatency(double seconds);         // arrival -> last token / finish
  void ObserveQueueTime(double seconds);          // arrival -> first scheduled
  // Per engine step: `phase` is "prefill" (the step holds any prompt tokens) or "decode";
  // other values are counted as "decode". `batch_size` = sequences in the step.
  void ObserveStep(const std::string& phase, double seconds, int batch_size);

  void AddPromptTokens(int64_t n);
  void AddGenerationTokens(int64_t n);
  // `reason`: "length", "eos", "stop_token", "stop_sequence", "cancelled", "error" (one
  // series per value; "" is counted as "unknown").
  void CountRequestFinished(const std::string& reason);
  // `code_name`: gRPC status name, e.g. "OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED".
  void CountGrpcStatus(const std::string& code_name);
  void CountPreemption();

  void SetRunning(int n);
  void SetWaiting(int n);
  void SetKvCacheUsage(double ratio);  // used / total KV blocks, 0..1
  void SetGpuMemoryBytes(int64_t bytes);

 private:
  explicit ServerMetrics(const BuildInfo& build_info);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;

  prometheus::Histogram* time_to_first_token_ = nullptr;
  prometheus::Histogram* inter_token_latency_ = nullptr;
  prometheus::Histogram* e2e_latency_ = nullptr;
  prometheus::Histogram* queue_time_ = nullptr;
  prometheus::Histogram* prefill_step_ = nullptr;
  prometheus::Histogram* decode_step_ = nullptr;
  prometheus::Histogram* batch_size_ = nullptr;
  prometheus::Counter* prompt_tokens_ = nullptr;
  prometheus::Counter* generation_tokens_ = nullptr;
  prometheus::Counter* preemptions_ = nullptr;
  prometheus::Family<prometheus::Counter>* request_success_ = nullptr;
  prometheus::Family<prometheus::Counter>* requests_by_code_ = nullptr;
  prometheus::Gauge* running_ = nullptr;
  prometheus::Gauge* waiting_ = nullptr;
  prometheus::Gauge* kv_cache_usage_ = nullptr;
  prometheus::Gauge* gpu_memory_used_ = nullptr;
};

}  // namespace flute::server
