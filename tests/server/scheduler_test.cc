// The scheduler over a fake backend: batching, preemption, queue bound, cancellation,
// deadlines, stop conditions and validation.
#include "engine/scheduler.h"

#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "tests/server/fake_engine.h"

namespace flute {
namespace {

using testing::FakeBackend;
using testing::FakeGreedyReference;
using testing::FakeTokenizer;

constexpr int kVocab = 40;

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
  StreamChunk last;
  int num_chunks = 0;
};

// Reads a stream to its end (fails the test after 30 s).
Collected Drain(RequestStream& stream) {
  Collected c;
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (absl::Now() < give_up) {
    StreamChunk chunk;
    if (!stream.Pop(absl::Milliseconds(50), &chunk)) continue;
    ++c.num_chunks;
    for (const SampledToken& t : chunk.tokens) c.tokens.push_back(t.token);
    c.text += chunk.text;
    if (chunk.finished) {
      c.last = std::move(chunk);
      return c;
    }
  }
  ADD_FAILURE() << "stream " << stream.request_id() << " did not finish";
  return c;
}

GenerationRequest Greedy(std::vector<int32_t> prompt, int max_new_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = max_new_tokens;
  r.sampling.temperature = 0.0f;
  return r;
}

std::vector<int32_t> RandomPrompt(std::mt19937& rng, int length) {
  std::uniform_int_distribution<int> dist(2, kVocab - 1);
  std::vector<int32_t> p{0};
  for (int i = 1; i < length; ++i) p.push_back(dist(rng));
  return p;
}

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (absl::Now() < give_up) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

class SchedulerTest : public ::testing::Test {
 protected:
  void Start(int num_blocks, int block_size, SchedulerOptions options, int context = 512) {
    backend_ = std::make_unique<FakeBackend>(kVocab, context, num_blocks, block_size);
    auto s = Scheduler::Create(backend_.get(), &tokenizer_, options, nullptr);
    if (!s.ok()) GTEST_FAIL() << s.status();
    scheduler_ = std::move(*s);
  }
  std::shared_ptr<RequestStream> Submit(GenerationRequest r) {
    auto stream = scheduler_->Submit(std::move(r));
    EXPECT_TRUE(stream.ok()) << stream.status();
    return stream.ok() ? *stream : nullptr;
  }
  bool AllBlocksFree() {
    const SchedulerStats s = scheduler_->Stats();
    return s.running == 0 && s.waiting == 0 && s.free_kv_blocks == s.total_kv_blocks;
  }

  FakeTokenizer tokenizer_{kVocab};
  std::unique_ptr<FakeBackend> backend_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerTest, SingleGreedyStreamMatchesReference) {
  Start(64, 4, SchedulerOptions());
  const std::vector<int32_t> prompt = {0, 5, 9, 12};
  Collected c = Drain(*Submit(Greedy(prompt, 20)));
  EXPECT_EQ(c.tokens, FakeGreedyReference(prompt, kVocab, 20));
  EXPECT_EQ(c.text, tokenizer_.Decode(c.tokens, true));
  EXPECT_EQ(c.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(c.last.prompt_tokens, 4);
  EXPECT_EQ(c.last.completion_tokens, 20);
  EXPECT_GE(c.last.time_to_first_token_seconds, c.last.queue_seconds);
  EXPECT_GE(c.last.total_seconds, c.last.time_to_first_token_seconds);
  EXPECT_TRUE(WaitFor([&] { return AllBlocksFree(); }));
}

// Many concurrent streams with few slots, a small token budget (chunked prefill) and a KV
// cache too small for all of them (preemption): each equals its solo greedy output, and
// every block comes back.
TEST_F(SchedulerTest, ConcurrentStreamsEqualSoloOutputsUnderPreemption) {
  SchedulerOptions options;
  options.max_running = 6;
  options.max_tokens_per_step = 16;
  options.max_waiting = 100;
  Start(/*num_blocks=*/40, /*block_size=*/4, options);
  std::mt19937 rng(7);
  struct Case { std::vector<int32_t> prompt; int max_new; };
  std::vector<Case> cases;
  for (int i = 0; i < 24; ++i) {
    cases.push_back({RandomPrompt(rng, 3 + static_cast<int>(rng() % 40)),
                     5 + static_cast<int>(rng() % 40)});
  }
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Case& c : cases) streams.push_back(Submit(Greedy(c.prompt, c.max_new)));
  for (size_t i = 0; i < cases.size(); ++i) {
    Collected c = Drain(*streams[i]);
    EXPECT_EQ(c.tokens, FakeGreedyReference(cases[i].prompt, kVocab, cases[i].max_new))
        << "request " << i;
    EXPECT_EQ(c.last.finish_reason, FinishReason::kLength);
  }
  EXPECT_GT(scheduler_->Stats().preemptions, 0) << "the test meant to force preemption";
  EXPECT_LE(backend_->max_batch_seen(), options.max_running);
  EXPECT_TRUE(WaitFor([&] { return AllBlocksFree(); }));
  EXPECT_EQ(scheduler_->Stats().finished, 24);
}

// Requests join a running batch: a late short request finishes while a long one runs.
TEST_F(SchedulerTest, RequestsJoinAndLeaveEveryStep) {
  Start(64, 4, SchedulerOptions());
  backend_->set_step_delay_ms(2);
  auto long_stream = Submit(Greedy({0, 3, 4}, 150));
  StreamChunk first;
  ASSERT_TRUE(long_stream->Pop(absl::Seconds(5), &first));
  Collected short_one = Drain(*Submit(Greedy({0, 7}, 3)));
  EXPECT_EQ(short_one.tokens, FakeGreedyReference({0, 7}, kVocab, 3));
  EXPECT_TRUE(WaitFor([&] { return scheduler_->Stats().running == 1; }))
      << "the long request should still be running";
  long_stream->Cancel();
  EXPECT_TRUE(WaitFor([&] { return AllBlocksFree(); }));
}

TEST_F(SchedulerTest, LongPromptIsPrefilledInChunksWithoutStallingDecodes) {
  SchedulerOptions options;
  options.max_running = 4;
  options.max_tokens_per_step = 8;
  Start(200, 4, options);
  backend_->set_step_delay_ms(1);
  auto decoding = Submit(Greedy({0, 3}, 400));
  StreamChunk first;
  ASSERT_TRUE(decoding->Pop(absl::Seconds(5), &first));
  std::mt19937 rng(3);
  const std::vector<int32_t> long_prompt = RandomPrompt(rng, 300);
  const int64_t steps_before = backend_->num_steps();
  Collected long_one = Drain(*Submit(Greedy(long_prompt, 2)));
  EXPECT_EQ(long_one.tokens, FakeGreedyReference(long_prompt, kVocab, 2));
  // 300 prompt tokens at <= 7 per step (one budget token goes to the decode): >= 43 steps,
  // and the decoding stream got a token in each of them.
  EXPECT_GE(backend_->num_steps() - steps_before, 43);
  StreamChunk during;
  ASSERT_TRUE(decoding->Pop(absl::Seconds(1), &during));
  EXPECT_FALSE(during.finished);
  EXPECT_GE(during.tokens.size(), 43u);
  decoding->Cancel();
  EXPECT_EQ(Drain(*decoding).last.finish_reason, FinishReason::kCancelled);
}

TEST(PrefillChunkTokensTest, NeverOneTokenNorLeavingOne) {
  EXPECT_EQ(PrefillChunkTokens(300, 7), 7);
  EXPECT_EQ(PrefillChunkTokens(8, 7), 6);   // 7 would leave 1: take 6, then 2
  EXPECT_EQ(PrefillChunkTokens(2, 7), 2);
  EXPECT_EQ(PrefillChunkTokens(5, 5), 5);
  EXPECT_EQ(PrefillChunkTokens(3, 2), 0);   // 2 would leave 1, 1 is a 1-token chunk: wait
  EXPECT_EQ(PrefillChunkTokens(9, 1), 0);
  for (int remaining = 2; remaining < 40; ++remaining) {
    for (int budget = 1; budget < 40; ++budget) {
      const int n = PrefillChunkTokens(remaining, budget);
      EXPECT_TRUE(n == 0 || (n >= 2 && n <= budget && n <= remaining && remaining - n != 1))
          << remaining << " left, budget " << budget << ": " << n;
      if (budget >= 3) EXPECT_GE(n, 2) << "a budget of 3 always makes progress";
    }
  }
}

// A 295-token prompt beside a decoding stream, 7 prefill tokens per step: without the mode the
// last chunk is 1 token (42 x 7 = 294, then 1); with it no chunk of the prompt is 1 token
// (41 x 7, 6, 2), and the outputs are the reference either way.
TEST_F(SchedulerTest, BatchInvariantModeNeverCutsAOneTokenPrefillChunk) {
  for (const bool invariant : {false, true}) {
    SchedulerOptions options;
    options.max_running = 4;
    options.max_tokens_per_step = 8;
    options.batch_invariant = invariant;
    Start(200, 4, options);
    backend_->set_step_delay_ms(1);  // the decoding stream outlives the prompt's ~43 steps
    auto decoding = Submit(Greedy({0, 3}, 400));
    StreamChunk first;
    ASSERT_TRUE(decoding->Pop(absl::Seconds(5), &first));
    std::mt19937 rng(5);
    const std::vector<int32_t> prompt = RandomPrompt(rng, 295);
    Collected long_one = Drain(*Submit(Greedy(prompt, 2)));
    EXPECT_EQ(long_one.tokens, FakeGreedyReference(prompt, kVocab, 2));
    decoding->Cancel();
    Drain(*decoding);
    // The long prompt's entries: those of the block table whose first entry starts at 0 with
    // more than 2 tokens (the decoding stream's prompt has 2).
    const auto entries = backend_->entries_seen();
    const std::vector<int32_t>* table = nullptr;
    for (const auto& e : entries) {
      if (e.start_position == 0 && e.num_tokens > 2) table = e.block_table;
    }
    ASSERT_NE(table, nullptr);
    int one_token_prompt_chunks = 0, prompt_tokens = 0;
    for (const auto& e : entries) {
      if (e.block_table != table || e.start_position >= 295) continue;
      prompt_tokens += e.num_tokens;
      if (e.num_tokens == 1) ++one_token_prompt_chunks;
    }
    EXPECT_EQ(prompt_tokens, 295);
    if (invariant) {
      EXPECT_EQ(one_token_prompt_chunks, 0);
    } else {
      EXPECT_GE(one_token_prompt_chunks, 1) << "the test no longer sets up a 1-token chunk";
    }
    scheduler_.reset();
  }
}

TEST_F(SchedulerTest, FullQueueIsRejectedAtOnceWithTheLimit) {
  SchedulerOptions options;
  options.max_running = 1;
  options.max_waiting = 2;
  Start(64, 4, options);
  backend_->SetGate(false);  // the engine blocks in its first step
  std::vector<std::shared_ptr<RequestStream>> accepted;
  accepted.push_back(Submit(Greedy({0, 2}, 5)));
  ASSERT_TRUE(WaitFor([&] { return scheduler_->Stats().running == 1; }));
  accepted.push_back(Submit(Greedy({0, 3}, 5)));
  accepted.push_back(Submit(Greedy({0, 4}, 5)));
  const absl::Time start = absl::Now();
  auto rejected = scheduler_->Submit(Greedy({0, 5}, 5));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(100));
  ASSERT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(rejected.status().message().find("2 requests"), std::string::npos)
      << rejected.status();
  backend_->SetGate(true);
  for (auto& s : accepted) EXPECT_EQ(Drain(*s).last.finish_reason, FinishReason::kLength);
  EXPECT_TRUE(WaitFor([&] { return AllBlocksFree(); }));
}

TEST_F(SchedulerTest, CancelMidStreamFreesSlotAndBlocks) {
  Start(64, 4, SchedulerOptions());
  backend_->set_step_delay_ms(1);
  auto stream = Submit(Greedy({0, 9, 9, 9}, 400));
  StreamChunk chunk;
  ASSERT_TRUE(stream->Pop(absl::Seconds(5), &chunk));
  EXPECT_LT(scheduler_->Stats().free_kv_blocks, 64);
  stream->Cancel();
  Collected rest = Drain(*stream);
  EXPECT_EQ(rest.last.finish_reason, FinishReason::kCancelled);
  EXPECT_LT(rest.last.completion_tokens, 400);
  EXPECT_TRUE(WaitFor([&] { return AllBlocksFree(); }));
  // Later requests are unaffected.
  Collected after = Drain(*Submit(Greedy({0, 4, 4}, 10)));
  EXPECT_EQ(after.tokens, FakeGreedyReference({0, 4, 4}, kVocab, 10));
}

TEST_F(SchedulerTest, CancelWhileWaitingFreesTheQueueSlot) {
  SchedulerOptions options;
  options.max_running = 1;
  options.max_waiting = 1;
  Start(64, 4, options);
  backend_->SetGate(false);
  auto running = Submit(Greedy({0, 2}, 5));
  ASSERT_TRUE(WaitFor([&] { return scheduler_->Stats().running == 1; }));
  auto waiting = Submit(Greedy({0, 3}, 5));
  waiting->Cancel();
  backend_->SetGate(true);
  EXPECT_EQ(Drain(*waiting).last.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(Drain(*running).last.finish_reason, FinishReason::kLength);
  EXPECT_TRUE(WaitFor([&] { return AllBlocksFree(); }));
}

TEST_F(SchedulerTest, PassedDeadlineCancels) {
  Start(64, 4, SchedulerOptions());
  backend_->set_step_delay_ms(2);
  GenerationRequest r = Greedy({0, 6}, 500);
  r.deadline = absl::Now() + absl::Milliseconds(60);
  Collected c = Drain(*Submit(std::move(r)));
  EXPECT_EQ(c.last.finish_reason, FinishReason::kCancelled);
  EXPECT_GT(c.last.completion_tokens, 0);
  EXPECT_TRUE(WaitFor([&] { return AllBlocksFree(); }));
}

TEST_F(SchedulerTest, StopStringEndsTheStreamAndIsNotReturned) {
  Start(64, 4, SchedulerOptions());
  const std::vector<int32_t> prompt = {0, 11, 12};
  const std::string full = tokenizer_.Decode(FakeGreedyReference(prompt, kVocab, 30), true);
  const std::string stop = full.substr(10, 3);
  const size_t first = full.find(stop);
  GenerationRequest r = Greedy(prompt, 30);
  r.stop = {"not-there", stop};
  Collected c = Drain(*Submit(std::move(r)));
  EXPECT_EQ(c.last.finish_reason, FinishReason::kStopSequence);
  EXPECT_EQ(c.last.stop_sequence, stop);
  EXPECT_EQ(c.text, full.substr(0, first));
  EXPECT_EQ(static_cast<int>(c.tokens.size()), static_cast<int>(first + stop.size()));
}

TEST_F(SchedulerTest, StopTokenAndEosEndTheStream) {
  Start(64, 4, SchedulerOptions());
  const std::vector<int32_t> prompt = {0, 20, 21};
  const std::vector<int32_t> ref = FakeGreedyReference(prompt, kVocab, 30);
  const size_t k = 7;
  const size_t first_k = std::find(ref.begin(), ref.end(), ref[k]) - ref.begin();
  GenerationRequest r = Greedy(prompt, 30);
  r.stop_token_ids = {ref[k]};
  Collected c = Drain(*Submit(r));
  EXPECT_EQ(c.last.finish_reason, FinishReason::kStopToken);
  EXPECT_EQ(c.tokens, std::vector<int32_t>(ref.begin(), ref.begin() + first_k + 1));

  tokenizer_.set_eos_ids({ref[k]});
  scheduler_.reset();
  Start(64, 4, SchedulerOptions());
  Collected eos = Drain(*Submit(Greedy(prompt, 30)));
  EXPECT_EQ(eos.last.finish_reason, FinishReason::kEos);
  EXPECT_EQ(eos.tokens.size(), first_k + 1);
  GenerationRequest ignoring = Greedy(prompt, 30);
  ignoring.ignore_eos = true;
  Collected all = Drain(*Submit(ignoring));
  EXPECT_EQ(all.tokens, ref);
  EXPECT_EQ(all.last.finish_reason, FinishReason::kLength);
}

TEST_F(SchedulerTest, StopsAtTheContextLength) {
  Start(64, 4, SchedulerOptions(), /*context=*/16);
  Collected c = Drain(*Submit(Greedy({0, 2, 3, 4, 5, 6}, 16)));
  EXPECT_EQ(c.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(c.tokens.size(), 10u);  // 6 prompt + 10 generated = 16 positions
}

TEST_F(SchedulerTest, SequenceLargerThanTheWholeCacheEndsWithLength) {
  Start(/*num_blocks=*/4, /*block_size=*/4, SchedulerOptions());
  Collected c = Drain(*Submit(Greedy({0, 2, 3}, 100)));
  EXPECT_EQ(c.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(c.tokens, FakeGreedyReference({0, 2, 3}, kVocab, 14));  // 17 > 16 slots
  EXPECT_TRUE(WaitFor([&] { return AllBlocksFree(); }));
}

TEST_F(SchedulerTest, ValidationNamesTheFieldAndTheLimit) {
  Start(64, 4, SchedulerOptions(), /*context=*/32);
  const auto message_of = [&](GenerationRequest r) {
    auto s = scheduler_->Submit(std::move(r));
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
    return std::string(s.status().message());
  };
  EXPECT_NE(message_of(Greedy({}, 5)).find("prompt is empty"), std::string::npos);
  EXPECT_NE(message_of(Greedy({0, 40}, 5)).find("token_ids[1] = 40"), std::string::npos);
  EXPECT_NE(message_of(Greedy(std::vector<int32_t>(32, 2), 5)).find("context length 32"),
            std::string::npos);
  EXPECT_NE(message_of(Greedy({0, 2}, 0)).find("max_new_tokens must be in [1, 32], got 0"),
            std::string::npos);
  GenerationRequest empty_stop = Greedy({0, 2}, 5);
  empty_stop.stop = {"ab", ""};
  EXPECT_NE(message_of(empty_stop).find("stop[1] is empty"), std::string::npos);
  GenerationRequest bad_utf8 = Greedy({0, 2}, 5);
  bad_utf8.stop = {"a\xff"};
  EXPECT_NE(message_of(bad_utf8).find("stop[0] is not valid UTF-8"), std::string::npos);
  GenerationRequest bad_stop_id = Greedy({0, 2}, 5);
  bad_stop_id.stop_token_ids = {-1};
  EXPECT_NE(message_of(bad_stop_id).find("stop_token_ids[0] = -1"), std::string::npos);
  GenerationRequest hot = Greedy({0, 2}, 5);
  hot.sampling.top_p = 1.5f;
  EXPECT_NE(message_of(hot).find("top_p"), std::string::npos);
  EXPECT_TRUE(AllBlocksFree());
}

TEST(SchedulerCreateTest, BadOptionsNameTheLimit) {
  FakeBackend backend(kVocab, 64, 16, 4);
  FakeTokenizer tokenizer(kVocab);
  const auto message_of = [&](const SchedulerOptions& o) {
    auto s = Scheduler::Create(&backend, &tokenizer, o, nullptr);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
    return std::string(s.status().message());
  };
  SchedulerOptions o;
  o.max_running = 8;
  o.max_tokens_per_step = 7;
  EXPECT_NE(message_of(o).find("max tokens per step (7) must be at least the max batch size (8)"), std::string::npos);
  o.max_tokens_per_step = 9;
  o.batch_invariant = true;
  EXPECT_NE(message_of(o).find("max tokens per step (9) must be at least the max batch size + 2 (10)"),
            std::string::npos);
  o.max_tokens_per_step = 10;
  EXPECT_TRUE(Scheduler::Create(&backend, &tokenizer, o, nullptr).ok());
}

TEST_F(SchedulerTest, DrainingRejectsNewRequestsAndFinishesRunningOnes) {
  Start(64, 4, SchedulerOptions());
  auto running = Submit(Greedy({0, 2}, 20));
  scheduler_->StopAdmitting();
  auto late = scheduler_->Submit(Greedy({0, 3}, 5));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Drain(*running).last.finish_reason, FinishReason::kLength);
  EXPECT_TRUE(WaitFor([&] { return scheduler_->Idle(); }));
}

TEST_F(SchedulerTest, ShutdownCancelsWhatIsLeft) {
  Start(64, 4, SchedulerOptions());
  backend_->set_step_delay_ms(2);
  auto stream = Submit(Greedy({0, 2}, 500));
  scheduler_->Shutdown();
  EXPECT_EQ(Drain(*stream).last.finish_reason, FinishReason::kCancelled);
  EXPECT_TRUE(AllBlocksFree());
}

// Random cancels under load: no block leaks, no hang.
TEST_F(SchedulerTest, RandomCancelsLeakNoBlocks) {
  SchedulerOptions options;
  options.max_running = 5;
  options.max_tokens_per_step = 12;
  Start(30, 4, options);
  std::mt19937 rng(11);
  std::vector<std::thread> clients;
  for (int i = 0; i < 40; ++i) {
    auto stream = Submit(Greedy(RandomPrompt(rng, 2 + rng() % 20), 5 + rng() % 60));
    const int cancel_after = static_cast<int>(rng() % 6);
    clients.emplace_back([stream, cancel_after] {
      StreamChunk chunk;
      for (int n = 0; n < cancel_after; ++n) {
        if (stream->Pop(absl::Seconds(5), &chunk) && chunk.finished) return;
      }
      stream->Cancel();
      while (!(stream->Pop(absl::Seconds(5), &chunk) && chunk.finished)) {
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_TRUE(WaitFor([&] { return AllBlocksFree(); }));
  EXPECT_EQ(scheduler_->Stats().finished, 40);
}

TEST(StopStringMatcherTest, HoldsBackPossiblePrefixes) {
  StopStringMatcher m({"END", "xy"});
  std::string matched;
  EXPECT_EQ(m.Append("abcE", &matched), "abc");
  EXPECT_EQ(m.Append("N", &matched), "");
  EXPECT_EQ(m.Append("x", &matched), "EN");
  EXPECT_EQ(m.Append("z", &matched), "xz");
  EXPECT_TRUE(matched.empty());
  EXPECT_EQ(m.Append("qqENDtail", &matched), "qq");
  EXPECT_EQ(matched, "END");
  StopStringMatcher none({});
  EXPECT_EQ(none.Append("abc", &matched), "abc");
  StopStringMatcher tail({"abc"});
  EXPECT_EQ(tail.Append("xab", &matched), "x");
  EXPECT_EQ(tail.Flush(), "ab");
}

TEST(CheckUtf8Test, AcceptsWellFormedAndRejectsMalformed) {
  EXPECT_TRUE(CheckUtf8("plain ascii", "prompt").ok());
  EXPECT_TRUE(CheckUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "prompt").ok());
  for (const char* bad : {"\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                          "\xe2\x82"}) {
    const absl::Status s = CheckUtf8(bad, "prompt");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("prompt is not valid UTF-8"), std::string::npos);
  }
}

}  // namespace
}  // namespace flute
