// The flute.v1.TextGeneration gRPC service (synchronous API: one handler thread per call)
// over the engine's Scheduler. Turns requests into token ids and SamplingParams, checks
// every field (INVALID_ARGUMENT naming it), and streams the scheduler's output.
#pragma once

#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "engine/backend.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "engine/tokenizer.h"
#include "flute/v1/flute.grpc.pb.h"

namespace flute::server {

class ServerMetrics;

// A loaded model and the scheduler that drives it. Members are destroyed bottom-up: the
// scheduler (which uses everything above it) first.
struct Engine {
  std::string model_name;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string chat_template;                    // "" when the model has none
  std::unique_ptr<SchedulerObserver> observer;  // may be null
  std::unique_ptr<Scheduler> scheduler;
};

// Converts a GenerateRequest into the scheduler's form: InvalidArgument naming the field
// for anything malformed (no input, text that is not UTF-8, an unknown chat role, ...).
absl::StatusOr<GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                      const Engine& engine);

class TextGenerationService final : public v1::TextGeneration::Service {
 public:
  // `metrics` may be null; it must outlive the service.
  explicit TextGenerationService(ServerMetrics* metrics) : metrics_(metrics) {}

  // Until an engine is set, every RPC answers UNAVAILABLE ("the model is loading").
  void SetEngine(std::shared_ptr<Engine> engine);
  std::shared_ptr<Engine> engine() const;

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;

 private:
  absl::StatusOr<std::shared_ptr<Engine>> ReadyEngine() const;
  grpc::Status Count(grpc::Status status) const;  // counts the final code in the metrics
  grpc::Status StreamOutput(grpc::ServerContext* context, const Engine& engine,
                            const GenerationRequest& request, RequestStream& stream,
                            grpc::ServerWriter<v1::GenerateResponse>* writer);

  ServerMetrics* const metrics_;
  mutable absl::Mutex mu_;
  std::shared_ptr<Engine> engine_ ABSL_GUARDED_BY(mu_);
};

}  // namespace flute::server
