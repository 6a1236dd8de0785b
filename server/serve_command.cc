// `flute serve`: the flute.v1.TextGeneration gRPC service, with the standard health service
// (empty name = liveness, "flute.v1.TextGeneration" = readiness), server reflection,
// optional TLS and Prometheus metrics. SIGTERM/SIGINT drains: readiness goes NOT_SERVING,
// new requests get UNAVAILABLE, running streams finish within --drain-seconds, exit 0.
#include <signal.h>

#include <atomic>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/chat_template.h"
#include "engine/model_config.h"
#include "engine/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/commands.h"
#include "server/gpu_flags.h"
#include "server/metrics.h"
#include "server/metrics_observer.h"
#include "server/service.h"

namespace flute::cli {
namespace {

constexpr char kServiceName[] = "flute.v1.TextGeneration";

struct ServeOptions {
  std::string model_dir;
  std::string host = "0.0.0.0";
  int port = 50051;
  std::string device = "auto";
  int max_batch_size = 32;
  int max_queue = 256;
  int max_tokens_per_step = 512;
  int kv_block_size = 16;
  int64_t kv_cache_mb = 1024;
  int threads = 0;
  std::string tls_cert;
  std::string tls_key;
  int metrics_port = -1;
  double drain_seconds = 30;
  BackendOptions backend;  // the CUDA flags (gpu_flags.h)
};

void Log(const std::string& line) { std::cerr << "flute serve: " << line << std::endl; }

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServeOptions& o) {
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both or neither");
  }
  if (o.tls_cert.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.private_key, ReadFile(o.tls_key, "--tls-key"));
  ASSIGN_OR_RETURN(pair.cert_chain, ReadFile(o.tls_cert, "--tls-cert"));
  ssl.pem_key_cert_pairs.push_back(pair);
  return grpc::SslServerCredentials(ssl);
}

std::string QuantizationLabel(const std::string& model_dir) {
  auto config = LoadModelConfig(model_dir);
  if (!config.ok() || !config->quantization) return "none";
  const QuantizationConfig& q = *config->quantization;
  return absl::StrCat(q.method, q.bits, "-g", q.group_size);
}

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

absl::StatusOr<std::unique_ptr<Backend>> LoadBackend(const ServeOptions& o) {
  BackendOptions options = o.backend;
  options.max_batch = o.max_batch_size;
  options.max_tokens_per_step = o.max_tokens_per_step;
  options.num_threads = o.threads;
  options.kv_block_size = o.kv_block_size;
  options.kv_cache_bytes = o.kv_cache_mb << 20;
  if (o.device != "auto") {
    options.device = o.device;
    return CreateBackend(o.model_dir, options);
  }
  options.device = "cuda";
  auto cuda = CreateBackend(o.model_dir, options);
  if (cuda.ok()) return cuda;
  Log(absl::StrCat("--device auto: CUDA unavailable (", cuda.status().message(),
                   "); using the CPU"));
  options.device = "cpu";
  return CreateBackend(o.model_dir, options);
}

absl::StatusOr<std::shared_ptr<server::Engine>> LoadEngine(const ServeOptions& o,
                                                           server::ServerMetrics* metrics) {
  auto engine = std::make_shared<server::Engine>();
  engine->model_name = BaseName(o.model_dir);
  ASSIGN_OR_RETURN(engine->tokenizer, LoadTokenizer(o.model_dir));
  ASSIGN_OR_RETURN(engine->backend, LoadBackend(o));
  auto chat_template = LoadChatTemplate(o.model_dir);
  if (chat_template.ok()) engine->chat_template = *chat_template;
  if (metrics != nullptr) {
    engine->observer = std::make_unique<server::MetricsObserver>(metrics);
    metrics->SetGpuMemoryBytes(engine->backend->device_memory_bytes());
  }
  SchedulerOptions options;
  options.max_running = o.max_batch_size;
  options.max_waiting = o.max_queue;
  options.max_tokens_per_step = o.max_tokens_per_step;
  options.batch_invariant = o.backend.batch_invariant;
  ASSIGN_OR_RETURN(engine->scheduler,
                   Scheduler::Create(engine->backend.get(), engine->tokenizer.get(), options,
                                     engine->observer.get()));
  return engine;
}

// SIGTERM and SIGINT only bump a counter (async-signal-safe); the main thread polls it.
// A handler rather than a blocked mask + sigwait: threads started before main (OpenBLAS
// starts its pool when loaded) would not have the signals blocked.
std::atomic<int> g_signal_count{0};

extern "C" void OnTerminationSignal(int) { g_signal_count.fetch_add(1); }

class SignalWatcher {
 public:
  SignalWatcher() {
    struct sigaction action = {};
    action.sa_handler = OnTerminationSignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, &old_term_);
    sigaction(SIGINT, &action, &old_int_);
  }
  ~SignalWatcher() {
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
  }
  int count() const { return g_signal_count.load(); }

 private:
  struct sigaction old_term_ = {};
  struct sigaction old_int_ = {};
};

void Drain(const ServeOptions& o, server::Engine* engine, const SignalWatcher& signals) {
  if (engine == nullptr) return;
  engine->scheduler->StopAdmitting();
  const absl::Time give_up = absl::Now() + absl::Seconds(o.drain_seconds);
  while (!engine->scheduler->Idle() && absl::Now() < give_up && signals.count() < 2) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const SchedulerStats stats = engine->scheduler->Stats();
  if (stats.running + stats.waiting > 0) {
    Log(absl::StrCat("drain period over: cancelling ", stats.running + stats.waiting,
                     " unfinished requests"));
  } else {
    Log("all streams finished");
  }
  engine->scheduler->Shutdown();
}

absl::Status RunServe(const ServeOptions& o) {
  ASSIGN_OR_RETURN(auto credentials, Credentials(o));
  std::unique_ptr<server::ServerMetrics> metrics;
  if (o.metrics_port >= 0) {
    server::BuildInfo info{"0.1.0", o.device, BaseName(o.model_dir), QuantizationLabel(o.model_dir)};
    ASSIGN_OR_RETURN(metrics, server::ServerMetrics::Create(o.host, o.metrics_port, info));
    Log(absl::StrCat("metrics on http://", o.host, ":", metrics->port(), "/metrics"));
  }
  SignalWatcher signals;
  server::TextGenerationService service(metrics.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string address = absl::StrCat(o.host, ":", o.port);
  builder.AddListeningPort(address, credentials, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address,
                                               " (port in use, or a bad --host?)"));
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus("", true);
  health->SetServingStatus(kServiceName, false);
  Log(absl::StrCat("listening on ", o.host, ":", port, o.tls_cert.empty() ? "" : " (TLS)",
                   "; loading ", o.model_dir));

  const absl::Time load_start = absl::Now();
  auto engine = LoadEngine(o, metrics.get());
  if (!engine.ok()) {
    server->Shutdown();
    return engine.status();
  }
  service.SetEngine(*engine);
  const SchedulerStats stats = (*engine)->scheduler->Stats();
  // (The CUDA backend's description already names its KV blocks.)
  const std::string backend = (*engine)->backend->Describe();
  const std::string kv = absl::StrContains(backend, "KV blocks")
                             ? ""
                             : absl::StrFormat(", %d KV blocks of %d tokens", stats.total_kv_blocks,
                                               (*engine)->backend->kv_block_size());
  Log(absl::StrFormat("ready in %.1f s: %s%s, max batch %d, max queue %d",
                      absl::ToDoubleSeconds(absl::Now() - load_start), backend, kv, o.max_batch_size,
                      o.max_queue));
  if (signals.count() == 0) health->SetServingStatus(kServiceName, true);

  while (signals.count() == 0) absl::SleepFor(absl::Milliseconds(50));
  health->SetServingStatus(kServiceName, false);
  Log(absl::StrFormat("signal received: draining (up to %.0f s; a second signal stops at once)",
                      o.drain_seconds));
  Drain(o, engine->get(), signals);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  health->Shutdown();
  Log("stopped");
  return absl::OkStatus();
}

}  // namespace

void AddServeCommand(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over gRPC (flute.v1.TextGeneration)");
  cmd->add_option("--model", o->model_dir, "Model directory (Hugging Face layout)")->required();
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "gRPC port (0 = any free port, printed at start)")
      ->check(CLI::Range(0, 65535))->capture_default_str();
  cmd->add_option("--device", o->device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))->capture_default_str();
  cmd->add_option("--max-batch-size", o->max_batch_size, "Running sequences at most")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--max-queue", o->max_queue,
                  "Waiting requests at most; beyond, RESOURCE_EXHAUSTED")
      ->check(CLI::Range(0, 1 << 20))->capture_default_str();
  cmd->add_option("--max-tokens-per-step", o->max_tokens_per_step,
                  "Token budget of one engine step (long prompts are prefilled in chunks)")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--kv-block-size", o->kv_block_size, "Tokens per KV-cache block")
      ->check(CLI::Range(1, 1024))->capture_default_str();
  cmd->add_option("--kv-cache-mb", o->kv_cache_mb, "KV-cache memory in MiB")
      ->check(CLI::Range(1, 1 << 24))->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0 = all)")->capture_default_str();
  AddGpuFlags(cmd, &o->backend);
  cmd->add_option("--tls-cert", o->tls_cert, "PEM certificate chain (TLS; with --tls-key)");
  cmd->add_option("--tls-key", o->tls_key, "PEM private key (TLS; with --tls-cert)");
  cmd->add_option("--metrics-port", o->metrics_port,
                  "Prometheus /metrics HTTP port (-1 = off, 0 = any free port)")
      ->check(CLI::Range(-1, 65535))->capture_default_str();
  cmd->add_option("--drain-seconds", o->drain_seconds,
                  "On SIGTERM, time running streams get to finish")
      ->check(CLI::Range(0.0, 3600.0))->capture_default_str();
  cmd->callback([o] { ExitIfError(RunServe(*o)); });
}

}  // namespace flute::cli
