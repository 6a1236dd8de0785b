// `flute client`: sends one Generate request to a flute server and prints the text as it
// streams in; the finish reason, usage and timings go to stderr at the end. Also
// --info (GetModelInfo), --tokenize and --wait-ready (health readiness polling).
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "engine/status_macros.h"
#include "flute/v1/flute.grpc.pb.h"
#include "google/protobuf/text_format.h"
#include "server/commands.h"
#include "server/grpc_client_util.h"
#include "server/status_mapping.h"

namespace flute::cli {
namespace {

struct ClientOptions {
  std::string addr = "localhost:50051";
  std::string tls_ca;
  std::string prompt;
  std::string token_ids;  // "1,2,3"
  v1::GenerateRequest request;
  double timeout_seconds = 0;
  double wait_ready_seconds = -1;
  bool info = false;
  bool tokenize = false;
  bool show_tokens = false;
};

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", server::GrpcCodeName(s.error_code()), ": ",
                                   s.error_message()));
}

absl::Status WaitReady(grpc::Channel& channel, double seconds) {
  const absl::Time give_up = absl::Now() + absl::Seconds(seconds);
  std::string last = "no answer";
  while (true) {
    auto serving = server::CheckHealth(channel, "flute.v1.TextGeneration", absl::Seconds(2));
    if (serving.ok() && *serving) return absl::OkStatus();
    last = serving.ok() ? "NOT_SERVING" : std::string(serving.status().message());
    if (absl::Now() >= give_up) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  return absl::DeadlineExceededError(
      absl::StrFormat("the server was not ready within %.0f s (last: %s)", seconds, last));
}

absl::Status PrintInfo(v1::TextGeneration::Stub& stub) {
  grpc::ClientContext context;
  v1::ModelInfo info;
  grpc::Status s = stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!s.ok()) return FromGrpc(s, "GetModelInfo");
  std::string text;
  google::protobuf::TextFormat::PrintToString(info, &text);
  std::cout << text;
  return absl::OkStatus();
}

absl::Status PrintTokens(v1::TextGeneration::Stub& stub, const std::string& text) {
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  request.set_text(text);
  v1::TokenizeResponse response;
  grpc::Status s = stub.Tokenize(&context, request, &response);
  if (!s.ok()) return FromGrpc(s, "Tokenize");
  for (int i = 0; i < response.token_ids_size(); ++i) {
    std::cout << response.token_ids(i) << "\t" << response.tokens(i) << "\n";
  }
  return absl::OkStatus();
}

absl::Status Generate(v1::TextGeneration::Stub& stub, ClientOptions& o) {
  v1::GenerateRequest& request = o.request;
  if (!o.token_ids.empty()) {
    for (absl::string_view part : absl::StrSplit(o.token_ids, ',', absl::SkipWhitespace())) {
      int32_t id;
      if (!absl::SimpleAtoi(part, &id)) {
        return absl::InvalidArgumentError(absl::StrCat("--token-ids: \"", part, "\" is not an integer"));
      }
      request.mutable_token_ids()->add_ids(id);
    }
  } else {
    request.set_prompt(o.prompt);
  }
  grpc::ClientContext context;
  if (o.timeout_seconds > 0) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(o.timeout_seconds)));
  }
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  v1::GenerateResponse last;
  std::vector<int32_t> tokens;
  while (reader->Read(&response)) {
    std::cout << response.text() << std::flush;
    tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
    for (const v1::TokenLogprobs& lp : response.logprobs()) {
      std::cerr << absl::StrFormat("[token %d %.4f", lp.chosen().token_id(), lp.chosen().logprob());
      for (const v1::TokenLogprob& alt : lp.top()) {
        std::cerr << absl::StrFormat(" | %d %.4f", alt.token_id(), alt.logprob());
      }
      std::cerr << "]\n";
    }
    if (response.has_finish_reason()) last = response;
  }
  grpc::Status s = reader->Finish();
  std::cout << std::endl;
  if (!s.ok()) return FromGrpc(s, "Generate");
  if (o.show_tokens) {
    std::cerr << "token_ids:";
    for (int32_t t : tokens) std::cerr << " " << t;
    std::cerr << "\n";
  }
  std::string reason = v1::FinishReason_Name(last.finish_reason());
  std::cerr << absl::StrFormat(
      "[finish_reason=%s%s prompt_tokens=%d completion_tokens=%d queue=%.3fs ttft=%.3fs "
      "total=%.3fs]\n",
      absl::AsciiStrToLower(reason.substr(std::string("FINISH_REASON_").size())),
      last.has_stop_sequence() ? absl::StrCat(" stop=\"", last.stop_sequence(), "\"") : "",
      last.usage().prompt_tokens(), last.usage().completion_tokens(),
      last.timings().queue_seconds(), last.timings().time_to_first_token_seconds(),
      last.timings().total_seconds());
  return absl::OkStatus();
}

absl::Status RunClient(ClientOptions& o) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, server::MakeChannel(o.addr, o.tls_ca));
  if (o.wait_ready_seconds >= 0) RETURN_IF_ERROR(WaitReady(*channel, o.wait_ready_seconds));
  auto stub = v1::TextGeneration::NewStub(channel);
  if (o.info) return PrintInfo(*stub);
  if (o.tokenize) return PrintTokens(*stub, o.prompt);
  if (o.prompt.empty() == o.token_ids.empty()) {
    if (o.wait_ready_seconds >= 0) return absl::OkStatus();  // only waiting was asked for
    return absl::InvalidArgumentError("give exactly one of --prompt or --token-ids");
  }
  return Generate(*stub, o);
}

}  // namespace

void AddClientCommand(CLI::App& app) {
  auto o = std::make_shared<ClientOptions>();
  v1::GenerateRequest& r = o->request;
  CLI::App* cmd = app.add_subcommand("client", "Stream a completion from a flute server");
  cmd->add_option("--addr", o->addr, "Server HOST:PORT")->capture_default_str();
  cmd->add_option("--tls-ca", o->tls_ca, "PEM root certificates: connect with TLS");
  cmd->add_option("--prompt", o->prompt, "Prompt text");
  cmd->add_option("--token-ids", o->token_ids, "Prompt as comma-separated token ids");
  cmd->add_option_function<int>("--max-new-tokens", [&r](int v) { r.set_max_new_tokens(v); },
                                "Tokens to generate at most (server default 128)");
  cmd->add_option_function<float>("--temperature", [&r](float v) { r.set_temperature(v); }, "0 = greedy");
  cmd->add_option_function<int>("--top-k", [&r](int v) { r.set_top_k(v); }, "0 = off");
  cmd->add_option_function<float>("--top-p", [&r](float v) { r.set_top_p(v); }, "1 = off");
  cmd->add_option_function<float>("--min-p", [&r](float v) { r.set_min_p(v); }, "0 = off");
  cmd->add_option_function<float>("--repetition-penalty", [&r](float v) { r.set_repetition_penalty(v); }, "1 = off");
  cmd->add_option_function<float>("--presence-penalty", [&r](float v) { r.set_presence_penalty(v); }, "0 = off");
  cmd->add_option_function<float>("--frequency-penalty", [&r](float v) { r.set_frequency_penalty(v); }, "0 = off");
  cmd->add_option_function<uint64_t>("--seed", [&r](uint64_t v) { r.set_seed(v); }, "Random seed");
  cmd->add_option_function<std::vector<std::string>>(
      "--stop", [&r](const std::vector<std::string>& v) { for (const auto& s : v) r.add_stop(s); },
      "Stop string (repeatable)");
  cmd->add_option_function<std::vector<int>>(
      "--stop-token-id", [&r](const std::vector<int>& v) { for (int id : v) r.add_stop_token_ids(id); },
      "Stop token id (repeatable)");
  cmd->add_flag_callback("--ignore-eos", [&r] { r.set_ignore_eos(true); }, "Generate past EOS");
  cmd->add_option_function<int>("--logprobs", [&r](int v) { r.set_logprobs(v); },
                                "Alternatives per token, printed to stderr");
  cmd->add_option_function<std::string>("--request-id", [&r](const std::string& v) { r.set_request_id(v); },
                                        "Request id");
  cmd->add_option("--timeout", o->timeout_seconds, "Deadline in seconds (0 = none)");
  cmd->add_option("--wait-ready", o->wait_ready_seconds,
                  "First wait up to this many seconds for the server's readiness");
  cmd->add_flag("--info", o->info, "Print GetModelInfo and exit");
  cmd->add_flag("--tokenize", o->tokenize, "Print the token ids of --prompt and exit");
  cmd->add_flag("--show-tokens", o->show_tokens, "Print the generated token ids to stderr");
  cmd->callback([o] { ExitIfError(RunClient(*o)); });
}

}  // namespace flute::cli
