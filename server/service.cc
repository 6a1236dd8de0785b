#include "server/service.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/chat_template.h"
#include "engine/status_macros.h"
#include "server/metrics.h"
#include "server/status_mapping.h"

namespace flute::server {

namespace {

constexpr int kMaxRequestIdBytes = 128;
constexpr int kMaxPromptBytes = 4 << 20;
constexpr int kMaxLogprobs = 20;

absl::Status CheckFinite(float value, const char* field) {
  if (std::isfinite(value)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " must be a finite number, got ", value));
}

absl::Status CheckText(const std::string& text, const std::string& field) {
  if (static_cast<int>(text.size()) > kMaxPromptBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is ", text.size(),
                                                   " bytes; at most ", kMaxPromptBytes,
                                                   " are allowed"));
  }
  return CheckUtf8(text, field);
}

absl::StatusOr<std::vector<int32_t>> ChatPrompt(const v1::ChatMessages& chat,
                                                const Engine& engine) {
  if (chat.messages_size() == 0) {
    return absl::InvalidArgumentError("messages is empty: give at least one message");
  }
  if (engine.chat_template.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "messages: model ", engine.model_name,
        " has no chat template (tokenizer_config.json has no chat_template); send prompt"));
  }
  std::vector<ChatMessage> messages;
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    const std::string field = absl::StrCat("messages[", i, "]");
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".role must be \"system\", \"user\" or \"assistant\", got \"", m.role(), "\""));
    }
    RETURN_IF_ERROR(CheckText(m.content(), field + ".content"));
    messages.push_back({m.role(), m.content()});
  }
  const Tokenizer& tokenizer = *engine.tokenizer;
  const std::string bos =
      tokenizer.bos_id() >= 0 ? tokenizer.TokenBytes(tokenizer.bos_id()) : std::string();
  ASSIGN_OR_RETURN(std::string text,
                   ApplyChatTemplate(engine.chat_template, messages, true, bos));
  // The template writes the special tokens itself.
  return tokenizer.Encode(text, /*add_special_tokens=*/false);
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::GenerateRequest& request,
                                               const Engine& engine) {
  switch (request.input_case()) {
    case v1::GenerateRequest::kPrompt: {
      RETURN_IF_ERROR(CheckText(request.prompt(), "prompt"));
      if (request.prompt().empty()) {
        return absl::InvalidArgumentError("prompt is empty: give some text");
      }
      return engine.tokenizer->Encode(request.prompt(), /*add_special_tokens=*/true);
    }
    case v1::GenerateRequest::kTokenIds:
      return std::vector<int32_t>(request.token_ids().ids().begin(),
                                  request.token_ids().ids().end());
    case v1::GenerateRequest::kMessages:
      return ChatPrompt(request.messages(), engine);
    default:
      return absl::InvalidArgumentError(
          "input is missing: set one of prompt, token_ids or messages");
  }
}

absl::Status ToSampling(const v1::GenerateRequest& r, SamplingParams* s) {
  RETURN_IF_ERROR(CheckFinite(r.temperature(), "temperature"));
  RETURN_IF_ERROR(CheckFinite(r.top_p(), "top_p"));
  RETURN_IF_ERROR(CheckFinite(r.min_p(), "min_p"));
  RETURN_IF_ERROR(CheckFinite(r.repetition_penalty(), "repetition_penalty"));
  RETURN_IF_ERROR(CheckFinite(r.presence_penalty(), "presence_penalty"));
  RETURN_IF_ERROR(CheckFinite(r.frequency_penalty(), "frequency_penalty"));
  if (r.logprobs() < 0 || r.logprobs() > kMaxLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat("logprobs must be in [0, ", kMaxLogprobs,
                                                   "], got ", r.logprobs()));
  }
  s->temperature = r.temperature();
  s->top_k = r.top_k();
  s->top_p = r.top_p();
  s->min_p = r.min_p();
  s->repetition_penalty = r.repetition_penalty();
  s->presence_penalty = r.presence_penalty();
  s->frequency_penalty = r.frequency_penalty();
  if (r.has_seed()) s->seed = r.seed();
  s->num_logprobs = r.logprobs();
  return absl::OkStatus();
}

void FillLogprob(const Tokenizer& tokenizer, int32_t token, float logprob,
                 v1::TokenLogprob* out) {
  out->set_token_id(token);
  out->set_logprob(logprob);
  out->set_text(tokenizer.Decode({token}, /*skip_special_tokens=*/false));
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case FinishReason::kStopToken: return v1::FINISH_REASON_STOP_TOKEN;
    case FinishReason::kStopSequence: return v1::FINISH_REASON_STOP_SEQUENCE;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToResponse(const StreamChunk& chunk, const std::string& request_id, bool with_logprobs,
                const Tokenizer& tokenizer, v1::GenerateResponse* out) {
  out->set_request_id(request_id);
  out->set_text(chunk.text);
  for (const SampledToken& t : chunk.tokens) {
    out->add_token_ids(t.token);
    if (!with_logprobs) continue;
    v1::TokenLogprobs* lp = out->add_logprobs();
    FillLogprob(tokenizer, t.token, t.logprob, lp->mutable_chosen());
    for (const TokenLogprob& alt : t.top) {
      FillLogprob(tokenizer, alt.token, alt.logprob, lp->add_top());
    }
  }
  if (!chunk.finished) return;
  out->set_finish_reason(ToProto(chunk.finish_reason));
  if (!chunk.stop_sequence.empty()) out->set_stop_sequence(chunk.stop_sequence);
  out->mutable_usage()->set_prompt_tokens(chunk.prompt_tokens);
  out->mutable_usage()->set_completion_tokens(chunk.completion_tokens);
  out->mutable_timings()->set_queue_seconds(chunk.queue_seconds);
  out->mutable_timings()->set_time_to_first_token_seconds(chunk.time_to_first_token_seconds);
  out->mutable_timings()->set_total_seconds(chunk.total_seconds);
}

}  // namespace

absl::StatusOr<GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                      const Engine& engine) {
  GenerationRequest out;
  if (request.has_request_id()) {
    RETURN_IF_ERROR(CheckUtf8(request.request_id(), "request_id"));
    if (static_cast<int>(request.request_id().size()) > kMaxRequestIdBytes) {
      return absl::InvalidArgumentError(absl::StrCat("request_id is ",
                                                     request.request_id().size(),
                                                     " bytes; at most ", kMaxRequestIdBytes));
    }
    out.request_id = request.request_id();
  }
  ASSIGN_OR_RETURN(out.prompt, PromptIds(request, engine));
  out.max_new_tokens = request.max_new_tokens();
  RETURN_IF_ERROR(ToSampling(request, &out.sampling));
  out.stop.assign(request.stop().begin(), request.stop().end());
  out.stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  out.ignore_eos = request.ignore_eos();
  return out;
}

void TextGenerationService::SetEngine(std::shared_ptr<Engine> engine) {
  absl::MutexLock lock(&mu_);
  engine_ = std::move(engine);
}

std::shared_ptr<Engine> TextGenerationService::engine() const {
  absl::MutexLock lock(&mu_);
  return engine_;
}

absl::StatusOr<std::shared_ptr<Engine>> TextGenerationService::ReadyEngine() const {
  std::shared_ptr<Engine> e = engine();
  if (e == nullptr) return absl::UnavailableError("the model is still loading; retry shortly");
  return e;
}

grpc::Status TextGenerationService::Count(grpc::Status status) const {
  if (metrics_ != nullptr) metrics_->CountGrpcStatus(GrpcCodeName(status.error_code()));
  return status;
}

grpc::Status TextGenerationService::Generate(grpc::ServerContext* context,
                                             const v1::GenerateRequest* request,
                                             grpc::ServerWriter<v1::GenerateResponse>* writer) {
  auto engine = ReadyEngine();
  if (!engine.ok()) return Count(ToGrpcStatus(engine.status()));
  auto generation = ToGenerationRequest(*request, **engine);
  if (!generation.ok()) return Count(ToGrpcStatus(generation.status()));
  const auto deadline = context->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    generation->deadline = absl::FromChrono(deadline);
  }
  auto stream = (*engine)->scheduler->Submit(*generation);
  if (!stream.ok()) return Count(ToGrpcStatus(stream.status()));
  return Count(StreamOutput(context, **engine, *generation, **stream, writer));
}

grpc::Status TextGenerationService::StreamOutput(
    grpc::ServerContext* context, const Engine& engine, const GenerationRequest& request,
    RequestStream& stream, grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const bool with_logprobs = request.sampling.num_logprobs > 0;
  while (true) {
    if (context->IsCancelled()) {
      stream.Cancel();  // the engine frees the slot and blocks at its next step
      const bool expired = absl::Now() >= request.deadline;
      return grpc::Status(expired ? grpc::StatusCode::DEADLINE_EXCEEDED
                                  : grpc::StatusCode::CANCELLED,
                          expired ? "the deadline passed" : "the client cancelled");
    }
    StreamChunk chunk;
    if (!stream.Pop(absl::Milliseconds(20), &chunk)) continue;
    if (chunk.finished && !chunk.error.ok()) return ToGrpcStatus(chunk.error);
    if (chunk.finished && chunk.finish_reason == FinishReason::kCancelled &&
        absl::Now() >= request.deadline) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed");
    }
    v1::GenerateResponse response;
    ToResponse(chunk, stream.request_id(), with_logprobs, *engine.tokenizer, &response);
    if (!writer->Write(response)) {
      stream.Cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    if (chunk.finished) return grpc::Status::OK;
  }
}

grpc::Status TextGenerationService::Tokenize(grpc::ServerContext* context,
                                             const v1::TokenizeRequest* request,
                                             v1::TokenizeResponse* response) {
  auto engine = ReadyEngine();
  if (!engine.ok()) return Count(ToGrpcStatus(engine.status()));
  const absl::Status valid = CheckText(request->text(), "text");
  if (!valid.ok()) return Count(ToGrpcStatus(valid));
  const Tokenizer& tokenizer = *(*engine)->tokenizer;
  auto ids = tokenizer.Encode(request->text(), request->add_special_tokens());
  if (!ids.ok()) return Count(ToGrpcStatus(ids.status()));
  for (int32_t id : *ids) {
    response->add_token_ids(id);
    response->add_tokens(tokenizer.Decode({id}, /*skip_special_tokens=*/false));
  }
  return Count(grpc::Status::OK);
}

grpc::Status TextGenerationService::GetModelInfo(grpc::ServerContext* context,
                                                 const v1::GetModelInfoRequest* request,
                                                 v1::ModelInfo* response) {
  auto engine = ReadyEngine();
  if (!engine.ok()) return Count(ToGrpcStatus(engine.status()));
  const Engine& e = **engine;
  const ModelConfig& config = e.backend->config();
  const SchedulerStats stats = e.scheduler->Stats();
  const SchedulerOptions& options = e.scheduler->options();
  response->set_model(e.model_name);
  response->set_backend(e.backend->Describe());
  response->set_vocab_size(config.vocab_size);
  response->set_context_length(config.max_position_embeddings);
  response->set_max_batch_size(options.max_running);
  response->set_max_queue(options.max_waiting);
  response->set_max_tokens_per_step(options.max_tokens_per_step);
  response->set_kv_block_size(e.backend->kv_block_size());
  response->set_total_kv_blocks(stats.total_kv_blocks);
  response->set_free_kv_blocks(stats.free_kv_blocks);
  response->set_num_running(stats.running);
  response->set_num_waiting(stats.waiting);
  response->set_num_preemptions(stats.preemptions);
  response->set_num_finished(stats.finished);
  for (int32_t id : e.tokenizer->eos_ids()) response->add_eos_token_ids(id);
  response->set_bos_token_id(e.tokenizer->bos_id());
  return Count(grpc::Status::OK);
}

}  // namespace flute::server
