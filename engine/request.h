// A generation request as the scheduler sees it (token ids, sampling, stop conditions), its
// validation, and the hand-off of its output from the engine thread to the request's handler.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/sampler.h"

namespace flute {

enum class FinishReason { kNone, kLength, kEos, kStopToken, kStopSequence, kCancelled };

// "length", "eos", "stop_token", "stop_sequence", "cancelled" ("none" for kNone).
const char* FinishReasonName(FinishReason reason);

struct GenerationRequest {
  std::string request_id;
  std::vector<int32_t> prompt;         // token ids, BOS included when the model wants it
  int max_new_tokens = 128;
  SamplingParams sampling;
  std::vector<std::string> stop;       // stop strings; the matched one is not returned
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  absl::Time arrival = absl::InfinitePast();    // set by the scheduler when submitted
  absl::Time deadline = absl::InfiniteFuture(); // past it, the request is cancelled
};

// What validation checks requests against.
struct RequestLimits {
  int vocab_size = 0;
  int context_length = 0;       // positions the model supports
  int kv_capacity_tokens = 0;   // tokens the whole KV cache holds
  int max_stop_strings = 16;
  int max_stop_string_bytes = 256;
  int max_stop_token_ids = 64;
};

// InvalidArgument naming the field, what is allowed and what was given: an empty prompt,
// a token id outside the vocab, a prompt that leaves no room in the context (or the KV
// cache) for one new token, max_new_tokens < 1, out-of-range sampling values, too many or
// empty stop strings, stop strings that are not UTF-8.
absl::Status ValidateRequest(const GenerationRequest& request, const RequestLimits& limits);

// InvalidArgument "<field> is not valid UTF-8 (invalid byte 0x.. at offset N)" unless
// `text` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
absl::Status CheckUtf8(std::string_view text, std::string_view field);

// One piece of a request's output. The engine may merge several steps' pieces into one
// when the handler reads slower than tokens arrive.
struct StreamChunk {
  std::vector<SampledToken> tokens;    // new tokens, with logprobs when asked
  std::string text;                    // their text: complete UTF-8 characters only
  bool finished = false;
  // Only when finished:
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_sequence;           // the stop string that matched
  absl::Status error;                  // an engine failure ends the stream with it
  int prompt_tokens = 0;
  int completion_tokens = 0;
  double queue_seconds = 0;            // arrival -> first scheduled
  double time_to_first_token_seconds = 0;
  double total_seconds = 0;
};

// The output channel of one request: the engine thread pushes, the handler pops. The
// handler (or the scheduler, for a passed deadline) cancels; the engine then frees the
// request's slot and KV blocks at its next step.
class RequestStream {
 public:
  explicit RequestStream(std::string request_id) : request_id_(std::move(request_id)) {}

  const std::string& request_id() const { return request_id_; }

  // Engine side: appends `chunk` to what the handler has not read yet.
  void Push(StreamChunk chunk);
  // Handler side: waits up to `timeout` for output; false when none arrived in time.
  bool Pop(absl::Duration timeout, StreamChunk* out);

  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  const std::string request_id_;
  std::atomic<bool> cancelled_{false};
  absl::Mutex mu_;
  bool has_pending_ = false;
  StreamChunk pending_;
};

// Finds stop strings in streamed text, holding back any tail that could still become one.
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends `text`; returns what may be sent now. When a stop string completes, returns
  // the text before it, sets *matched to it and drops everything after.
  std::string Append(std::string_view text, std::string* matched);
  // The held-back tail (at the end of a stream that did not stop on a string).
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

}  // namespace flute
