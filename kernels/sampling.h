// Token sampling on the GPU for a batch of rows of fp32 logits, with the semantics of the
// CPU sampler (engine/sampler.{h,cc}): repetition penalty on prompt + generated tokens,
// frequency and presence penalties on generated tokens, then greedy (argmax, ties to the
// lowest id) or temperature -> top-k -> softmax -> top-p -> min-p -> renormalise -> draw.
// Reported log-probabilities are log-softmax of the RAW logits (before penalties and
// temperature). Conventions as in kernels/llama_ops.h.
//
// The draw (temperature > 0), defined exactly so a test can predict it on the CPU:
//   w(id) = expf((l(id) - M) * (1 / temperature)) for the penalised logits l, M = max l;
//   the kept ids pass top-k and top-p in the rank order (higher logit first, ties to the
//   lower id) and min-p (w >= min_p); each kept id weighs W(id) = round(w(id) * 2^40), a
//   64-bit fixed-point weight (so sums are exact and the draw is bit-reproducible);
//   u = (random_bits >> 11) * 2^-53 in [0, 1), t = min(floor(u * sum W), sum W - 1);
//   the token is the first kept id, in INCREASING id order, whose running sum of W exceeds t
//   (inverse CDF over the kept ids in id order). Top-p keeps the shortest rank-order prefix of
//   the top-k candidates whose sum of W reaches min(S, ceil(top_p * S)), S their total W.
//   The CPU sampler sums float weights in double instead: the kept sets and the token agree
//   except where a sum lies within a few ulps (relative) of a boundary.
// Rows whose penalised logits hold a NaN, or whose maximum is infinite, are sampled greedily.
// Greedy: the highest penalised logit, ties to the lowest id (NaN never wins; all NaN gives
// vocab - 1, as the CPU sampler).
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

struct CUstream_st;

namespace flute::gpu {

inline constexpr int kMaxLogprobs = 20;

// One row's parameters, prepared on the host and copied to the device.
struct SamplingRow {
  float temperature = 1.0f;         // 0 = greedy
  int32_t top_k = 0;                // 0 = off
  float top_p = 1.0f;               // 1 = off
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t num_logprobs = 0;         // [0, kMaxLogprobs]
  // The row's penalty tokens are penalty_tokens[penalty_begin, penalty_end): distinct ids,
  // each with its count in the prompt and among the generated tokens.
  int32_t penalty_begin = 0;
  int32_t penalty_end = 0;
  uint64_t random_bits = 0;         // this step's draw: the same bits give the same token
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;                 // raw log-softmax of `token`
  int32_t top_tokens[kMaxLogprobs];     // num_logprobs best by raw logit, highest first
  float top_logprobs[kMaxLogprobs];     // (ties: lower id first)
};

// Samples one token per row of logits[rows, vocab] (which the kernel may overwrite: the
// logits of a row's penalty tokens are left penalised). Launched with programmatic dependent
// launch (kernels/pdl.cuh): the logits may come from the kernel just before on `stream`, but
// `params` must not (the kernels read them before their grid dependency wait; the engine
// uploads them with the step's inputs).
// penalty_tokens / prompt_counts / generated_counts: device int32 arrays indexed by the
// rows' penalty ranges. `results`: [rows], device memory or mapped pinned host memory.
// workspace: SamplingWorkspaceBytes.
// batch_invariant: every launch cuts a row into the same number of slices whatever `rows`
// is (the one-row count), so a row's log-sum-exp, and so its logprobs, have the same bits in
// a launch of any size (the engine's batch-invariant mode); otherwise the slices per row
// shrink as rows grow (to fill the SMs about twice), which changes the order in which the
// slices' partial sums combine. Tokens never depend on it (greedy and draws are exact).
absl::Status LaunchSampling(float* logits, int rows, int vocab, const SamplingRow* params,
                            const int32_t* penalty_tokens, const int32_t* prompt_counts,
                            const int32_t* generated_counts, SampleResult* results,
                            void* workspace, size_t workspace_bytes, CUstream_st* stream,
                            bool batch_invariant = false);

// rows * vocab floats, where the raw logits of the penalised tokens are kept (the kernel
// writes the penalised logits in place), then the rows' slice statistics (up to 128 slices
// of 88 bytes per row).
size_t SamplingWorkspaceBytes(int rows, int vocab);

// Host-side check of rows' parameters (LaunchSampling cannot read `params`, which lives on
// the device): InvalidArgument naming the row, the field, its value and the allowed range.
// The kernel clamps num_logprobs to [0, kMaxLogprobs] whatever it is given.
absl::Status ValidateSamplingRows(const SamplingRow* host_params, int rows, int vocab);

}  // namespace flute::gpu
