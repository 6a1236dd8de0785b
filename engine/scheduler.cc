#include "engine/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "engine/streaming_detokenizer.h"

namespace flute {

// A request inside the engine. tokens = prompt + generated; positions [0, num_computed)
// have their K/V in `blocks`. The next step feeds tokens[num_computed, ...): one token when
// decoding, a chunk of the prompt when prefilling, everything again after a preemption.
struct Scheduler::Sequence {
  GenerationRequest request;
  std::shared_ptr<RequestStream> stream;
  std::vector<int32_t> tokens;
  int num_computed = 0;
  std::vector<int32_t> blocks;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<StreamingDetokenizer> detokenizer;
  StopStringMatcher stop_matcher{{}};
  std::string stop_sequence;
  int generated = 0;
  bool finished = false;
  absl::Time first_scheduled = absl::InfinitePast();
  absl::Time first_token = absl::InfinitePast();
  absl::Time last_token = absl::InfinitePast();

  int remaining() const { return static_cast<int>(tokens.size()) - num_computed; }
};

struct Scheduler::PlannedEntry {
  Sequence* seq;
  int num_tokens;
};

namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

bool Contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

int PrefillChunkTokens(int remaining, int budget) {
  int n = std::min(remaining, budget);
  if (n == remaining - 1) --n;
  return n >= 2 ? n : 0;
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(Backend* backend,
                                                             const Tokenizer* tokenizer,
                                                             const SchedulerOptions& options,
                                                             SchedulerObserver* observer) {
  if (options.max_running < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch size must be at least 1, got ", options.max_running));
  }
  if (options.max_waiting < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max queue must be at least 0, got ", options.max_waiting));
  }
  if (options.max_tokens_per_step < options.max_running) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max tokens per step (", options.max_tokens_per_step,
        ") must be at least the max batch size (", options.max_running,
        "): every running sequence needs one token per step"));
  }
  if (options.batch_invariant && options.max_tokens_per_step < options.max_running + 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max tokens per step (", options.max_tokens_per_step, ") must be at least the max batch size + 2 (",
        options.max_running + 2, ") in the batch-invariant mode: a prefill chunk needs 2 tokens or more"));
  }
  if (backend->num_kv_blocks() < 1 || backend->kv_block_size() < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the backend has no KV cache (", backend->num_kv_blocks(), " blocks of ",
        backend->kv_block_size(), " tokens)"));
  }
  auto scheduler =
      std::unique_ptr<Scheduler>(new Scheduler(backend, tokenizer, options, observer));
  scheduler->thread_ = std::thread([s = scheduler.get()] { s->Loop(); });
  return scheduler;
}

Scheduler::Scheduler(Backend* backend, const Tokenizer* tokenizer,
                     const SchedulerOptions& options, SchedulerObserver* observer)
    : backend_(backend),
      tokenizer_(tokenizer),
      options_(options),
      observer_(observer),
      allocator_(backend->num_kv_blocks(), backend->kv_block_size()) {
  const ModelConfig& config = backend->config();
  limits_.vocab_size = config.vocab_size;
  limits_.context_length = config.max_position_embeddings;
  limits_.kv_capacity_tokens = backend->num_kv_blocks() * backend->kv_block_size();
  eos_ids_ = tokenizer->eos_ids();
  for (int id : config.eos_token_ids) {
    if (!Contains(eos_ids_, id)) eos_ids_.push_back(id);
  }
  stats_.total_kv_blocks = allocator_.num_blocks();
  stats_.free_kv_blocks = allocator_.num_free_blocks();
}

Scheduler::~Scheduler() { Shutdown(); }

absl::StatusOr<std::shared_ptr<RequestStream>> Scheduler::Submit(GenerationRequest request) {
  RETURN_IF_ERROR(ValidateRequest(request, limits_));
  auto seq = std::make_unique<Sequence>();
  absl::MutexLock lock(&mu_);
  if (!admitting_ || shutdown_) {
    return absl::UnavailableError("the server is shutting down and accepts no new requests");
  }
  if (static_cast<int>(waiting_.size()) >= options_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the waiting queue is full (", options_.max_waiting,
                     " requests, the --max-queue limit); retry later"));
  }
  if (request.request_id.empty()) {
    request.request_id = absl::StrCat("req-", next_request_number_);
  }
  ++next_request_number_;
  request.arrival = absl::Now();
  seq->stream = std::make_shared<RequestStream>(request.request_id);
  seq->tokens = request.prompt;
  seq->sampler = std::make_unique<Sampler>(request.sampling, request.prompt);
  seq->detokenizer = std::make_unique<StreamingDetokenizer>(*tokenizer_);
  seq->stop_matcher = StopStringMatcher(request.stop);
  seq->request = std::move(request);
  std::shared_ptr<RequestStream> stream = seq->stream;
  waiting_.push_back(std::move(seq));
  stats_.waiting = static_cast<int>(waiting_.size());  // the rest is the engine thread's
  return stream;
}

void Scheduler::StopAdmitting() {
  absl::MutexLock lock(&mu_);
  admitting_ = false;
}

bool Scheduler::Idle() const {
  absl::MutexLock lock(&mu_);
  return waiting_.empty() && stats_.running == 0;
}

SchedulerStats Scheduler::Stats() const {
  absl::MutexLock lock(&mu_);
  SchedulerStats stats = stats_;
  stats.preemptions = num_preemptions_.load();
  stats.finished = num_finished_.load();
  return stats;
}

void Scheduler::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    admitting_ = false;
    shutdown_ = true;
  }
  if (thread_.joinable()) thread_.join();
  // The engine thread is gone: what is left is cancelled here.
  const absl::Time now = absl::Now();
  for (auto& seq : running_) {
    if (!seq->finished) Finish(seq.get(), FinishReason::kCancelled, now);
  }
  running_.clear();
  std::deque<std::unique_ptr<Sequence>> waiting;
  {
    absl::MutexLock lock(&mu_);
    waiting.swap(waiting_);
  }
  for (auto& seq : waiting) Finish(seq.get(), FinishReason::kCancelled, now);
  absl::MutexLock lock(&mu_);
  UpdateCountsLocked();
}

bool Scheduler::HasWork() const { return shutdown_ || !waiting_.empty() || !running_.empty(); }

void Scheduler::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Scheduler::HasWork));
      if (shutdown_) return;
    }
    if (!Step()) {
      // Nothing could run (e.g. the queue head waits for blocks): do not spin.
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&shutdown_), absl::Milliseconds(2));
    }
  }
}

bool Scheduler::Step() {
  const absl::Time start = absl::Now();
  DropCancelled(start);
  int budget = options_.max_tokens_per_step;
  std::vector<PlannedEntry> plan;
  PlanRunning(&budget, &plan);
  AdmitWaiting(start, &budget, &plan);
  RemoveFinishedFromRunning();
  if (plan.empty()) {
    PublishLoad();
    return false;
  }

  std::vector<BatchEntry> batch(plan.size());
  std::vector<SampleSlot> slots;  // entries whose chunk reaches the end of their tokens
  StepStats step;
  for (size_t i = 0; i < plan.size(); ++i) {
    const Sequence& seq = *plan[i].seq;
    BatchEntry& entry = batch[i];
    entry.tokens.assign(seq.tokens.begin() + seq.num_computed,
                        seq.tokens.begin() + seq.num_computed + plan[i].num_tokens);
    entry.start_position = seq.num_computed;
    entry.block_table = &seq.blocks;
    step.num_tokens += plan[i].num_tokens;
    step.has_prefill |= plan[i].num_tokens > 1;
    if (seq.remaining() == plan[i].num_tokens) slots.push_back({static_cast<int>(i), seq.sampler.get()});
  }
  std::vector<SampledToken> sampled;
  const absl::Status status = backend_->ForwardAndSample(batch, slots, &sampled);
  const absl::Time now = absl::Now();
  if (!status.ok()) {
    // A failed step ends its sequences with the error; the engine carries on.
    for (const PlannedEntry& entry : plan) {
      StreamChunk chunk;
      chunk.error = absl::InternalError(absl::StrCat("engine step failed: ", status.message()));
      Finish(entry.seq, FinishReason::kCancelled, now, std::move(chunk));
    }
  } else {
    AfterForward(plan, sampled, now);
  }
  RemoveFinishedFromRunning();
  PublishLoad();
  if (observer_) {
    step.seconds = Seconds(absl::Now() - start);
    step.batch_size = static_cast<int>(plan.size());
    observer_->OnStep(step);
  }
  return true;
}

void Scheduler::DropCancelled(absl::Time now) {
  const auto expired = [now](const Sequence& seq) {
    return seq.stream->cancelled() || now >= seq.request.deadline;
  };
  for (auto& seq : running_) {
    if (!seq->finished && expired(*seq)) Finish(seq.get(), FinishReason::kCancelled, now);
  }
  RemoveFinishedFromRunning();
  std::vector<std::unique_ptr<Sequence>> dropped;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (expired(**it)) {
        dropped.push_back(std::move(*it));
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    UpdateCountsLocked();
  }
  for (auto& seq : dropped) Finish(seq.get(), FinishReason::kCancelled, now);
}

void Scheduler::PlanRunning(int* budget, std::vector<PlannedEntry>* plan) {
  // Decodes first (one token each), then prefill chunks from what is left of the budget:
  // a long prompt never delays a running stream's next token. Oldest first in each pass.
  running_starved_ = false;
  std::vector<const Sequence*> planned;
  const auto is_planned = [&planned](const Sequence* s) {
    return std::find(planned.begin(), planned.end(), s) != planned.end();
  };
  for (const bool decode_pass : {true, false}) {
    for (size_t i = 0; i < running_.size() && *budget > 0; ++i) {
      Sequence* seq = running_[i].get();
      if (seq->finished || is_planned(seq) || (seq->remaining() == 1) != decode_pass) continue;
      const int n = ChunkTokens(seq->remaining(), *budget);
      if (n == 0) continue;
      if (!ReserveOrPreempt(seq, n, is_planned)) continue;
      plan->push_back({seq, n});
      planned.push_back(seq);
      *budget -= n;
    }
  }
}

bool Scheduler::ReserveOrPreempt(Sequence* seq, int n,
                                 const std::function<bool(const Sequence*)>& is_planned) {
  while (!allocator_.Reserve(&seq->blocks, seq->num_computed + n).ok()) {
    Sequence* newest = running_.back().get();
    if (newest != seq) {
      // Free the newest sequence's blocks (it is recomputed when readmitted), unless it
      // already has its tokens in this step: then `seq` waits for the next step.
      if (is_planned(newest)) {
        running_starved_ = true;
        return false;
      }
      Preempt(newest);
      continue;
    }
    if (running_.size() == 1) {
      // Alone and still out of blocks: the whole KV cache is too small for it.
      Finish(seq, FinishReason::kLength, absl::Now());
    } else {
      Preempt(seq);  // the newest yields to the older ones
    }
    return false;
  }
  return true;
}

void Scheduler::Preempt(Sequence* seq) {
  allocator_.Release(&seq->blocks);
  seq->num_computed = 0;
  auto it = std::find_if(running_.begin(), running_.end(),
                         [seq](const std::unique_ptr<Sequence>& s) { return s.get() == seq; });
  std::unique_ptr<Sequence> owned = std::move(*it);
  running_.erase(it);
  ++num_preemptions_;
  if (observer_) observer_->OnPreemption();
  absl::MutexLock lock(&mu_);
  waiting_.push_front(std::move(owned));  // first in line again
  UpdateCountsLocked();
}

void Scheduler::AdmitWaiting(absl::Time now, int* budget, std::vector<PlannedEntry>* plan) {
  absl::MutexLock lock(&mu_);
  // A running sequence waiting for blocks goes before newcomers.
  while (!running_starved_ && !waiting_.empty() &&
         static_cast<int>(running_.size()) < options_.max_running && *budget > 0) {
    Sequence* seq = waiting_.front().get();
    const int n = ChunkTokens(seq->remaining(), *budget);
    if (n == 0) break;
    // Keep one free block per running sequence so that their decodes can grow without
    // preempting the newcomer at once. First come, first served: nobody overtakes the head.
    const int needed = allocator_.BlocksFor(seq->num_computed + n);
    const int watermark = static_cast<int>(running_.size());
    if (needed + watermark > allocator_.num_free_blocks()) break;
    if (!allocator_.Reserve(&seq->blocks, seq->num_computed + n).ok()) break;
    if (seq->first_scheduled == absl::InfinitePast()) {
      seq->first_scheduled = now;
      if (observer_) observer_->OnScheduled(Seconds(now - seq->request.arrival));
    }
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    plan->push_back({seq, n});
    *budget -= n;
  }
  UpdateCountsLocked();
}

void Scheduler::AfterForward(const std::vector<PlannedEntry>& plan,
                             const std::vector<SampledToken>& sampled, absl::Time now) {
  size_t next_sample = 0;  // sampled[] follows the plan order of entries that finished a chunk
  for (size_t i = 0; i < plan.size(); ++i) {
    Sequence* seq = plan[i].seq;
    seq->num_computed += plan[i].num_tokens;
    if (seq->remaining() > 0) continue;  // a prefill chunk short of the prompt's end
    EmitToken(seq, sampled[next_sample++], now);
  }
}

void Scheduler::EmitToken(Sequence* seq, const SampledToken& token, absl::Time now) {
  const GenerationRequest& request = seq->request;
  seq->sampler->Accept(token.token);
  seq->tokens.push_back(token.token);
  ++seq->generated;
  if (seq->generated == 1) {
    seq->first_token = now;
    if (observer_) observer_->OnFirstToken(Seconds(now - request.arrival));
  } else if (observer_) {
    observer_->OnInterToken(Seconds(now - seq->last_token));
  }
  seq->last_token = now;

  StreamChunk chunk;
  chunk.tokens.push_back(token);
  FinishReason reason = FinishReason::kNone;
  if (Contains(request.stop_token_ids, token.token)) {
    reason = FinishReason::kStopToken;
  } else if (!request.ignore_eos && Contains(eos_ids_, token.token)) {
    reason = FinishReason::kEos;
  } else {
    // Special tokens (BOS, headers) are not part of the text, as skip_special_tokens.
    const std::string piece =
        tokenizer_->IsSpecial(token.token) ? std::string() : seq->detokenizer->Push(token.token);
    std::string matched;
    chunk.text = seq->stop_matcher.Append(piece, &matched);
    if (!matched.empty()) {
      reason = FinishReason::kStopSequence;
      seq->stop_sequence = matched;
    }
  }
  if (reason == FinishReason::kNone &&
      (seq->generated >= request.max_new_tokens ||
       static_cast<int>(seq->tokens.size()) >= limits_.context_length)) {
    reason = FinishReason::kLength;
  }
  if (reason == FinishReason::kNone) {
    seq->stream->Push(std::move(chunk));
  } else {
    Finish(seq, reason, now, std::move(chunk));
  }
}

void Scheduler::Finish(Sequence* seq, FinishReason reason, absl::Time now, StreamChunk chunk) {
  seq->finished = true;
  allocator_.Release(&seq->blocks);
  if (reason != FinishReason::kStopSequence && reason != FinishReason::kCancelled) {
    // Bytes held for an incomplete character, then text held as a possible stop prefix.
    std::string matched;
    chunk.text += seq->stop_matcher.Append(seq->detokenizer->Flush(), &matched);
    if (matched.empty()) {
      chunk.text += seq->stop_matcher.Flush();
    } else {
      reason = FinishReason::kStopSequence;
      seq->stop_sequence = matched;
    }
  }
  const GenerationRequest& request = seq->request;
  chunk.finished = true;
  chunk.finish_reason = reason;
  chunk.stop_sequence = seq->stop_sequence;
  chunk.prompt_tokens = static_cast<int>(request.prompt.size());
  chunk.completion_tokens = seq->generated;
  const absl::Time scheduled =
      seq->first_scheduled == absl::InfinitePast() ? now : seq->first_scheduled;
  chunk.queue_seconds = Seconds(scheduled - request.arrival);
  chunk.time_to_first_token_seconds =
      seq->generated > 0 ? Seconds(seq->first_token - request.arrival) : 0.0;
  chunk.total_seconds = Seconds(now - request.arrival);
  const bool failed = !chunk.error.ok();
  seq->stream->Push(std::move(chunk));
  ++num_finished_;
  if (observer_) {
    FinishedStats stats;
    stats.finish_reason = failed ? "error" : FinishReasonName(reason);
    stats.e2e_seconds = Seconds(now - request.arrival);
    stats.prompt_tokens = static_cast<int>(request.prompt.size());
    stats.completion_tokens = seq->generated;
    observer_->OnFinished(stats);
  }
}

void Scheduler::RemoveFinishedFromRunning() {
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const std::unique_ptr<Sequence>& s) { return s->finished; }),
                 running_.end());
  absl::MutexLock lock(&mu_);
  UpdateCountsLocked();
}

void Scheduler::UpdateCountsLocked() {
  stats_.running = static_cast<int>(running_.size());
  stats_.waiting = static_cast<int>(waiting_.size());
  stats_.free_kv_blocks = allocator_.num_free_blocks();
  stats_.total_kv_blocks = allocator_.num_blocks();
}

void Scheduler::PublishLoad() {
  LoadStats load;
  {
    absl::MutexLock lock(&mu_);
    UpdateCountsLocked();
    load.running = stats_.running;
    load.waiting = stats_.waiting;
    load.used_kv_blocks = stats_.total_kv_blocks - stats_.free_kv_blocks;
    load.total_kv_blocks = stats_.total_kv_blocks;
  }
  if (observer_) observer_->OnLoad(load);
}

}  // namespace flute
