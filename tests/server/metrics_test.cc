// ServerMetrics: the values that the methods record show up, under the documented names, in
// both the text serializer and a real HTTP scrape of /metrics over loopback.
#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace flute::server {
namespace {

BuildInfo TestBuildInfo() { return {"0.1.0-test", "cpu", "tiny-llama", "nf4-g64"}; }

// The value of the sample line whose name+labels part is exactly `series`, or -1
// when absent. E.g. series = "flute_batch_size_count" or
// "flute_request_success_total{finished_reason=\"eos\"}".
double SampleValue(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    if (line.compare(0, space, series) == 0) return std::strtod(line.c_str() + space + 1, nullptr);
  }
  return -1;
}

// GET /metrics from 127.0.0.1:port with a plain socket; returns the whole response.
std::string HttpGetMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return response;
}

TEST(ServerMetricsTest, ExportsEveryDocumentedNameWithBuildInfo) {
  auto metrics = ServerMetrics::CreateWithoutExposer(TestBuildInfo());
  const std::string text = metrics->SerializeText();
  for (const char* name :
       {"flute_time_to_first_token_seconds_count", "flute_inter_token_latency_seconds_count",
        "flute_e2e_request_latency_seconds_count", "flute_request_queue_time_seconds_count",
        "flute_batch_size_count", "flute_prompt_tokens_total", "flute_generation_tokens_total",
        "flute_num_preemptions_total", "flute_num_requests_running",
        "flute_num_requests_waiting", "flute_kv_cache_usage_perc",
        "flute_gpu_memory_used_bytes"}) {
    EXPECT_EQ(SampleValue(text, name), 0) << name << " missing or nonzero in:\n" << text;
  }
  EXPECT_EQ(SampleValue(text, "flute_engine_step_duration_seconds_count{phase=\"prefill\"}"), 0);
  EXPECT_EQ(SampleValue(text, "flute_engine_step_duration_seconds_count{phase=\"decode\"}"), 0);
  EXPECT_EQ(SampleValue(text, "flute_request_success_total{finished_reason=\"length\"}"), 0);
  EXPECT_EQ(SampleValue(text,
                        "flute_build_info{device=\"cpu\",model=\"tiny-llama\","
                        "quantization=\"nf4-g64\",version=\"0.1.0-test\"}"),
            1)
      << text;
}

TEST(ServerMetricsTest, RecordedValuesMoveCountersGaugesAndHistograms) {
  auto metrics = ServerMetrics::CreateWithoutExposer(TestBuildInfo());
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> tokens(1, 500);
  std::uniform_real_distribution<double> seconds(0.0005, 0.2);

  // Random workload, and the sums a reference computes from it.
  int64_t prompt_sum = 0, generated_sum = 0;
  double itl_sum = 0;
  int itl_at_most_1ms = 0, itl_at_most_2ms = 0;
  const int kObservations = 200;
  for (int i = 0; i < kObservations; ++i) {
    const int p = tokens(rng), g = tokens(rng);
    metrics->AddPromptTokens(p);
    metrics->AddGenerationTokens(g);
    prompt_sum += p;
    generated_sum += g;
    const double s = seconds(rng) / 20;  // 25 us .. 10 ms: exercises the 1 ms buckets
    metrics->ObserveInterTokenLatency(s);
    itl_sum += s;
    itl_at_most_1ms += s <= 0.001;
    itl_at_most_2ms += s <= 0.002;
  }
  metrics->ObserveTimeToFirstToken(0.004);  // below the first TTFT bucket (5 ms)
  metrics->ObserveTimeToFirstToken(0.3);
  metrics->ObserveE2eLatency(1.5);
  metrics->ObserveQueueTime(0.02);
  metrics->ObserveStep("prefill", 0.05, 3);
  metrics->ObserveStep("decode", 0.004, 32);
  metrics->ObserveStep("decode", 0.006, 31);
  metrics->CountRequestFinished("eos");
  metrics->CountRequestFinished("eos");
  metrics->CountRequestFinished("stop_sequence");
  metrics->CountRequestFinished("");
  metrics->CountGrpcStatus("OK");
  metrics->CountGrpcStatus("RESOURCE_EXHAUSTED");
  metrics->CountPreemption();
  metrics->SetRunning(7);
  metrics->SetWaiting(3);
  metrics->SetKvCacheUsage(0.625);
  metrics->SetGpuMemoryBytes(int64_t{3} << 30);

  const std::string t = metrics->SerializeText();
  EXPECT_EQ(SampleValue(t, "flute_prompt_tokens_total"), static_cast<double>(prompt_sum));
  EXPECT_EQ(SampleValue(t, "flute_generation_tokens_total"), static_cast<double>(generated_sum));
  EXPECT_EQ(SampleValue(t, "flute_inter_token_latency_seconds_count"), kObservations);
  EXPECT_NEAR(SampleValue(t, "flute_inter_token_latency_seconds_sum"), itl_sum, 1e-9);
  EXPECT_EQ(SampleValue(t, "flute_inter_token_latency_seconds_bucket{le=\"0.001\"}"),
            itl_at_most_1ms);
  EXPECT_EQ(SampleValue(t, "flute_inter_token_latency_seconds_bucket{le=\"0.002\"}"),
            itl_at_most_2ms);
  EXPECT_GT(itl_at_most_1ms, 0);  // the workload really hits the lowest bucket
  EXPECT_EQ(SampleValue(t, "flute_time_to_first_token_seconds_bucket{le=\"0.005\"}"), 1);
  EXPECT_EQ(SampleValue(t, "flute_time_to_first_token_seconds_count"), 2);
  EXPECT_EQ(SampleValue(t, "flute_e2e_request_latency_seconds_count"), 1);
  EXPECT_EQ(SampleValue(t, "flute_request_queue_time_seconds_sum"), 0.02);
  EXPECT_EQ(SampleValue(t, "flute_engine_step_duration_seconds_count{phase=\"prefill\"}"), 1);
  EXPECT_EQ(SampleValue(t, "flute_engine_step_duration_seconds_count{phase=\"decode\"}"), 2);
  EXPECT_EQ(SampleValue(t, "flute_batch_size_count"), 3);
  EXPECT_EQ(SampleValue(t, "flute_batch_size_sum"), 66);
  EXPECT_EQ(SampleValue(t, "flute_batch_size_bucket{le=\"4\"}"), 1);
  EXPECT_EQ(SampleValue(t, "flute_request_success_total{finished_reason=\"eos\"}"), 2);
  EXPECT_EQ(SampleValue(t, "flute_request_success_total{finished_reason=\"stop_sequence\"}"), 1);
  EXPECT_EQ(SampleValue(t, "flute_request_success_total{finished_reason=\"unknown\"}"), 1);
  EXPECT_EQ(SampleValue(t, "flute_requests_total{grpc_code=\"OK\"}"), 1);
  EXPECT_EQ(SampleValue(t, "flute_requests_total{grpc_code=\"RESOURCE_EXHAUSTED\"}"), 1);
  EXPECT_EQ(SampleValue(t, "flute_num_preemptions_total"), 1);
  EXPECT_EQ(SampleValue(t, "flute_num_requests_running"), 7);
  EXPECT_EQ(SampleValue(t, "flute_num_requests_waiting"), 3);
  EXPECT_EQ(SampleValue(t, "flute_kv_cache_usage_perc"), 0.625);
  EXPECT_EQ(SampleValue(t, "flute_gpu_memory_used_bytes"), static_cast<double>(int64_t{3} << 30));
}

TEST(ServerMetricsTest, HttpScrapeOverLoopbackSeesUpdates) {
  auto created = ServerMetrics::Create("127.0.0.1", 0, TestBuildInfo());
  ASSERT_TRUE(created.ok()) << created.status();
  ServerMetrics& metrics = **created;
  ASSERT_GT(metrics.port(), 0);

  const std::string before = HttpGetMetrics(metrics.port());
  ASSERT_NE(before.find("200 OK"), std::string::npos) << before;
  EXPECT_EQ(SampleValue(before, "flute_generation_tokens_total"), 0) << before;

  metrics.AddGenerationTokens(42);
  metrics.ObserveTimeToFirstToken(0.012);
  metrics.SetWaiting(5);
  const std::string after = HttpGetMetrics(metrics.port());
  EXPECT_EQ(SampleValue(after, "flute_generation_tokens_total"), 42) << after;
  EXPECT_EQ(SampleValue(after, "flute_time_to_first_token_seconds_count"), 1);
  EXPECT_EQ(SampleValue(after, "flute_time_to_first_token_seconds_bucket{le=\"0.01\"}"), 0);
  EXPECT_EQ(SampleValue(after, "flute_time_to_first_token_seconds_bucket{le=\"0.02\"}"), 1);
  EXPECT_EQ(SampleValue(after, "flute_num_requests_waiting"), 5);
}

TEST(ServerMetricsTest, BusyPortAndBadPortGiveClearErrors) {
  auto first = ServerMetrics::Create("127.0.0.1", 0, TestBuildInfo());
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = ServerMetrics::Create("127.0.0.1", (*first)->port(), TestBuildInfo());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(std::to_string((*first)->port())), std::string::npos)
      << second.status();

  auto bad = ServerMetrics::Create("127.0.0.1", 70000, TestBuildInfo());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("70000"), std::string::npos);
}

}  // namespace
}  // namespace flute::server
