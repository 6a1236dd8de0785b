// Continuous batching: one engine thread runs Backend::Forward step after step over the
// running sequences; requests join and leave the batch at every step.
//
// Each step: cancelled or expired requests are dropped (their KV blocks freed); every running
// sequence gets its next tokens (one to decode, or a prefill chunk) within a per-step token
// budget, oldest first; when KV blocks run out the newest running sequence is preempted
// (blocks freed, recomputed later from its prompt plus what it generated); then waiting
// requests are admitted first come, first served while slots, budget and blocks allow.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "engine/request.h"
#include "engine/scheduler_observer.h"
#include "engine/tokenizer.h"

namespace flute {

struct SchedulerOptions {
  int max_running = 32;          // sequences in the running batch at most
  int max_waiting = 256;         // queued requests at most; beyond, ResourceExhausted
  int max_tokens_per_step = 512; // token budget per step (chunked prefill); >= max_running
  // The backend's batch-invariant mode: prefill chunks are cut with PrefillChunkTokens, so no
  // prompt position ever runs as a 1-token chunk (see there); max_tokens_per_step must then
  // be at least max_running + 2, so that a prefill always makes progress.
  bool batch_invariant = false;
};

// Tokens of the next prefill chunk of a sequence with `remaining` (> 1) tokens left to
// compute and `budget` tokens left in the step, in the batch-invariant mode: never a chunk of
// 1 token, nor one that leaves 1 token for the next; 0 = wait for the next step. A 1-token
// chunk runs the decode attention, whose sums go in another order than the prefill
// attention's, so that position's K/V and logits would depend on where the prompt was cut,
// that is on the other sequences of the step.
int PrefillChunkTokens(int remaining, int budget);

struct SchedulerStats {
  int running = 0;
  int waiting = 0;
  int free_kv_blocks = 0;
  int total_kv_blocks = 0;
  int64_t preemptions = 0;
  int64_t finished = 0;
};

class Scheduler {
 public:
  // `backend` and `tokenizer` must outlive the scheduler; `observer` may be null.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(Backend* backend,
                                                           const Tokenizer* tokenizer,
                                                           const SchedulerOptions& options,
                                                           SchedulerObserver* observer);
  ~Scheduler();  // Shutdown()

  // Validates and queues `request`; its output arrives on the returned stream.
  // InvalidArgument for a bad request, ResourceExhausted when the queue is full,
  // Unavailable once StopAdmitting() or Shutdown() was called.
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(GenerationRequest request);

  void StopAdmitting();     // draining: later Submit calls fail with Unavailable
  bool Idle() const;        // nothing running or waiting
  // Cancels everything still running or waiting and stops the engine thread.
  void Shutdown();

  SchedulerStats Stats() const;
  const SchedulerOptions& options() const { return options_; }
  const RequestLimits& limits() const { return limits_; }

 private:
  struct Sequence;
  struct PlannedEntry;

  Scheduler(Backend* backend, const Tokenizer* tokenizer, const SchedulerOptions& options,
            SchedulerObserver* observer);

  void Loop();
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One engine step; false when there was nothing to run.
  bool Step();
  void DropCancelled(absl::Time now);
  // Plans this step's running sequences, preempting when blocks run out.
  void PlanRunning(int* budget, std::vector<PlannedEntry>* plan);
  // Tokens a sequence with `remaining` tokens left computes in a step with `budget` left: all
  // it can, or PrefillChunkTokens in the batch-invariant mode (0: not this step).
  int ChunkTokens(int remaining, int budget) const {
    if (!options_.batch_invariant || remaining <= 1) return std::min(remaining, budget);
    return PrefillChunkTokens(remaining, budget);
  }
  // Extends seq's blocks by `n` tokens, preempting newer unplanned sequences as needed;
  // false when seq cannot run this step (it waits, or was itself preempted or finished).
  bool ReserveOrPreempt(Sequence* seq, int n,
                        const std::function<bool(const Sequence*)>& is_planned);
  void AdmitWaiting(absl::Time now, int* budget, std::vector<PlannedEntry>* plan);
  void Preempt(Sequence* seq);
  // Feeds back the logits of a finished step: samples, streams, finishes sequences.
  void AfterForward(const std::vector<PlannedEntry>& plan, const std::vector<SampledToken>& sampled,
                    absl::Time now);
  void EmitToken(Sequence* seq, const SampledToken& token, absl::Time now);
  // Ends `seq`: frees its blocks and sends `chunk` (plus any held-back text) as the last.
  void Finish(Sequence* seq, FinishReason reason, absl::Time now, StreamChunk chunk = {});
  void RemoveFinishedFromRunning();
  void UpdateCountsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLoad();

  Backend* const backend_;
  const Tokenizer* const tokenizer_;
  const SchedulerOptions options_;
  SchedulerObserver* const observer_;
  RequestLimits limits_;
  std::vector<int32_t> eos_ids_;

  // Engine-thread state.
  KvBlockAllocator allocator_;
  std::vector<std::unique_ptr<Sequence>> running_;  // in admission order
  bool running_starved_ = false;  // this step, a running sequence got no blocks

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Sequence>> waiting_ ABSL_GUARDED_BY(mu_);  // preempted at front
  bool admitting_ ABSL_GUARDED_BY(mu_) = true;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  SchedulerStats stats_ ABSL_GUARDED_BY(mu_);
  int64_t next_request_number_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int64_t> num_preemptions_{0};
  std::atomic<int64_t> num_finished_{0};

  std::thread thread_;
};

}  // namespace flute
