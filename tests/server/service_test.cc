// The gRPC service over a fake engine, through a loopback port: streaming, status
// codes at the edge, validation of proto fields, Tokenize and GetModelInfo.
#include "server/service.h"

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/status_mapping.h"
#include "tests/server/fake_engine.h"

namespace flute::server {
namespace {

constexpr int kVocab = 40;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto engine = std::make_shared<Engine>();
    engine->model_name = "fake";
    auto backend = std::make_unique<testing::FakeBackend>(kVocab, 64, 32, 4);
    backend_ = backend.get();
    engine->backend = std::move(backend);
    engine->tokenizer = std::make_unique<testing::FakeTokenizer>(kVocab);
    SchedulerOptions options;
    options.max_running = 4;
    options.max_waiting = 1;
    auto scheduler = Scheduler::Create(engine->backend.get(), engine->tokenizer.get(), options,
                                       nullptr);
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    engine->scheduler = std::move(*scheduler);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    stub_ = v1::TextGeneration::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
    engine_ = engine;
  }
  void TearDown() override { server_->Shutdown(); }

  grpc::Status Generate(const v1::GenerateRequest& request, std::string* text,
                        v1::GenerateResponse* last = nullptr) {
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      *text += response.text();
      if (last != nullptr && response.has_finish_reason()) *last = response;
    }
    return reader->Finish();
  }

  TextGenerationService service_{nullptr};
  std::shared_ptr<Engine> engine_;
  testing::FakeBackend* backend_ = nullptr;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::TextGeneration::Stub> stub_;
};

TEST_F(ServiceTest, UnavailableWhileLoading) {
  std::string text;
  v1::GenerateRequest request;
  request.set_prompt("abc");
  const grpc::Status status = Generate(request, &text);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("loading"), std::string::npos);
}

TEST_F(ServiceTest, StreamsTheGreedyContinuation) {
  service_.SetEngine(engine_);
  v1::GenerateRequest request;
  request.set_prompt("abc");
  request.set_max_new_tokens(12);
  request.set_temperature(0);
  request.set_logprobs(2);
  request.set_request_id("r1");
  std::string text;
  v1::GenerateResponse last;
  ASSERT_TRUE(Generate(request, &text, &last).ok());
  const std::vector<int32_t> expected = testing::FakeGreedyReference({0, 2, 3, 4}, kVocab, 12);
  EXPECT_EQ(text, engine_->tokenizer->Decode(expected, true));
  EXPECT_EQ(last.request_id(), "r1");
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 4);
  EXPECT_EQ(last.usage().completion_tokens(), 12);
  ASSERT_GT(last.logprobs_size(), 0);
  EXPECT_EQ(last.logprobs(0).top_size(), 2);
  EXPECT_EQ(last.logprobs(0).chosen().token_id(), last.token_ids(0));
}

TEST_F(ServiceTest, MalformedRequestsAreInvalidArgumentNamingTheField) {
  service_.SetEngine(engine_);
  const auto expect_invalid = [&](const v1::GenerateRequest& request, const std::string& field) {
    std::string text;
    const grpc::Status status = Generate(request, &text);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_NE(status.error_message().find(field), std::string::npos) << status.error_message();
  };
  v1::GenerateRequest none;
  expect_invalid(none, "input is missing");
  v1::GenerateRequest bad_utf8;
  bad_utf8.set_prompt("ab\xc3");
  expect_invalid(bad_utf8, "prompt is not valid UTF-8");
  v1::GenerateRequest nan;
  nan.set_prompt("ab");
  nan.set_top_p(std::nanf(""));
  expect_invalid(nan, "top_p must be a finite number");
  v1::GenerateRequest chat;
  chat.mutable_messages()->add_messages()->set_role("user");
  expect_invalid(chat, "no chat template");
  v1::GenerateRequest ids;
  ids.mutable_token_ids()->add_ids(0);
  ids.mutable_token_ids()->add_ids(kVocab);
  expect_invalid(ids, "token_ids[1]");
  v1::GenerateRequest untokenizable;
  untokenizable.set_prompt("ABC");  // the fake tokenizer knows a-z only
  std::string text;
  EXPECT_FALSE(Generate(untokenizable, &text).ok());
}

TEST_F(ServiceTest, FullQueueIsResourceExhausted) {
  service_.SetEngine(engine_);
  backend_->SetGate(false);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  v1::GenerateRequest request;
  request.set_prompt("ab");
  request.set_max_new_tokens(3);
  for (int i = 0; i < 6; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub_->Generate(contexts.back().get(), request));
  }
  // Running: those of the engine's first (blocked) step; waiting: 1; the rest rejected.
  absl::SleepFor(absl::Milliseconds(500));
  backend_->SetGate(true);
  int exhausted = 0;
  for (int i = 0; i < 6; ++i) {
    v1::GenerateResponse response;
    while (readers[i]->Read(&response)) {
    }
    const grpc::Status status = readers[i]->Finish();
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++exhausted;
      EXPECT_NE(status.error_message().find("1 requests"), std::string::npos);
    } else {
      EXPECT_TRUE(status.ok()) << status.error_message();
    }
  }
  EXPECT_GE(exhausted, 1);
}

TEST_F(ServiceTest, TokenizeAndModelInfo) {
  service_.SetEngine(engine_);
  grpc::ClientContext c1;
  v1::TokenizeRequest tokenize;
  tokenize.set_text("hi");
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(stub_->Tokenize(&c1, tokenize, &tokens).ok());
  ASSERT_EQ(tokens.token_ids_size(), 3);
  EXPECT_EQ(tokens.token_ids(1), 2 + ('h' - 'a'));
  EXPECT_EQ(tokens.tokens(1), "h");
  grpc::ClientContext c2;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&c2, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.model(), "fake");
  EXPECT_EQ(info.vocab_size(), kVocab);
  EXPECT_EQ(info.context_length(), 64);
  EXPECT_EQ(info.total_kv_blocks(), 32);
  EXPECT_EQ(info.free_kv_blocks(), 32);
  EXPECT_EQ(info.max_batch_size(), 4);
}

TEST(StatusMappingTest, KeepsCodeAndMessage) {
  const grpc::Status s = ToGrpcStatus(absl::ResourceExhaustedError("queue full (8)"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(s.error_message(), "queue full (8)");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("x")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_STREQ(GrpcCodeName(grpc::StatusCode::DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
}

}  // namespace
}  // namespace flute::server
