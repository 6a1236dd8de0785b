// `flute bench serve`: load test of a running flute server. For each concurrency level,
// that many client threads send --requests Generate calls in all (ignore_eos, fixed length)
// and the command reports TTFT and inter-token latency p50/p99, requests/s and tokens/s.
#include <algorithm>
#include <atomic>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "engine/status_macros.h"
#include "flute/v1/flute.grpc.pb.h"
#include "server/commands.h"
#include "server/grpc_client_util.h"
#include "server/status_mapping.h"

namespace flute::cli {
namespace {

struct BenchServeOptions {
  std::string addr = "localhost:50051";
  std::string tls_ca;
  std::string concurrency = "1,4,16,32,64";
  int requests = 64;
  std::string prompt = "The quick brown fox";
  int max_new_tokens = 64;
  float temperature = 0.0f;
};

struct LevelResult {
  std::vector<double> ttft;         // seconds
  std::vector<double> inter_token;  // seconds per token after the first
  int64_t tokens = 0;
  int ok = 0;
  std::map<std::string, int> errors;  // gRPC code -> count
  double seconds = 0;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

void OneRequest(v1::TextGeneration::Stub& stub, const v1::GenerateRequest& request,
                LevelResult* result, std::mutex* mu) {
  grpc::ClientContext context;
  const absl::Time start = absl::Now();
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  absl::Time last = start;
  double ttft = -1;
  std::vector<double> gaps;
  int64_t tokens = 0;
  while (reader->Read(&response)) {
    if (response.token_ids_size() == 0) continue;
    const absl::Time now = absl::Now();
    if (ttft < 0) {
      ttft = absl::ToDoubleSeconds(now - start);
      for (int i = 1; i < response.token_ids_size(); ++i) gaps.push_back(0);
    } else {
      // Tokens that arrive together share the gap since the previous message.
      const double gap = absl::ToDoubleSeconds(now - last) / response.token_ids_size();
      for (int i = 0; i < response.token_ids_size(); ++i) gaps.push_back(gap);
    }
    tokens += response.token_ids_size();
    last = now;
  }
  grpc::Status status = reader->Finish();
  std::lock_guard<std::mutex> lock(*mu);
  if (!status.ok()) {
    ++result->errors[server::GrpcCodeName(status.error_code())];
    return;
  }
  ++result->ok;
  result->tokens += tokens;
  if (ttft >= 0) result->ttft.push_back(ttft);
  result->inter_token.insert(result->inter_token.end(), gaps.begin(), gaps.end());
}

LevelResult RunLevel(v1::TextGeneration::Stub& stub, const BenchServeOptions& o, int concurrency) {
  v1::GenerateRequest request;
  request.set_prompt(o.prompt);
  request.set_max_new_tokens(o.max_new_tokens);
  request.set_temperature(o.temperature);
  request.set_ignore_eos(true);
  LevelResult result;
  std::mutex mu;
  std::atomic<int> next{0};
  const absl::Time start = absl::Now();
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      while (next.fetch_add(1) < o.requests) OneRequest(stub, request, &result, &mu);
    });
  }
  for (auto& t : workers) t.join();
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return result;
}

absl::Status RunBenchServe(const BenchServeOptions& o) {
  std::vector<int> levels;
  for (absl::string_view part : absl::StrSplit(o.concurrency, ',', absl::SkipWhitespace())) {
    int c;
    if (!absl::SimpleAtoi(part, &c) || c < 1 || c > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat("--concurrency: \"", part, "\" is not a count in [1, 4096]"));
    }
    levels.push_back(c);
  }
  if (levels.empty()) return absl::InvalidArgumentError("--concurrency is empty");
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, server::MakeChannel(o.addr, o.tls_ca));
  auto stub = v1::TextGeneration::NewStub(channel);
  std::cout << absl::StrFormat("# %s, %d requests per level, prompt \"%s\", %d new tokens each\n",
                               o.addr, o.requests, o.prompt, o.max_new_tokens);
  std::cout << absl::StrFormat("%11s %8s %7s %12s %12s %11s %11s %9s %10s\n", "concurrency", "ok",
                               "errors", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms",
                               "itl_p99_ms", "req/s", "tokens/s");
  for (int c : levels) {
    LevelResult r = RunLevel(*stub, o, c);
    int errors = 0;
    std::string error_detail;
    for (const auto& [code, n] : r.errors) {
      errors += n;
      absl::StrAppend(&error_detail, " ", code, "=", n);
    }
    std::cout << absl::StrFormat("%11d %8d %7d %12.1f %12.1f %11.2f %11.2f %9.2f %10.1f%s\n", c,
                                 r.ok, errors, 1e3 * Percentile(r.ttft, 0.5),
                                 1e3 * Percentile(r.ttft, 0.99), 1e3 * Percentile(r.inter_token, 0.5),
                                 1e3 * Percentile(r.inter_token, 0.99), r.ok / r.seconds,
                                 r.tokens / r.seconds, error_detail)
              << std::flush;
  }
  return absl::OkStatus();
}

}  // namespace

void AddBenchServeCommand(CLI::App& bench) {
  auto o = std::make_shared<BenchServeOptions>();
  CLI::App* cmd = bench.add_subcommand("serve", "Load-test a running flute server");
  cmd->add_option("--addr", o->addr, "Server HOST:PORT")->capture_default_str();
  cmd->add_option("--tls-ca", o->tls_ca, "PEM root certificates: connect with TLS");
  cmd->add_option("--concurrency", o->concurrency, "Comma-separated concurrency levels")
      ->capture_default_str();
  cmd->add_option("--requests", o->requests, "Requests per concurrency level")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--prompt", o->prompt, "Prompt of every request")->capture_default_str();
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Tokens per request (EOS ignored)")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
  cmd->callback([o] { ExitIfError(RunBenchServe(*o)); });
}

}  // namespace flute::cli
