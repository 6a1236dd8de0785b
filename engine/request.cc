#include "engine/request.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/byte_level.h"
#include "engine/status_macros.h"

namespace flute {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "none";
    case FinishReason::kLength: return "length";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kStopSequence: return "stop_sequence";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "none";
}

absl::Status CheckUtf8(std::string_view text, std::string_view field) {
  for (size_t i = 0; i < text.size();) {
    size_t invalid = 0;
    bool incomplete = false;
    const size_t len = DecodeUtf8Char(text.substr(i), &invalid, &incomplete);
    if (len == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s is not valid UTF-8 (invalid byte 0x%02x at offset %d)", field,
          static_cast<unsigned char>(text[i]), i));
    }
    i += len;
  }
  return absl::OkStatus();
}

namespace {

absl::Status ValidatePrompt(const GenerationRequest& request, const RequestLimits& limits) {
  const int n = static_cast<int>(request.prompt.size());
  if (n == 0) return absl::InvalidArgumentError("prompt is empty: give at least one token");
  for (int i = 0; i < n; ++i) {
    const int32_t id = request.prompt[i];
    if (id < 0 || id >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token_ids[", i, "] = ", id,
                                                     " is outside the vocabulary [0, ",
                                                     limits.vocab_size, ")"));
    }
  }
  const int room = std::min(limits.context_length, limits.kv_capacity_tokens);
  if (n >= room) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt is ", n, " tokens; it must be shorter than the ",
        limits.context_length <= limits.kv_capacity_tokens ? "context length " : "KV cache (",
        room, limits.context_length <= limits.kv_capacity_tokens ? "" : " tokens)",
        " to leave room for at least one new token"));
  }
  return absl::OkStatus();
}

absl::Status ValidateStops(const GenerationRequest& request, const RequestLimits& limits) {
  if (static_cast<int>(request.stop.size()) > limits.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrCat("stop has ", request.stop.size(),
                                                   " strings; at most ", limits.max_stop_strings,
                                                   " are allowed"));
  }
  for (size_t i = 0; i < request.stop.size(); ++i) {
    const std::string& s = request.stop[i];
    const std::string field = absl::StrCat("stop[", i, "]");
    if (s.empty()) return absl::InvalidArgumentError(field + " is empty");
    if (static_cast<int>(s.size()) > limits.max_stop_string_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(field, " is ", s.size(), " bytes; at most ",
                                                     limits.max_stop_string_bytes,
                                                     " are allowed"));
    }
    RETURN_IF_ERROR(CheckUtf8(s, field));
  }
  if (static_cast<int>(request.stop_token_ids.size()) > limits.max_stop_token_ids) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stop_token_ids has ", request.stop_token_ids.size(), " ids; at most ",
        limits.max_stop_token_ids, " are allowed"));
  }
  for (size_t i = 0; i < request.stop_token_ids.size(); ++i) {
    const int32_t id = request.stop_token_ids[i];
    if (id < 0 || id >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids[", i, "] = ", id,
                                                     " is outside the vocabulary [0, ",
                                                     limits.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRequest(const GenerationRequest& request, const RequestLimits& limits) {
  RETURN_IF_ERROR(ValidatePrompt(request, limits));
  if (request.max_new_tokens < 1 || request.max_new_tokens > limits.context_length) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be in [1, ",
                                                   limits.context_length, "], got ",
                                                   request.max_new_tokens));
  }
  RETURN_IF_ERROR(ValidateSamplingParams(request.sampling, limits.vocab_size));
  return ValidateStops(request, limits);
}

void RequestStream::Push(StreamChunk chunk) {
  absl::MutexLock lock(&mu_);
  if (!has_pending_) {
    pending_ = std::move(chunk);
    has_pending_ = true;
    return;
  }
  // Merge: tokens and text accumulate; the finishing fields come from the last chunk.
  for (auto& t : chunk.tokens) pending_.tokens.push_back(std::move(t));
  pending_.text += chunk.text;
  if (chunk.finished) {
    std::vector<SampledToken> tokens = std::move(pending_.tokens);
    std::string text = std::move(pending_.text);
    pending_ = std::move(chunk);
    pending_.tokens = std::move(tokens);
    pending_.text = std::move(text);
  }
}

bool RequestStream::Pop(absl::Duration timeout, StreamChunk* out) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&has_pending_), timeout);
  if (!has_pending_) return false;
  *out = std::move(pending_);
  pending_ = StreamChunk();
  has_pending_ = false;
  return true;
}

std::string StopStringMatcher::Append(std::string_view text, std::string* matched) {
  held_.append(text.data(), text.size());
  if (stops_.empty()) return Flush();
  // The earliest complete stop string wins.
  size_t best = std::string::npos;
  for (const std::string& stop : stops_) {
    const size_t pos = held_.find(stop);
    if (pos != std::string::npos && (best == std::string::npos || pos < best)) {
      best = pos;
      *matched = stop;
    }
  }
  if (best != std::string::npos) {
    std::string out = held_.substr(0, best);
    held_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string. Stop strings
  // are valid UTF-8, so such a tail starts on a character boundary.
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    const size_t max_len = std::min(stop.size() - 1, held_.size());
    for (size_t len = max_len; len > keep; --len) {
      if (held_.compare(held_.size() - len, len, stop, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringMatcher::Flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace flute
