// Token sampling on the GPU (see sampling.h for the semantics and the exact draw).
//
// Two kernels, the second launched with programmatic dependent launch (PDL):
//   SliceStatsKernel: rows x slices CTAs of 256 threads (SlicesPerRow: as many slices per row
//     as fill the SMs about twice), each reading one slice of a row's logits once, from L2:
//     1. raw statistics of the slice: the log-sum-exp terms (online max / sum per thread,
//        combined in double), the greedy choice and the NaN flag of step 4 (used for rows
//        without penalties: a greedy row is read once, by many SMs), and each warp's largest
//        raw rank key (a bound for the top-N logprobs). Written to the workspace.
//   SamplingKernel: one CTA of 1024 threads per row, which combines its row's slice statistics
//   (one warp, in double) and does the rest:
//   2. if num_logprobs > 0: collect the raw keys at or above the N-th largest warp maximum
//      (at least N elements, usually a few dozen) in shared memory and rank them exactly;
//   3. penalties, in place for the row's penalty tokens, their raw logits kept in the
//      workspace (the chosen token's logprob needs its raw logit);
//   4. greedy pass (rows with penalties): the largest penalised rank key (= argmax, ties to
//      the lowest id) and NaN;
//   5. top-k and top-p cuts: radix select over the 64-bit rank key, 11 bits a round, with
//      shared-memory histograms of counts (top-k) or fixed-point weights (top-p); a round is
//      one pass over the elements still sharing the selected prefix, and the select stops as
//      soon as the selected bin holds a single element (usually after 2-3 rounds);
//   6. the draw: each warp sums the fixed-point weights of the kept ids in its contiguous
//      chunk of ids; the chunk holding the target is rescanned by its warp in id order.
// Fixed-point (2^-40) 64-bit weight sums are exact and order-independent, so the same
// random_bits always give the same token. No allocation, no host synchronisation.
//
// Why two kernels: a greedy row's only work is step 1, a pass over 128256 floats. One CTA
// takes ~30 us for it and a cluster of 8 CTAs (the previous design) ~11 us, mostly latency;
// 128 CTAs read 1 KB-4 KB each.
#include "kernels/sampling.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>


#include "absl/strings/str_cat.h"
#include "kernels/pdl.cuh"

namespace flute::gpu {
namespace {

constexpr int kThreads = 1024;  // SamplingKernel
constexpr int kWarps = kThreads / 32;
constexpr int kStatsThreads = 256;  // SliceStatsKernel
constexpr int kStatsWarps = kStatsThreads / 32;
constexpr int kDigitBits = 11;
constexpr int kBins = 1 << kDigitBits;
constexpr int kTopCandidates = 1024;  // raw top-N candidates kept in shared memory
constexpr float kWeightScale = 1099511627776.0f;  // 2^40: fixed-point weight of w = 1
constexpr int kMaxSlices = 128;  // slices (SliceStatsKernel CTAs) per row at most
// TopRawKeys ranks every slice's warp maxima with one thread each.
static_assert(kMaxSlices * kStatsWarps <= kThreads, "one thread per warp maximum");

// What a slice of the row contributes to the row's raw statistics (in the workspace).
struct SliceStats {
  float max;                                 // the slice's largest logit (NaN ignored; -inf if none)
  unsigned int nan;                          // 1 if the slice holds a NaN
  double sum;                                // sum of exp(x - max) over it (NaN propagates)
  unsigned long long greedy;                 // the largest GreedyKey
  unsigned long long warp_max[kStatsWarps];  // each warp's largest raw rank key (0 if it has none)
};

struct RawStats {
  double log_normalizer;             // log(sum(exp(raw))) as the CPU computes it
  unsigned long long greedy_key;     // the row's largest GreedyKey (rows without penalties)
  bool any_nan;                      // whether the row holds a NaN (rows without penalties)
};

struct Shared {
  SliceStats slices[kMaxSlices];  // the row's slice statistics
  unsigned int count[kBins];
  unsigned long long mass[kBins];
  unsigned long long candidates[kTopCandidates];
  unsigned long long u64[kWarps];
  double f64[kWarps];
  float f32[kWarps];
  RawStats raw;
  int num_candidates;
  unsigned long long selected_prefix;
  unsigned long long selected_above;
  unsigned int selected_count;
  unsigned long long target;
  int token;
};

// ---- keys ----

// Rank key: larger = higher logit, ties to the lower id (as the CPU sampler's RankKey).
__device__ __forceinline__ unsigned long long RankKey(float value, int id) {
  if (value == 0.0f) value = 0.0f;  // -0 ranks as +0
  unsigned int bits = __float_as_uint(value);
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<unsigned long long>(bits) << 32) | (0xffffffffu - static_cast<unsigned int>(id));
}

// The value a RankKey was made of (-0 comes back as +0).
__device__ __forceinline__ float KeyValue(unsigned long long key) {
  const unsigned int bits = static_cast<unsigned int>(key >> 32);
  return __uint_as_float((bits & 0x80000000u) ? (bits & 0x7fffffffu) : ~bits);
}

__device__ __forceinline__ int KeyId(unsigned long long key) {
  return static_cast<int>(0xffffffffu - static_cast<unsigned int>(key));
}

// Greedy key: as RankKey, but NaN never wins (0 is below every other key).
__device__ __forceinline__ unsigned long long GreedyKey(float value, int id) {
  return isnan(value) ? 0ull : RankKey(value, id);
}

// Fixed-point softmax weight exp((l - max) / T) * 2^40 (the max has exactly 2^40).
__device__ __forceinline__ float Weight(float logit, float max_logit, float inv_temperature) {
  return expf(__fmul_rn(__fsub_rn(logit, max_logit), inv_temperature));
}
__device__ __forceinline__ unsigned long long FixedWeight(float w) {
  return __float2ull_rn(w * kWeightScale);
}

// ---- warp / block reductions (every thread gets the result) ----

template <typename T, typename Op>
__device__ __forceinline__ T WarpAllReduce(T v, Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

struct MaxU64 {
  __device__ unsigned long long operator()(unsigned long long a, unsigned long long b) const {
    return a > b ? a : b;
  }
};
struct SumU64 {
  __device__ unsigned long long operator()(unsigned long long a, unsigned long long b) const {
    return a + b;
  }
};
struct MaxF32 {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumF64 {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct OrU32 {
  __device__ unsigned int operator()(unsigned int a, unsigned int b) const { return a | b; }
};

// kBlockWarps: the block's warps (all of them take part).
template <int kBlockWarps = kWarps, typename T, typename Op>
__device__ T BlockAllReduce(T v, Op op, T* scratch) {
  v = WarpAllReduce(v, op);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < kBlockWarps; ++w) r = op(r, scratch[w]);
  __syncthreads();
  return r;
}

// ---- element loops ----

// Calls f(value, id) for every id of the row this thread owns (id = threadIdx.x mod
// kThreads, or begin + lane mod 32 within a warp's chunk), loading kBatch values before
// using any, so that enough loads are in flight to cover L2 latency.
constexpr int kBatch = 8;

template <typename F>
__device__ __forceinline__ void ForEachStrided(const float* l, int begin, int end, int stride,
                                               F f) {
  int id = begin;
  for (; id + (kBatch - 1) * stride < end; id += kBatch * stride) {
    float x[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) x[i] = l[id + i * stride];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) f(x[i], id + i * stride);
  }
  for (; id < end; id += stride) f(l[id], id);
}

// Ids [begin, end) of the row l, in 16-byte pieces: thread t of a block of kBlockThreads takes
// the float4 pieces t, t + kBlockThreads, ... (kBatch4 of them in flight: 64 KB per CTA of
// 1024 threads, four times what scalar loads put in flight), calling f on each piece's 4 ids
// in id order; the ids before the first 16-byte boundary and after the last one go to threads
// 0-3 one by one. Every id is visited once.
constexpr int kBatch4 = 4;
template <int kBlockThreads = kThreads, typename F>
__device__ __forceinline__ void ForEachIdIn(const float* l, int begin, int end, F f) {
  const int misaligned = static_cast<int>((16 - reinterpret_cast<uintptr_t>(l + begin) % 16) % 16 / 4);
  const int head = begin + min(end - begin, misaligned);
  const int pieces = (end - head) / 4;
  const int tail = head + 4 * pieces;
  const float4* l4 = reinterpret_cast<const float4*>(l + head);
  const int t = static_cast<int>(threadIdx.x);
  int piece = t;
  for (; piece + (kBatch4 - 1) * kBlockThreads < pieces; piece += kBatch4 * kBlockThreads) {
    float4 x[kBatch4];
#pragma unroll
    for (int i = 0; i < kBatch4; ++i) x[i] = l4[piece + i * kBlockThreads];
#pragma unroll
    for (int i = 0; i < kBatch4; ++i) {
      const int id = head + 4 * (piece + i * kBlockThreads);
      f(x[i].x, id);
      f(x[i].y, id + 1);
      f(x[i].z, id + 2);
      f(x[i].w, id + 3);
    }
  }
  for (; piece < pieces; piece += kBlockThreads) {
    const float4 x = l4[piece];
    const int id = head + 4 * piece;
    f(x.x, id);
    f(x.y, id + 1);
    f(x.z, id + 2);
    f(x.w, id + 3);
  }
  if (t < head - begin) f(l[begin + t], begin + t);
  if (t < end - tail) f(l[tail + t], tail + t);
}

template <typename F>
__device__ __forceinline__ void ForEachId(const float* l, int vocab, F f) {
  ForEachIdIn(l, 0, vocab, f);
}

// ---- 1. raw statistics ----
// A row is cut into `slices` slices of ids, one per SliceStatsKernel CTA; SamplingKernel
// combines the row's slices.

// Online max / sum of exp per thread over ids [begin, end), combined over the block in double,
// with the greedy key and the NaN flag of step 4; written to `out` (global) by thread 0 and
// each warp's lane 0.
struct StatsShared {
  float f32[kStatsWarps];
  double f64[kStatsWarps];
  unsigned long long u64[kStatsWarps];
};

__device__ void SlicePass(const float* raw, int begin, int end, SliceStats* out, StatsShared& sh) {
  float m = -INFINITY, s = 0.0f;
  unsigned long long best = 0, greedy = 0;
  unsigned int nan = 0;
  ForEachIdIn<kStatsThreads>(raw, begin, end, [&](float x, int id) {
    const unsigned long long key = RankKey(x, id);
    best = key > best ? key : best;
    const bool is_nan = isnan(x);
    nan |= is_nan ? 1u : 0u;
    greedy = !is_nan && key > greedy ? key : greedy;  // GreedyKey(x, id): NaN never wins
    if (x == -INFINITY) return;  // weight 0 (and would give inf - inf below)
    if (x > m) {
      s = s * expf(m - x) + 1.0f;
      m = x;
    } else {
      s += expf(x - m);  // NaN propagates into the sum, as on the CPU
    }
  });
  best = WarpAllReduce(best, MaxU64{});
  if (threadIdx.x % 32 == 0) out->warp_max[threadIdx.x / 32] = best;
  // The CPU's maximum ignores NaN; fmaxf does too.
  const float block_max = BlockAllReduce<kStatsWarps>(m, MaxF32{}, sh.f32);
  double part = 0.0;
  if (s != 0.0f) part = static_cast<double>(s) * exp(static_cast<double>(m) - block_max);
  if (isnan(s)) part = s;
  const double sum = BlockAllReduce<kStatsWarps>(part, SumF64{}, sh.f64);
  greedy = BlockAllReduce<kStatsWarps>(greedy, MaxU64{}, sh.u64);
  nan = BlockAllReduce<kStatsWarps>(nan, OrU32{}, reinterpret_cast<unsigned int*>(sh.f32));
  if (threadIdx.x == 0) {
    out->max = block_max;
    out->sum = sum;
    out->greedy = greedy;
    out->nan = nan;
  }
}

// The row's statistics from its slices' (in shared memory), by warp 0: the slices' sums
// rescaled to the row's maximum, in double; every thread gets them (from sh.raw).
__device__ RawStats CombineSlices(int count, Shared& sh) {
  if (threadIdx.x < 32) {
    float row_max = -INFINITY;
    for (int j = threadIdx.x; j < count; j += 32) row_max = fmaxf(row_max, sh.slices[j].max);
    row_max = WarpAllReduce(row_max, MaxF32{});
    double sum = 0.0;
    unsigned long long greedy = 0;
    unsigned int nan = 0;
    for (int j = threadIdx.x; j < count; j += 32) {
      const SliceStats& slice = sh.slices[j];
      if (isnan(slice.sum)) {
        sum += slice.sum;
      } else if (slice.sum != 0.0) {
        sum += slice.sum * exp(static_cast<double>(slice.max) - row_max);
      }
      greedy = slice.greedy > greedy ? slice.greedy : greedy;
      nan |= slice.nan;
    }
    sum = WarpAllReduce(sum, SumF64{});
    greedy = WarpAllReduce(greedy, MaxU64{});
    nan = WarpAllReduce(nan, OrU32{});
    if (threadIdx.x == 0) {
      sh.raw.log_normalizer = isfinite(row_max) ? static_cast<double>(row_max) + log(sum) : row_max;
      sh.raw.greedy_key = greedy;
      sh.raw.any_nan = nan != 0;
    }
  }
  __syncthreads();
  return sh.raw;
}

// ---- 2. top-N raw logprobs ----

// Writes the n best raw keys, highest first, into out_keys (shared, n entries). The warp
// maxima of every slice are in sh.slices[0, num_slices).
__device__ void TopRawKeys(const float* raw, int vocab, int n, int num_slices, unsigned long long* out_keys,
                           Shared& sh) {
  // A lower bound for the n-th largest key: the n-th largest warp maximum (n distinct
  // elements reach it). Warps without elements report 0, which admits every element.
  const auto warp_max = [&](int w) { return sh.slices[w / kStatsWarps].warp_max[w % kStatsWarps]; };
  const int maxima = num_slices * kStatsWarps;
  if (threadIdx.x == 0) sh.num_candidates = 0;
  if (static_cast<int>(threadIdx.x) < maxima) {
    const unsigned long long mine = warp_max(threadIdx.x);
    int rank = 0;  // distinct ranks even for equal (empty-warp) maxima
    for (int w = 0; w < maxima; ++w) {
      const unsigned long long other = warp_max(w);
      rank += (other > mine) || (other == mine && w < static_cast<int>(threadIdx.x));
    }
    if (rank == n - 1) sh.selected_prefix = mine;
  }
  __syncthreads();
  // Fewer warp maxima than n (one or two slices per row: tests, FLUTE_SAMPLING_SLICES): no
  // bound, every element is a candidate.
  const unsigned long long bound = maxima >= n ? sh.selected_prefix : 0ull;
  __syncthreads();

  ForEachId(raw, vocab, [&](float x, int id) {
    const unsigned long long key = RankKey(x, id);
    if (key >= bound) {
      const int slot = atomicAdd(&sh.num_candidates, 1);
      if (slot < kTopCandidates) sh.candidates[slot] = key;
    }
  });
  __syncthreads();
  const int count = sh.num_candidates;
  if (count <= kTopCandidates) {
    // Exact ranks among distinct keys.
    if (threadIdx.x < count) {
      const unsigned long long mine = sh.candidates[threadIdx.x];
      int rank = 0;
      for (int c = 0; c < count; ++c) rank += sh.candidates[c] > mine;
      if (rank < n) out_keys[rank] = mine;
    }
    __syncthreads();
    return;
  }
  // Too many candidates (cannot happen with n <= 20 and distinct keys unless the bound is 0
  // on a large row, i.e. never in practice): n rounds of block argmax below the previous key.
  unsigned long long previous = ~0ull;
  for (int r = 0; r < n; ++r) {
    unsigned long long best = 0;
    for (int id = threadIdx.x; id < vocab; id += kThreads) {
      const unsigned long long key = RankKey(raw[id], id);
      if (key < previous && key > best) best = key;
    }
    previous = BlockAllReduce(best, MaxU64{}, sh.u64);
    if (threadIdx.x == 0) out_keys[r] = previous;
  }
  __syncthreads();
}

// ---- 3. penalties ----

// As the CPU sampler: repetition on prompt or generated tokens, then frequency and presence
// on generated tokens, each rounding step as written there (no fused multiply-add).
__device__ __forceinline__ float Penalize(float l, const SamplingRow& p, int prompt_count,
                                          int generated_count) {
  if (p.repetition_penalty != 1.0f && (prompt_count > 0 || generated_count > 0)) {
    l = l > 0.0f ? __fdiv_rn(l, p.repetition_penalty) : __fmul_rn(l, p.repetition_penalty);
  }
  if (generated_count > 0) {
    const float amount = __fadd_rn(__fmul_rn(p.frequency_penalty, static_cast<float>(generated_count)),
                                   p.presence_penalty);
    l = __fsub_rn(l, amount);
  }
  return l;
}

// ---- 5. radix select of a cut key ----

// Elements (penalised logit l, rank key) with key >= lower, in decreasing key order, adding
// 1 (by_mass false) or the fixed-point weight (by_mass true) each: returns the key of the
// element at which the running total first reaches the target. The target is `count_target`
// for counts, ceil(top_p * total weight) for weights. Keys >= the result (and >= lower) are
// kept: the result can be below `lower` when the select stops early on a one-element bin.
__device__ unsigned long long SelectCut(const float* l, int vocab, float max_logit, float inv_t,
                                        unsigned long long lower, bool by_mass,
                                        unsigned long long count_target, float top_p,
                                        Shared& sh) {
  unsigned long long prefix = 0;  // the selected high bits so far
  unsigned long long above = 0;   // total of the elements above the selected prefix
  unsigned long long target = count_target;
  int shift = 64;
  for (int round = 0; shift > 0; ++round) {
    const int bits = shift >= kDigitBits ? kDigitBits : shift;
    const int high = shift;  // bits [high, 64) are fixed
    shift -= bits;
    for (int b = threadIdx.x; b < kBins; b += kThreads) {
      sh.count[b] = 0;
      sh.mass[b] = 0;
    }
    __syncthreads();
    const unsigned long long digit_mask = (1ull << bits) - 1;
    ForEachId(l, vocab, [&](float x, int id) {
      const unsigned long long key = RankKey(x, id);
      if (key < lower) return;
      if (high < 64 && (key >> high) != (prefix >> high)) return;
      const int digit = static_cast<int>((key >> shift) & digit_mask);
      atomicAdd(&sh.count[digit], 1u);
      if (by_mass) {
        const unsigned long long w = FixedWeight(Weight(x, max_logit, inv_t));
        if (w != 0) atomicAdd(&sh.mass[digit], w);
      }
    });
    __syncthreads();
    if (round == 0 && by_mass) {
      unsigned long long part = 0;
      for (int b = threadIdx.x; b < kBins; b += kThreads) part += sh.mass[b];
      const unsigned long long total = BlockAllReduce(part, SumU64{}, sh.u64);
      double t = ceil(static_cast<double>(top_p) * static_cast<double>(total));
      target = t >= static_cast<double>(total) ? total : static_cast<unsigned long long>(t);
    }
    // Warp 0 finds the highest digit at which above + (bins from the top) reaches target:
    // lane i owns the 64 bins [kBins - 64 (i + 1), kBins - 64 i), the top ones first.
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      constexpr int kPerLane = kBins / 32;
      const int top = kBins - kPerLane * lane;  // this lane's bins are [top - kPerLane, top)
      unsigned long long mine = 0;
      for (int b = top - 1; b >= top - kPerLane; --b) mine += by_mass ? sh.mass[b] : sh.count[b];
      unsigned long long inclusive = mine;  // over lanes 0..lane (higher bins first)
      for (int offset = 1; offset < 32; offset <<= 1) {
        const unsigned long long other = __shfl_up_sync(0xffffffffu, inclusive, offset);
        if (lane >= offset) inclusive += other;
      }
      const bool reaches = above + inclusive >= target;
      const unsigned int ballot = __ballot_sync(0xffffffffu, reaches);
      // If rounding left the target out of reach, take the lowest non-empty bin.
      const int owner = ballot ? __ffs(ballot) - 1 : 31;
      if (lane == owner) {
        unsigned long long running = above + inclusive - mine;
        int chosen = -1;
        int lowest_nonempty = top - kPerLane;
        for (int b = top - 1; b >= top - kPerLane; --b) {
          if (sh.count[b] == 0) continue;
          lowest_nonempty = b;
          running += by_mass ? sh.mass[b] : sh.count[b];
          if (running >= target) {
            chosen = b;
            break;
          }
        }
        if (chosen < 0) chosen = lowest_nonempty;
        unsigned long long higher = above + inclusive - mine;
        for (int b = top - 1; b > chosen; --b) higher += by_mass ? sh.mass[b] : sh.count[b];
        sh.selected_prefix = prefix | (static_cast<unsigned long long>(chosen) << shift);
        sh.selected_above = higher;
        sh.selected_count = sh.count[chosen];
      }
    }
    __syncthreads();
    prefix = sh.selected_prefix;
    above = sh.selected_above;
    const unsigned int in_bin = sh.selected_count;
    __syncthreads();
    if (in_bin <= 1) break;  // one element left: every key with this prefix is it
  }
  return prefix;
}

// ---- 6. the draw ----

__device__ __forceinline__ unsigned long long KeptWeight(float x, int id, float max_logit,
                                                         float inv_t, unsigned long long cut,
                                                         float min_p) {
  if (RankKey(x, id) < cut) return 0;
  const float w = Weight(x, max_logit, inv_t);
  return w >= min_p ? FixedWeight(w) : 0;
}

// Inverse CDF over the kept ids in increasing id order (see sampling.h).
__device__ int Draw(const float* l, int vocab, float max_logit, float inv_t,
                    unsigned long long cut, float min_p, unsigned long long random_bits,
                    int fallback, Shared& sh) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int chunk = (vocab + kWarps - 1) / kWarps;
  const int begin = min(vocab, warp * chunk), end = min(vocab, begin + chunk);
  unsigned long long sum = 0;
  ForEachStrided(l, begin + lane, end, 32, [&](float x, int id) {
    sum += KeptWeight(x, id, max_logit, inv_t, cut, min_p);
  });
  sum = WarpAllReduce(sum, SumU64{});
  if (lane == 0) sh.u64[warp] = sum;
  if (threadIdx.x == 0) sh.token = fallback;
  __syncthreads();
  unsigned long long total = 0;
  for (int w = 0; w < kWarps; ++w) total += sh.u64[w];
  if (total > 0) {
    const double u = static_cast<double>(random_bits >> 11) * 0x1.0p-53;
    const double scaled = floor(u * static_cast<double>(total));
    unsigned long long t = scaled >= static_cast<double>(total)
                               ? total - 1
                               : static_cast<unsigned long long>(scaled);
    if (t >= total) t = total - 1;
    unsigned long long base = 0;
    for (int w = 0; w < warp; ++w) base += sh.u64[w];
    const bool mine = base <= t && t < base + sh.u64[warp];
    if (mine) {  // the whole warp agrees: one warp owns t
      for (int first = begin; first < end; first += 32) {
        const int id = first + lane;
        const unsigned long long w =
            id < end ? KeptWeight(l[id], id, max_logit, inv_t, cut, min_p) : 0;
        unsigned long long inclusive = w;
        for (int offset = 1; offset < 32; offset <<= 1) {
          const unsigned long long other = __shfl_up_sync(0xffffffffu, inclusive, offset);
          if (lane >= offset) inclusive += other;
        }
        const unsigned int hit = __ballot_sync(0xffffffffu, base + inclusive > t);
        if (hit) {
          if (lane == 0) sh.token = first + __ffs(hit) - 1;
          break;
        }
        base += __shfl_sync(0xffffffffu, inclusive, 31);
      }
    }
  }
  __syncthreads();
  const int token = sh.token;
  __syncthreads();
  return token;
}

// ---- the kernels ----

struct KernelArgs {
  float* logits;
  int vocab;
  const SamplingRow* params;
  const int32_t* penalty_tokens;
  const int32_t* prompt_counts;
  const int32_t* generated_counts;
  SampleResult* results;
  float* raw_stash;    // [rows, vocab]
  SliceStats* stats;   // [rows, slices]
  int slices;          // slices per row, 1 to kMaxSlices
};

__device__ bool HasPenalties(const SamplingRow& p) {
  return p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
}

// Slice j of a row: ids [j * per_slice, (j + 1) * per_slice) within the vocabulary, per_slice
// a multiple of 4 (whole 16-byte pieces but the row's last).
__device__ __forceinline__ int SliceLength(int vocab, int slices) {
  return (vocab + 4 * slices - 1) / (4 * slices) * 4;
}

// Grid: rows x slices CTAs of kStatsThreads; CTA b takes slice b % slices of row b / slices.
__global__ void __launch_bounds__(kStatsThreads) SliceStatsKernel(KernelArgs args) {
  const trace::Scope trace_scope(trace::kSampling);
  PdlPrologue();  // launched with programmatic stream serialization (kernels/pdl.cuh)
  __shared__ StatsShared sh;
  const int row = blockIdx.x / args.slices, slice = blockIdx.x % args.slices;
  const int per_slice = SliceLength(args.vocab, args.slices);
  const int begin = min(args.vocab, slice * per_slice), end = min(args.vocab, begin + per_slice);
  SlicePass(args.logits + static_cast<size_t>(row) * args.vocab, begin, end, args.stats + blockIdx.x, sh);
}

// Grid: one CTA of kThreads per row, after SliceStatsKernel (PDL).
__global__ void __launch_bounds__(kThreads) SamplingKernel(KernelArgs args) {
  const trace::Scope trace_scope(trace::kSampling);
  const int row = blockIdx.x;
  const SamplingRow p = args.params[row];  // no kernel writes it (sampling.h): read before the wait
  PdlPrologue();  // the slice statistics are complete past this point
  __shared__ Shared sh;
  __shared__ unsigned long long top_keys[kMaxLogprobs];
  const int slices = args.slices;
  const int vocab = args.vocab;
  float* l = args.logits + static_cast<size_t>(row) * vocab;
  float* stash = args.raw_stash + static_cast<size_t>(row) * vocab;
  SampleResult* result = args.results + row;

  // 1. The row's raw statistics, from its slices', before anything is overwritten. Word by
  // word: SliceStats is a multiple of 8 bytes.
  constexpr int kWords = sizeof(SliceStats) / 8;
  static_assert(sizeof(SliceStats) % 8 == 0, "SliceStats is copied in 8-byte words");
  const unsigned long long* stats_words =
      reinterpret_cast<const unsigned long long*>(args.stats + static_cast<size_t>(row) * slices);
  for (int w = threadIdx.x; w < slices * kWords; w += kThreads) {
    reinterpret_cast<unsigned long long*>(sh.slices)[w] = stats_words[w];
  }
  __syncthreads();
  const RawStats raw = CombineSlices(slices, sh);
  const bool penalised = HasPenalties(p);

  // 2. Top logprobs.
  int n = p.num_logprobs < 0 ? 0 : (p.num_logprobs > kMaxLogprobs ? kMaxLogprobs : p.num_logprobs);
  n = n < vocab ? n : vocab;
  if (n > 0) TopRawKeys(l, vocab, n, slices, top_keys, sh);
  if (threadIdx.x < n) {
    const int id = KeyId(top_keys[threadIdx.x]);
    result->top_tokens[threadIdx.x] = id;
    result->top_logprobs[threadIdx.x] = static_cast<float>(l[id] - raw.log_normalizer);
  }
  __syncthreads();  // the raw values read above are about to change

  // 3. Penalties in place (distinct ids: no two threads write the same logit).
  if (penalised) {
    for (int j = p.penalty_begin + threadIdx.x; j < p.penalty_end; j += kThreads) {
      const int id = args.penalty_tokens[j];
      if (id < 0 || id >= vocab) continue;
      const float x = l[id];
      stash[id] = x;
      l[id] = Penalize(x, p, args.prompt_counts[j], args.generated_counts[j]);
    }
  }
  __syncthreads();

  // 4. Greedy choice and NaN (from the raw pass when nothing was penalised).
  unsigned long long best = raw.greedy_key;
  bool any_nan = raw.any_nan;
  if (penalised) {
    best = 0;
    unsigned int nan = 0;
    ForEachId(l, vocab, [&](float x, int id) {
      const unsigned long long key = GreedyKey(x, id);
      best = key > best ? key : best;
      nan |= isnan(x) ? 1u : 0u;
    });
    best = BlockAllReduce(best, MaxU64{}, sh.u64);
    any_nan = BlockAllReduce(nan, OrU32{}, reinterpret_cast<unsigned int*>(sh.f32)) != 0;
  }
  const int greedy = best == 0 ? vocab - 1 : KeyId(best);
  const float max_logit = best == 0 ? l[greedy] : KeyValue(best);  // (a key holds its value)

  int token = greedy;
  if (p.temperature != 0.0f && !any_nan && isfinite(max_logit)) {
    const float inv_t = 1.0f / p.temperature;
    // 5. Cuts: top-k by count, then top-p by weight among the top-k.
    unsigned long long cut = 0;
    if (p.top_k > 0 && p.top_k < vocab) {
      cut = SelectCut(l, vocab, max_logit, inv_t, 0, false,
                      static_cast<unsigned long long>(p.top_k), 1.0f, sh);
    }
    if (p.top_p < 1.0f) {
      // The select sees only keys >= the top-k cut, but may stop at a prefix whose low bits
      // are zero, below that cut: keep the higher of the two.
      const unsigned long long top_p_cut = SelectCut(l, vocab, max_logit, inv_t, cut, true, 0, p.top_p, sh);
      cut = top_p_cut > cut ? top_p_cut : cut;
    }
    // 6. Draw.
    token = Draw(l, vocab, max_logit, inv_t, cut, p.min_p, p.random_bits, greedy, sh);
  }

  // The chosen token's raw logit: from the stash if it is a penalised token.
  if (threadIdx.x == 0) sh.num_candidates = 0;
  __syncthreads();
  if (penalised) {
    for (int j = p.penalty_begin + threadIdx.x; j < p.penalty_end; j += kThreads) {
      if (args.penalty_tokens[j] == token) sh.num_candidates = 1;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const float raw_logit = sh.num_candidates ? stash[token] : (token == greedy && !penalised ? max_logit : l[token]);
    result->token = token;
    result->logprob = static_cast<float>(raw_logit - raw.log_normalizer);
  }
}

// Slices per row: the largest power of two up to kMaxSlices with rows x slices <= 2 x the SMs
// (SliceStatsKernel CTAs are small: two waves' worth still start at once), at least 1.
// FLUTE_SAMPLING_SLICES=N (1 to kMaxSlices) forces one (tests, A/B).
int SlicesPerRow(int rows) {
  static const int sms = [] {
    int device = 0, count = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return count;
  }();
  const char* forced = std::getenv("FLUTE_SAMPLING_SLICES");
  if (forced != nullptr) {
    const int n = std::atoi(forced);
    if (n >= 1 && n <= kMaxSlices) return n;
  }
  int slices = kMaxSlices;
  while (slices > 1 && rows * slices > 2 * sms) slices /= 2;
  return slices;
}

// The slice statistics follow the raw stash in the workspace, 16-byte aligned.
size_t StashBytes(int rows, int vocab) {
  return (static_cast<size_t>(rows) * static_cast<size_t>(vocab) * sizeof(float) + 15) / 16 * 16;
}

cudaError_t Launch(void (*kernel)(KernelArgs), const KernelArgs& args, int blocks, int threads,
                   cudaStream_t stream) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(static_cast<unsigned>(threads));
  config.stream = stream;
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attr;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, args);
}

}  // namespace

size_t SamplingWorkspaceBytes(int rows, int vocab) {
  if (rows <= 0 || vocab <= 0) return 0;
  return StashBytes(rows, vocab) + static_cast<size_t>(rows) * kMaxSlices * sizeof(SliceStats);
}

absl::Status LaunchSampling(float* logits, int rows, int vocab, const SamplingRow* params,
                            const int32_t* penalty_tokens, const int32_t* prompt_counts,
                            const int32_t* generated_counts, SampleResult* results,
                            void* workspace, size_t workspace_bytes, CUstream_st* stream,
                            bool batch_invariant) {
  if (vocab <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: vocab must be positive, got ", vocab));
  }
  if (rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: rows must be >= 0, got ", rows));
  }
  if (rows == 0) return absl::OkStatus();
  if (!logits || !params || !results) {
    return absl::InvalidArgumentError("sampling: logits, params and results must all be set");
  }
  const size_t need = SamplingWorkspaceBytes(rows, vocab);
  if (workspace == nullptr || workspace_bytes < need) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling: workspace of ", need, " bytes needed (SamplingWorkspaceBytes(",
                     rows, ", ", vocab, ")), got ", workspace_bytes,
                     workspace ? " bytes" : " bytes at a null pointer"));
  }
  KernelArgs args;
  args.logits = logits;
  args.vocab = vocab;
  args.params = params;
  args.penalty_tokens = penalty_tokens;
  args.prompt_counts = prompt_counts;
  args.generated_counts = generated_counts;
  args.results = results;
  args.raw_stash = static_cast<float*>(workspace);
  args.stats = reinterpret_cast<SliceStats*>(static_cast<char*>(workspace) + StashBytes(rows, vocab));
  args.slices = SlicesPerRow(batch_invariant ? 1 : rows);
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (Launch(SliceStatsKernel, args, rows * args.slices, kStatsThreads, s) == cudaSuccess) {
    Launch(SamplingKernel, args, rows, kThreads, s);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("sampling launch failed: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace flute::gpu

namespace flute::trace {
FLUTE_TRACE_SETTER(SetBufferSampling)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
