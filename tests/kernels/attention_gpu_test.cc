// Paged KV cache write and paged GQA attention on the GPU against a CPU fp32/fp64 reference of
// causal attention on the unpaged K/V, on fresh random data every run (the seed is printed on
// failure), with shuffled block tables, NaN-poisoned unused cache slots and a poisoned output.
// Skips with a message when the build has no CUDA or the machine has no GPU (the argument
// checks run without a GPU).
//
// Tolerance, max|out - ref| / max|ref| per sequence: 2e-3 for fp16, 1e-2 for bf16. The
// reference sees exactly the 16-bit inputs the kernel sees, and the kernel computes in fp32,
// so the error is dominated by the single rounding of the output to 16 bits (2^-11 relative
// for fp16, 2^-8 for bf16); the tensor-core prefill also rounds the probabilities to 16 bits
// before P·V (as FlashAttention does), an error that averages over the keys and stays below
// the output rounding (a CPU emulation of its fragments gave 4e-4 fp16, 3.4e-3 bf16).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <numeric>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/attention.h"
#include "kernels/rope_kv_write.h"
#include "tests/kernels/gpu_test_util.h"

#ifdef FLUTE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace flute::gpu {
namespace {

#ifndef FLUTE_HAVE_CUDA
TEST(AttentionGpuTest, SkippedWithoutCuda) {
  EXPECT_FALSE(LaunchPagedAttention(PagedKvLayer{}, nullptr, 0, 0, 1.f, AttentionBatch{}, nullptr,
                                    nullptr, 0, nullptr)
                   .ok());
  GTEST_SKIP() << "built without CUDA: the GPU attention tests need nvcc at build time";
}
#else

#define REQUIRE_GPU() REQUIRE_GPU_FOR("attention")
using flute::testing::ActivationName;
using flute::testing::DeviceBuffer;
using flute::testing::FromActivationBits;
using flute::testing::ToActivationBits;

struct Config {
  ActivationType dtype = ActivationType::kFloat16;
  int head_dim = 128;
  int num_kv_heads = 2;
  int group = 4;  // query heads per kv head
  int block_size = 16;
  int num_heads() const { return num_kv_heads * group; }
};

// The 8B LLaMA's attention: fp16, D = 128, 8 kv heads, group 4, block 16.
const Config kLlama8B{ActivationType::kFloat16, 128, 8, 4, 16};

std::string Describe(const Config& c) {
  return std::string(ActivationName(c.dtype)) + " D=" + std::to_string(c.head_dim) + " kv_heads=" +
         std::to_string(c.num_kv_heads) + " group=" + std::to_string(c.group) + " block=" +
         std::to_string(c.block_size);
}

// One sequence: its step's queries and its whole context, as floats exactly representable in
// the dtype. q [query_len, num_heads, D]; k, v [context_len, num_kv_heads, D].
struct Seq {
  int query_len = 0, context_len = 0;
  std::vector<float> q, k, v;
};

std::vector<float> RandomValues(ActivationType dtype, size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> x(n);
  for (auto& v : x) v = FromActivationBits(dtype, ToActivationBits(dtype, normal(rng)));
  return x;
}

Seq MakeSeq(const Config& c, int query_len, int context_len, std::mt19937& rng) {
  Seq s;
  s.query_len = query_len;
  s.context_len = context_len;
  s.q = RandomValues(c.dtype, static_cast<size_t>(query_len) * c.num_heads() * c.head_dim, rng);
  s.k = RandomValues(c.dtype, static_cast<size_t>(context_len) * c.num_kv_heads * c.head_dim, rng);
  s.v = RandomValues(c.dtype, static_cast<size_t>(context_len) * c.num_kv_heads * c.head_dim, rng);
  return s;
}

// Causal GQA attention of one sequence: out [query_len, num_heads * D], fp64 softmax.
std::vector<float> Reference(const Config& c, const Seq& s, float scale) {
  const int d = c.head_dim, h_count = c.num_heads(), kvh = c.num_kv_heads;
  std::vector<float> out(static_cast<size_t>(s.query_len) * h_count * d);
  auto row_range = [&](int j0, int j1) {
    std::vector<double> p(s.context_len), acc(d);
    for (int j = j0; j < j1; ++j) {
      const int pos = s.context_len - s.query_len + j;
      for (int h = 0; h < h_count; ++h) {
        const int kh = h / c.group;
        const float* q = &s.q[(static_cast<size_t>(j) * h_count + h) * d];
        double m = -1e300;
        for (int t = 0; t <= pos; ++t) {
          const float* k = &s.k[(static_cast<size_t>(t) * kvh + kh) * d];
          double dot = 0;
          for (int e = 0; e < d; ++e) dot += static_cast<double>(q[e]) * k[e];
          p[t] = dot * scale;
          m = std::max(m, p[t]);
        }
        double l = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int t = 0; t <= pos; ++t) {
          const double w = std::exp(p[t] - m);
          l += w;
          const float* v = &s.v[(static_cast<size_t>(t) * kvh + kh) * d];
          for (int e = 0; e < d; ++e) acc[e] += w * v[e];
        }
        for (int e = 0; e < d; ++e) {
          out[(static_cast<size_t>(j) * h_count + h) * d + e] = static_cast<float>(acc[e] / l);
        }
      }
    }
  };
  const int threads = std::max(1, std::min<int>(16, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    const int j0 = s.query_len * t / threads, j1 = s.query_len * (t + 1) / threads;
    if (j1 > j0) pool.emplace_back(row_range, j0, j1);
  }
  for (auto& th : pool) th.join();
  return out;
}

// Host bounds of a launch: at least the real maxima plus the slack.
struct Bounds {
  int extra_query_len = 0;
  int extra_context_len = 0;
};

// Everything a launch reads, on the host: the paged cache with every sequence's earlier
// context written straight in (random shuffled block ids, unused slots NaN), the fused qkv
// buffer of the step with two trailing padding rows (slot -1), the slots of the step's tokens
// and the batch arrays. Sizes may be forced larger (num_blocks, max_blocks) for graph reuse.
struct HostBatch {
  int num_seqs = 0, total_q = 0, pad_rows = 2, row_stride = 0;
  int num_blocks = 0, max_blocks = 0, bound_q = 0, bound_ctx = 0;
  std::vector<uint16_t> k_cache, v_cache, qkv;
  std::vector<int32_t> slots, query_start, context_len, tables;
};

HostBatch BuildHostBatch(const Config& c, const std::vector<const Seq*>& seqs, const Bounds& bounds,
                         std::mt19937& rng, int min_num_blocks = 0, int min_max_blocks = 0) {
  HostBatch hb;
  const int n = static_cast<int>(seqs.size());
  const int d = c.head_dim, h_count = c.num_heads(), kvh = c.num_kv_heads, bs = c.block_size;
  const int kv_dim = kvh * d;
  int max_q = 1, max_ctx = 1;
  hb.num_seqs = n;
  hb.query_start.assign(n + 1, 0);
  hb.context_len.resize(n);
  for (int i = 0; i < n; ++i) {
    max_q = std::max(max_q, seqs[i]->query_len);
    max_ctx = std::max(max_ctx, seqs[i]->context_len);
    hb.query_start[i + 1] = hb.query_start[i] + seqs[i]->query_len;
    hb.context_len[i] = seqs[i]->context_len;
  }
  hb.total_q = hb.query_start[n];
  hb.bound_q = max_q + bounds.extra_query_len;
  hb.bound_ctx = std::max(max_ctx + bounds.extra_context_len, hb.bound_q);
  hb.max_blocks = std::max(min_max_blocks, (hb.bound_ctx + bs - 1) / bs);

  // Random block assignment: a shuffled pool with a few blocks to spare.
  int blocks_used = 0;
  for (const Seq* s : seqs) blocks_used += (s->context_len + bs - 1) / bs;
  hb.num_blocks = std::max(min_num_blocks, blocks_used + 3);
  std::vector<int32_t> pool(hb.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  hb.tables.assign(static_cast<size_t>(n) * hb.max_blocks, -1);  // never read
  const size_t slot_elems = static_cast<size_t>(kv_dim);
  hb.k_cache.assign(static_cast<size_t>(hb.num_blocks) * bs * slot_elems, 0xFFFF);
  hb.v_cache.assign(hb.k_cache.size(), 0xFFFF);
  hb.row_stride = (h_count + 2 * kvh) * d + 8;  // + padding columns
  hb.qkv.resize(static_cast<size_t>(hb.total_q + hb.pad_rows) * hb.row_stride);
  for (auto& x : hb.qkv) x = ToActivationBits(c.dtype, std::normal_distribution<float>()(rng));
  hb.slots.assign(hb.total_q + hb.pad_rows, -1);
  int next = 0;
  for (int i = 0; i < n; ++i) {
    const Seq& s = *seqs[i];
    int32_t* table = &hb.tables[static_cast<size_t>(i) * hb.max_blocks];
    const int nb = (s.context_len + bs - 1) / bs;
    for (int b = 0; b < nb; ++b) table[b] = pool[next++];
    auto flat_slot = [&](int pos) { return static_cast<size_t>(table[pos / bs]) * bs + pos % bs; };
    const int first_new = s.context_len - s.query_len;
    for (int pos = 0; pos < first_new; ++pos) {
      for (size_t e = 0; e < slot_elems; ++e) {
        hb.k_cache[flat_slot(pos) * slot_elems + e] = ToActivationBits(c.dtype, s.k[pos * slot_elems + e]);
        hb.v_cache[flat_slot(pos) * slot_elems + e] = ToActivationBits(c.dtype, s.v[pos * slot_elems + e]);
      }
    }
    for (int j = 0; j < s.query_len; ++j) {
      const int row = hb.query_start[i] + j, pos = first_new + j;
      uint16_t* dst = &hb.qkv[static_cast<size_t>(row) * hb.row_stride];
      for (int e = 0; e < h_count * d; ++e) {
        dst[e] = ToActivationBits(c.dtype, s.q[static_cast<size_t>(j) * h_count * d + e]);
      }
      for (size_t e = 0; e < slot_elems; ++e) {
        dst[h_count * d + e] = ToActivationBits(c.dtype, s.k[pos * slot_elems + e]);
        dst[h_count * d + kv_dim + e] = ToActivationBits(c.dtype, s.v[pos * slot_elems + e]);
      }
      hb.slots[row] = static_cast<int32_t>(flat_slot(pos));
    }
  }
  return hb;
}

// Poisons a workspace's partials (0xFF: NaN) and zeroes its split counters, as an owner that
// allocated it would (PagedAttentionWorkspaceBytes: zero once; launches leave them zero).
void PoisonWorkspace(void* ws, size_t bytes) {
  if (bytes == 0) return;
  cudaMemset(ws, 0xFF, bytes);
  cudaMemset(ws, 0, std::min(bytes, kPagedAttentionCounterBytes));
}

// Whether the workspace's split counters are all zero (as every launch must leave them).
::testing::AssertionResult CountersAreZero(const void* ws, size_t bytes) {
  if (bytes == 0) return ::testing::AssertionSuccess();
  std::vector<int32_t> counters(std::min(bytes, kPagedAttentionCounterBytes) / 4);
  cudaMemcpy(counters.data(), ws, counters.size() * 4, cudaMemcpyDeviceToHost);
  for (size_t i = 0; i < counters.size(); ++i) {
    if (counters[i] != 0) {
      return ::testing::AssertionFailure() << "split counter " << i << " is " << counters[i] << " after the launch";
    }
  }
  return ::testing::AssertionSuccess();
}

// Device copies of a step's host arrays (those HostBatch and FusedStep share: the caches, qkv,
// slots and the batch arrays), an output of `rows` rows and the workspace for contexts up to
// bound_ctx; the cache layer and the attention launch on them.
struct DeviceArrays {
  std::unique_ptr<DeviceBuffer> k, v, qkv, slots, query_start, context_len, tables, out, ws;
  size_t out_elems = 0, ws_bytes = 0;

  static std::unique_ptr<DeviceBuffer> Make(size_t bytes) { return std::make_unique<DeviceBuffer>(bytes); }

  template <typename Host>
  DeviceArrays(const Config& c, const Host& h, int rows, int bound_ctx) {
    k = Make(h.k_cache.size() * 2);
    v = Make(h.v_cache.size() * 2);
    qkv = Make(h.qkv.size() * 2);
    slots = Make(h.slots.size() * 4);
    query_start = Make(h.query_start.size() * 4);
    context_len = Make(h.context_len.size() * 4);
    tables = Make(h.tables.size() * 4);
    out_elems = static_cast<size_t>(rows) * c.num_heads() * c.head_dim;
    out = Make(out_elems * 2);
    ws_bytes = PagedAttentionWorkspaceBytes(rows, c.num_heads(), c.head_dim, bound_ctx);
    ws = Make(ws_bytes);
  }

  // Copies h's arrays in (the caches only when `caches`; no larger than those allocated for) and
  // poisons the output and the workspace.
  template <typename Host>
  void UploadArrays(const Host& h, bool caches) {
    if (caches) {
      cudaMemcpy(k->ptr, h.k_cache.data(), h.k_cache.size() * 2, cudaMemcpyHostToDevice);
      cudaMemcpy(v->ptr, h.v_cache.data(), h.v_cache.size() * 2, cudaMemcpyHostToDevice);
    }
    cudaMemcpy(qkv->ptr, h.qkv.data(), h.qkv.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(slots->ptr, h.slots.data(), h.slots.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(query_start->ptr, h.query_start.data(), h.query_start.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(context_len->ptr, h.context_len.data(), h.context_len.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(tables->ptr, h.tables.data(), h.tables.size() * 4, cudaMemcpyHostToDevice);
    cudaMemset(out->ptr, 0xFF, out_elems * 2);  // NaN in fp16 and bf16
    PoisonWorkspace(ws->ptr, ws_bytes);
  }

  PagedKvLayer Layer(const Config& c, int num_blocks) const {
    PagedKvLayer layer;
    layer.k = k->ptr;
    layer.v = v->ptr;
    layer.num_blocks = num_blocks;
    layer.block_size = c.block_size;
    layer.num_kv_heads = c.num_kv_heads;
    layer.head_dim = c.head_dim;
    layer.dtype = c.dtype;
    return layer;
  }

  // LaunchPagedAttention of qkv (rows of row_stride) over the batch arrays, on `stream`.
  absl::Status LaunchAttention(const Config& c, const PagedKvLayer& layer, int row_stride, int num_seqs,
                               int max_blocks, int max_query_len, int max_context_len, cudaStream_t stream,
                               const FusedRopeKv* fused) const {
    AttentionBatch batch;
    batch.num_seqs = num_seqs;
    batch.query_start = static_cast<const int32_t*>(query_start->ptr);
    batch.context_len = static_cast<const int32_t*>(context_len->ptr);
    batch.block_tables = static_cast<const int32_t*>(tables->ptr);
    batch.max_blocks_per_seq = max_blocks;
    batch.max_query_len = max_query_len;
    batch.max_context_len = max_context_len;
    return LaunchPagedAttention(layer, qkv->ptr, row_stride, c.num_heads(),
                                1.f / std::sqrt(static_cast<float>(c.head_dim)), batch, out->ptr, ws->ptr, ws_bytes,
                                stream, fused);
  }
};

// Device buffers of a HostBatch (allocated for the sizes of the first batch uploaded).
struct DeviceBatch : DeviceArrays {
  DeviceBatch(const Config& c, const HostBatch& hb) : DeviceArrays(c, hb, hb.total_q + hb.pad_rows, hb.bound_ctx) {}
  bool ok() const { return k->ptr && v->ptr && qkv->ptr && out->ptr && (ws_bytes == 0 || ws->ptr); }

  // Copies hb (no larger than the first batch) in and poisons the output and workspace.
  void Upload(const HostBatch& hb) { UploadArrays(hb, /*caches=*/true); }

  // Rows for the KV-cache write other than the step's own: `m` rows of `qkv` (hb's row_stride
  // and column offsets) written to `slots`.
  struct WriteRows {
    const void* qkv = nullptr;
    const int32_t* slots = nullptr;
    int m = 0;
  };

  // LaunchKvCacheWrite of the step's rows (or of `write`'s when given), then
  // LaunchPagedAttention, on `stream`; the shapes (bounds, num_blocks, max_blocks) are hb's.
  absl::Status Launch(const Config& c, const HostBatch& hb, cudaStream_t stream,
                      const WriteRows* write = nullptr) const {
    const PagedKvLayer layer = Layer(c, hb.num_blocks);
    const int qd = c.num_heads() * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
    absl::Status st =
        write != nullptr
            ? LaunchKvCacheWrite(layer, write->qkv, write->m, hb.row_stride, qd, qd + kv_dim, write->slots,
                                 stream)
            : LaunchKvCacheWrite(layer, qkv->ptr, hb.total_q + hb.pad_rows, hb.row_stride, qd, qd + kv_dim,
                                 static_cast<const int32_t*>(slots->ptr), stream);
    if (!st.ok()) return st;
    return LaunchAttention(c, layer, hb.row_stride, hb.num_seqs, hb.max_blocks, hb.bound_q, hb.bound_ctx, stream,
                           nullptr);
  }

  std::vector<uint16_t> Download(const Config& c, int total_q) const {
    std::vector<uint16_t> bits(static_cast<size_t>(total_q) * c.num_heads() * c.head_dim);
    cudaMemcpy(bits.data(), out->ptr, bits.size() * 2, cudaMemcpyDeviceToHost);
    return bits;
  }
};

// Runs one batch (KV write, then attention) with a poisoned output and returns
// out [total_q, num_heads * D] as raw bits.
::testing::AssertionResult RunBatch(const Config& c, const std::vector<const Seq*>& seqs,
                                    const Bounds& bounds, std::mt19937& rng,
                                    std::vector<uint16_t>* out_bits) {
  const HostBatch hb = BuildHostBatch(c, seqs, bounds, rng);
  DeviceBatch dev(c, hb);
  if (!dev.ok()) return ::testing::AssertionFailure() << "cudaMalloc failed";
  dev.Upload(hb);
  const absl::Status st = dev.Launch(c, hb, nullptr);
  if (!st.ok()) return ::testing::AssertionFailure() << st;
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) return ::testing::AssertionFailure() << cudaGetErrorString(err);
  *out_bits = dev.Download(c, hb.total_q);
  return CountersAreZero(dev.ws->ptr, dev.ws_bytes);
}

// max|out - ref| / max|ref| over one sequence's rows (out starting at row0), or 1e9 if any
// output is not finite.
double SeqError(const Config& c, const std::vector<uint16_t>& out, size_t row0, const std::vector<float>& ref) {
  const size_t hd = static_cast<size_t>(c.num_heads()) * c.head_dim;
  double max_err = 0, max_ref = 0;
  for (size_t e = 0; e < ref.size(); ++e) {
    const float y = FromActivationBits(c.dtype, out[row0 * hd + e]);
    if (!std::isfinite(y)) return 1e9;
    max_err = std::max(max_err, std::fabs(static_cast<double>(y) - ref[e]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[e])));
  }
  return max_err / std::max(max_ref, 1e-30);
}

double Tolerance(const Config& c) { return c.dtype == ActivationType::kFloat16 ? 2e-3 : 1e-2; }

// Runs the batch once per prefill kernel (the tensor-core default, then the SIMT cross-check
// selected by FLUTE_ATTENTION_PREFILL=simt) and compares each sequence with the reference;
// returns the worst error.
double CheckBatch(const Config& c, const std::vector<Seq>& seqs, const Bounds& bounds, std::mt19937& rng,
                  const std::string& what) {
  std::vector<const Seq*> ptrs;
  bool any_prefill = false;
  for (const Seq& s : seqs) {
    ptrs.push_back(&s);
    any_prefill = any_prefill || s.query_len > 1;
  }
  const float scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
  std::vector<std::vector<float>> refs;
  for (const Seq& s : seqs) refs.push_back(Reference(c, s, scale));
  const double tol = Tolerance(c);
  double worst = 0;
  for (const char* path : {"mma", "simt"}) {
    if (std::string(path) == "simt" && !any_prefill) break;
    setenv("FLUTE_ATTENTION_PREFILL", path, 1);
    const std::string label = what + " [" + path + " prefill] " + Describe(c);
    std::vector<uint16_t> out;
    const ::testing::AssertionResult run = RunBatch(c, ptrs, bounds, rng, &out);
    unsetenv("FLUTE_ATTENTION_PREFILL");
    EXPECT_TRUE(run) << label;
    if (!run) return 1e9;
    size_t row0 = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const double err = SeqError(c, out, row0, refs[i]);
      EXPECT_LE(err, tol) << label << ": seq " << i << " (query_len " << seqs[i].query_len
                          << ", context_len " << seqs[i].context_len << ")"
                          << (err >= 1e9 ? ": unwritten/non-finite outputs" : "");
      worst = std::max(worst, err);
      row0 += seqs[i].query_len;
    }
  }
  return worst;
}

// CheckBatch on seqs in shuffled order; prints the worst error ("<what> <config>: ...").
void CheckShuffledBatch(const Config& c, std::vector<Seq> seqs, const Bounds& bounds, std::mt19937& rng,
                        const std::string& what) {
  std::shuffle(seqs.begin(), seqs.end(), rng);
  const double worst = CheckBatch(c, seqs, bounds, rng, what);
  std::printf("%s %s: worst normalized error %.2e\n", what.c_str(), Describe(c).c_str(), worst);
}

// Every dtype x D (64, 128) x group x block size, with 2 kv heads.
std::vector<Config> ConfigGrid(std::initializer_list<int> groups, std::initializer_list<int> block_sizes) {
  std::vector<Config> configs;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int d : {64, 128}) {
      for (int group : groups) {
        for (int bs : block_sizes) configs.push_back(Config{dtype, d, 2, group, bs});
      }
    }
  }
  return configs;
}

std::vector<Config> AllConfigs() { return ConfigGrid({1, 4, 8}, {16, 32}); }

class Seeded : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = std::random_device{}();
    rng_.seed(seed_);
  }
  void TearDown() override {
    if (HasFailure()) std::printf("random seed of the failed test: %u\n", seed_);
  }
  unsigned seed_ = 0;
  std::mt19937 rng_;
};

using AttentionGpuTest = Seeded;

TEST_F(AttentionGpuTest, DecodeMixedContextLengths) {
  REQUIRE_GPU();
  for (const Config& c : AllConfigs()) {
    std::vector<Seq> seqs;
    // 1..12 chunks of 256 (one split each), then 17 and 36 chunks (2 and 3 chunks per split).
    for (int ctx : {1, 7, 16, 17, 300, 1000, 3000, 4097, 9000}) seqs.push_back(MakeSeq(c, 1, ctx, rng_));
    CheckShuffledBatch(c, std::move(seqs), {3, 700}, rng_, "decode");
  }
}

TEST_F(AttentionGpuTest, PrefillFreshAndWithEarlierContext) {
  REQUIRE_GPU();
  for (const Config& c : AllConfigs()) {
    if (c.block_size == 32 && c.group == 4) continue;  // keeps the CPU reference time down
    std::vector<Seq> seqs;
    for (int q : {1, 5, 64, 129, 512}) {
      seqs.push_back(MakeSeq(c, q, q, rng_));        // first chunk of a prompt
      seqs.push_back(MakeSeq(c, q, q + 301, rng_));  // a later chunk of a chunked prefill
    }
    CheckShuffledBatch(c, std::move(seqs), {100, 900}, rng_, "prefill");
  }
}

TEST_F(AttentionGpuTest, MixedPrefillAndDecode) {
  REQUIRE_GPU();
  for (const Config& c : AllConfigs()) {
    if (c.block_size == 32) continue;
    std::vector<Seq> seqs;
    for (int ctx : {1, 17, 300, 1000, 2000}) seqs.push_back(MakeSeq(c, 1, ctx, rng_));
    seqs.push_back(MakeSeq(c, 5, 5, rng_));
    seqs.push_back(MakeSeq(c, 129, 129, rng_));
    seqs.push_back(MakeSeq(c, 200, 900, rng_));
    seqs.push_back(MakeSeq(c, 64, 64 + 256, rng_));
    CheckShuffledBatch(c, std::move(seqs), {50, 1000}, rng_, "mixed");
  }
}

TEST_F(AttentionGpuTest, LargeGroupsAreSliced) {
  REQUIRE_GPU();
  Config c;
  c.num_kv_heads = 1;
  for (int group : {3, 12, 16}) {
    c.group = group;
    std::vector<Seq> seqs = {MakeSeq(c, 1, 700, rng_), MakeSeq(c, 1, 9, rng_), MakeSeq(c, 33, 80, rng_)};
    const double worst = CheckBatch(c, seqs, {0, 0}, rng_, "group");
    std::printf("group %d %s: worst normalized error %.2e\n", group, Describe(c).c_str(), worst);
  }
}

// A decode row's output bits do not depend on the rest of the batch nor on the host bounds.
TEST_F(AttentionGpuTest, DecodeIsBitwiseBatchInvariant) {
  REQUIRE_GPU();
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int d : {64, 128}) {
      Config c;
      c.dtype = dtype;
      c.head_dim = d;
      c.group = 4;
      for (int ctx : {200, 1000, 3000, 5000}) {
        const Seq target = MakeSeq(c, 1, ctx, rng_);
        std::vector<uint16_t> alone, alone_wide, batched;
        ASSERT_TRUE(RunBatch(c, {&target}, {0, 0}, rng_, &alone));
        ASSERT_TRUE(RunBatch(c, {&target}, {700, 5000}, rng_, &alone_wide));
        std::vector<Seq> others;
        for (int i = 0; i < 31; ++i) {
          const bool prefill = i % 4 == 0;
          const int q = prefill ? 1 + static_cast<int>(rng_() % 300) : 1;
          others.push_back(MakeSeq(c, q, q + static_cast<int>(rng_() % 2000), rng_));
        }
        const int at = static_cast<int>(rng_() % 32);
        std::vector<const Seq*> batch;
        size_t row = 0;
        for (int i = 0, o = 0; i < 32; ++i) {
          if (i == at) {
            batch.push_back(&target);
          } else {
            if (i < at) row += others[o].query_len;
            batch.push_back(&others[o++]);
          }
        }
        ASSERT_TRUE(RunBatch(c, batch, {10, 100}, rng_, &batched));
        const size_t hd = static_cast<size_t>(c.num_heads()) * d;
        EXPECT_EQ(0, std::memcmp(alone.data(), alone_wide.data(), hd * 2))
            << Describe(c) << " ctx " << ctx << ": output changed with the max_* bounds";
        EXPECT_EQ(0, std::memcmp(alone.data(), batched.data() + row * hd, hd * 2))
            << Describe(c) << " ctx " << ctx << ": output changed inside a batch of 32";
      }
    }
  }
}

// One CUDA graph captured with generous bounds serves steps of other lengths: the kernels
// read the real lengths from device memory (and neither allocate nor synchronize).
TEST_F(AttentionGpuTest, OneCapturedGraphServesSeveralSteps) {
  REQUIRE_GPU();
  Config c;
  c.dtype = ActivationType::kBFloat16;
  c.group = 4;
  const Bounds bounds = {300, 3000};
  // Step 0 fixes the buffer sizes: the largest step (its bounds also cover the later ones).
  const std::vector<std::vector<std::pair<int, int>>> steps = {
      {{200, 200}, {1, 900}, {1, 5}, {64, 1200}},
      {{1, 201}, {1, 901}, {1, 6}, {1, 1201}},
      {{1, 17}, {37, 37}, {1, 1}, {1, 300}},
  };
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  std::unique_ptr<DeviceBatch> dev;
  HostBatch shape;  // the captured shapes
  cudaGraphExec_t exec = nullptr;
  for (size_t step = 0; step < steps.size(); ++step) {
    std::vector<Seq> seqs;
    for (auto ql : steps[step]) seqs.push_back(MakeSeq(c, ql.first, ql.second, rng_));
    std::vector<const Seq*> ptrs;
    for (const Seq& s : seqs) ptrs.push_back(&s);
    // A pool of 400 blocks for every step (more than any step uses).
    HostBatch hb = step == 0 ? BuildHostBatch(c, ptrs, bounds, rng_, 400)
                             : BuildHostBatch(c, ptrs, {0, 0}, rng_, shape.num_blocks, shape.max_blocks);
    if (step == 0) {
      shape = hb;
      dev = std::make_unique<DeviceBatch>(c, hb);
      ASSERT_TRUE(dev->ok());
    } else {
      // Same buffers: pad the qkv/slots arrays to the captured row count (slot -1).
      ASSERT_LE(hb.total_q, shape.total_q);
      hb.qkv.resize(shape.qkv.size(), 0);
      hb.slots.resize(shape.slots.size(), -1);
      ASSERT_EQ(hb.k_cache.size(), shape.k_cache.size());
      ASSERT_EQ(hb.tables.size(), shape.tables.size());
    }
    dev->Upload(hb);
    if (step == 0) {
      cudaGraph_t graph;
      ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
      const absl::Status st = dev->Launch(c, shape, stream);
      ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
      ASSERT_TRUE(st.ok()) << st;
      ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
      cudaGraphDestroy(graph);
    }
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const std::vector<uint16_t> out = dev->Download(c, hb.total_q);
    size_t row0 = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const std::vector<float> ref = Reference(c, seqs[i], 1.f / std::sqrt(static_cast<float>(c.head_dim)));
      EXPECT_LE(SeqError(c, out, row0, ref), Tolerance(c))
          << "step " << step << " seq " << i << " (query_len " << seqs[i].query_len << ", context_len "
          << seqs[i].context_len << ")";
      row0 += seqs[i].query_len;
    }
  }
  cudaGraphExecDestroy(exec);
  cudaStreamDestroy(stream);
}

// The decode splits' merge done by the last-arriving split CTA (the default) is bitwise the
// separate CombineKernel's (FLUTE_ATTENTION_COMBINE=kernel), and repeated launches on one
// workspace, never re-zeroed, keep giving those bits (each launch leaves the counters zero).
TEST_F(AttentionGpuTest, LastSplitMergeIsBitwiseTheCombineKernel) {
  REQUIRE_GPU();
  // {dtype, D, kv heads, group, block size}; group 12: two head slices per kv head.
  const std::vector<Config> configs = {kLlama8B, {ActivationType::kBFloat16, 128, 2, 12, 16},
                                       {ActivationType::kFloat16, 64, 2, 1, 16}};
  for (const Config& c : configs) {
    std::vector<Seq> seqs;
    for (int ctx : {1, 65, 512, 1000, 1025, 3000, 5000}) seqs.push_back(MakeSeq(c, 1, ctx, rng_));
    seqs.push_back(MakeSeq(c, 40, 300, rng_));  // a prefill row: its CTAs must not count
    std::vector<const Seq*> ptrs;
    for (const Seq& s : seqs) ptrs.push_back(&s);
    const HostBatch hb = BuildHostBatch(c, ptrs, {0, 200}, rng_);
    DeviceBatch dev(c, hb);
    ASSERT_TRUE(dev.ok()) << "cudaMalloc failed";
    dev.Upload(hb);
    setenv("FLUTE_ATTENTION_COMBINE", "kernel", 1);
    const absl::Status st = dev.Launch(c, hb, nullptr);
    unsetenv("FLUTE_ATTENTION_COMBINE");
    ASSERT_TRUE(st.ok()) << st;
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<uint16_t> expected = dev.Download(c, hb.total_q);
    for (int launch = 0; launch < 4; ++launch) {
      cudaMemset(dev.out->ptr, 0xFF, dev.out_elems * 2);
      const absl::Status again = dev.Launch(c, hb, nullptr);
      ASSERT_TRUE(again.ok()) << again;
      CUDA_OK(cudaDeviceSynchronize());
      EXPECT_TRUE(dev.Download(c, hb.total_q) == expected) << Describe(c) << " launch " << launch;
      EXPECT_TRUE(CountersAreZero(dev.ws->ptr, dev.ws_bytes)) << Describe(c) << " launch " << launch;
    }
  }
}

// More (sequence, CTA column) pairs than the workspace's counters: the separate CombineKernel
// merges (600 sequences x 8 kv heads = 4800 counters > 4096), against the reference.
TEST_F(AttentionGpuTest, ManySequencesFallBackToTheCombineKernel) {
  REQUIRE_GPU();
  Config c;
  c.num_kv_heads = 8;
  c.group = 1;
  c.head_dim = 64;
  ASSERT_GT(600 * 8 * sizeof(int), kPagedAttentionCounterBytes);
  std::vector<Seq> seqs;
  for (int i = 0; i < 600; ++i) seqs.push_back(MakeSeq(c, 1, 65 + static_cast<int>(rng_() % 200), rng_));
  const double worst = CheckBatch(c, seqs, {0, 0}, rng_, "600 decode rows");
  std::printf("600 decode rows %s: worst normalized error %.2e\n", Describe(c).c_str(), worst);
}

// PDL ordering. The decode kernel puts its first chunk's K/V cache rows in flight BEFORE its
// grid dependency wait, all but the newest position (context_len - 1), which the KV-cache
// write launched just before it (with PDL) writes in the same step; that row and q are read
// after the wait. Here the newest position's K/V differ strongly from what the cache held
// before the write: the fresh k of kv head kh is 2 q of query head kh * group (that head's
// newest score dominates: ~2 |q|^2 / sqrt(D) nats above the others, so its output is ~ the
// fresh v), the fresh v is 4 x N(0, 1), and the cache rows held -k and -v before the write.
// Reading the stale row gives an output near the mean of the other values (stale k) or near
// -v (stale v): errors of order 1, against a tolerance of 1e-2 at most. To widen the window
// in which the write is still in flight when the attention grid starts, the write is given
// up to 8192 extra rows before the real ones (to spare cache blocks, so the real rows are
// written by the write's last CTAs). One non-blocking stream; write, then attention, 20
// times with fresh data; batch 1 at each context length (1 to 47 chunks, up to 3 chunks per
// split), then all of them in one batch; host bounds that give a pure decode launch (the
// write just before the decode kernel), extra split CTAs that exit early, and a prefill
// kernel in between.
TEST_F(AttentionGpuTest, DecodeReadsTheNewTokenAfterThePdlWait) {
  REQUIRE_GPU();
  // {dtype, D, kv heads, group, block size}
  const std::vector<Config> configs = {kLlama8B, {ActivationType::kBFloat16, 128, 2, 8, 32},
                                       {ActivationType::kFloat16, 64, 2, 4, 16},
                                       {ActivationType::kBFloat16, 64, 2, 1, 8},
                                       {ActivationType::kFloat16, 128, 2, 2, 64}};
  const std::vector<int> contexts = {1, 63, 64, 65, 512, 1000, 1025, 3000};
  const std::vector<Bounds> bounds = {{0, 0}, {0, 2000}, {0, 0}, {5, 0}};
  const std::vector<int> dummy_rows = {8192, 0, 1024, 8192};
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  for (int iter = 0; iter < 20; ++iter) {
    const Config& c = configs[iter % configs.size()];
    const Bounds& bound = bounds[iter % bounds.size()];
    const int dummies = dummy_rows[(iter / 2) % dummy_rows.size()];
    const int d = c.head_dim, kv_dim = c.num_kv_heads * d, bs = c.block_size;
    std::vector<std::vector<int>> batches;
    for (int ctx : contexts) batches.push_back({ctx});
    batches.push_back(contexts);
    std::shuffle(batches.back().begin(), batches.back().end(), rng_);
    double worst = 0;
    for (const std::vector<int>& ctxs : batches) {
      std::vector<Seq> seqs;
      for (int ctx : ctxs) {
        Seq s = MakeSeq(c, 1, ctx, rng_);
        const size_t newest = static_cast<size_t>(ctx - 1) * kv_dim;
        std::normal_distribution<float> normal;
        for (int kh = 0; kh < c.num_kv_heads; ++kh) {
          for (int e = 0; e < d; ++e) {
            const float q = s.q[static_cast<size_t>(kh * c.group) * d + e];
            s.k[newest + kh * d + e] = FromActivationBits(c.dtype, ToActivationBits(c.dtype, 2.f * q));
            s.v[newest + kh * d + e] = FromActivationBits(c.dtype, ToActivationBits(c.dtype, 4.f * normal(rng_)));
          }
        }
        seqs.push_back(std::move(s));
      }
      std::vector<const Seq*> ptrs;
      int blocks_used = 0;
      for (const Seq& s : seqs) {
        ptrs.push_back(&s);
        blocks_used += (s.context_len + bs - 1) / bs;
      }
      HostBatch hb = BuildHostBatch(c, ptrs, bound, rng_, blocks_used + 16);
      // The cache before the write: -k and -v at every newest position.
      for (int i = 0; i < hb.num_seqs; ++i) {
        const Seq& s = seqs[i];
        const size_t slot = static_cast<size_t>(hb.slots[hb.query_start[i]]);
        const size_t newest = static_cast<size_t>(s.context_len - 1) * kv_dim;
        for (int e = 0; e < kv_dim; ++e) {
          hb.k_cache[slot * kv_dim + e] = ToActivationBits(c.dtype, -s.k[newest + e]);
          hb.v_cache[slot * kv_dim + e] = ToActivationBits(c.dtype, -s.v[newest + e]);
        }
      }
      // The write's rows: `dummies` rows to the spare blocks' slots, then the step's rows.
      std::vector<bool> in_use(hb.num_blocks, false);
      for (int32_t b : hb.tables) {
        if (b >= 0) in_use[b] = true;
      }
      std::vector<int32_t> spare_slots;
      for (int b = 0; b < hb.num_blocks; ++b) {
        for (int i = 0; !in_use[b] && i < bs; ++i) spare_slots.push_back(b * bs + i);
      }
      ASSERT_FALSE(spare_slots.empty());
      std::vector<int32_t> write_slots(dummies);
      for (int r = 0; r < dummies; ++r) write_slots[r] = spare_slots[r % spare_slots.size()];
      write_slots.insert(write_slots.end(), hb.slots.begin(), hb.slots.end());
      const size_t step_rows = hb.slots.size();
      DeviceBatch dev(c, hb);
      DeviceBuffer write_qkv((dummies + step_rows) * hb.row_stride * 2);
      DeviceBuffer write_slots_dev(write_slots.size() * 4);
      ASSERT_TRUE(dev.ok() && write_qkv.ptr != nullptr && write_slots_dev.ptr != nullptr);
      dev.Upload(hb);
      uint8_t* wq = static_cast<uint8_t*>(write_qkv.ptr);
      const size_t dummy_bytes = static_cast<size_t>(dummies) * hb.row_stride * 2;
      CUDA_OK(cudaMemset(wq, 0x3C, dummy_bytes));  // 1.0-ish values (they land in spare blocks)
      CUDA_OK(cudaMemcpy(wq + dummy_bytes, hb.qkv.data(), hb.qkv.size() * 2, cudaMemcpyHostToDevice));
      CUDA_OK(cudaMemcpy(write_slots_dev.ptr, write_slots.data(), write_slots.size() * 4,
                         cudaMemcpyHostToDevice));
      CUDA_OK(cudaDeviceSynchronize());  // the uploads (legacy stream) before the non-blocking stream
      DeviceBatch::WriteRows write;
      write.qkv = write_qkv.ptr;
      write.slots = static_cast<const int32_t*>(write_slots_dev.ptr);
      write.m = static_cast<int>(write_slots.size());
      const absl::Status st = dev.Launch(c, hb, stream, &write);
      ASSERT_TRUE(st.ok()) << st;
      CUDA_OK(cudaStreamSynchronize(stream));
      const std::vector<uint16_t> out = dev.Download(c, hb.total_q);
      for (size_t i = 0; i < seqs.size(); ++i) {
        const std::vector<float> ref = Reference(c, seqs[i], 1.f / std::sqrt(static_cast<float>(d)));
        const double err = SeqError(c, out, i, ref);
        EXPECT_LE(err, Tolerance(c))
            << "iteration " << iter << " " << Describe(c) << " batch of " << seqs.size() << ", seq " << i
            << " (context_len " << seqs[i].context_len << "), " << dummies << " extra write rows, bounds +"
            << bound.extra_query_len << "/+" << bound.extra_context_len
            << (err >= 1e9 ? ": unwritten/non-finite outputs" : "");
        worst = std::max(worst, err);
      }
    }
    std::printf("pdl iteration %d %s (%d extra write rows): worst normalized error %.2e\n", iter,
                Describe(c).c_str(), dummies, worst);
  }
  cudaStreamDestroy(stream);
}

TEST_F(AttentionGpuTest, KvCacheWriteSkipsNegativeSlots) {
  REQUIRE_GPU();
  for (int d : {64, 128}) {
    PagedKvLayer layer;
    layer.num_blocks = 6;
    layer.block_size = 8;
    layer.num_kv_heads = 3;
    layer.head_dim = d;
    const int kv_dim = layer.num_kv_heads * d, num_slots = layer.num_blocks * layer.block_size;
    const int m = 20, row_stride = 4 * kv_dim + 16, k_offset = 2 * kv_dim, v_offset = 3 * kv_dim;
    std::vector<uint16_t> k0(static_cast<size_t>(num_slots) * kv_dim), v0(k0.size());
    std::vector<uint16_t> qkv(static_cast<size_t>(m) * row_stride);
    for (auto& x : k0) x = static_cast<uint16_t>(rng_());
    for (auto& x : v0) x = static_cast<uint16_t>(rng_());
    for (auto& x : qkv) x = static_cast<uint16_t>(rng_());
    std::vector<int32_t> perm(num_slots);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng_);
    std::vector<int32_t> slots(m);
    for (int i = 0; i < m; ++i) slots[i] = (i % 3 == 1) ? -1 - i : perm[i];
    DeviceBuffer d_k(k0.size() * 2), d_v(v0.size() * 2), d_qkv(qkv.size() * 2), d_slots(m * 4);
    cudaMemcpy(d_k.ptr, k0.data(), k0.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(d_v.ptr, v0.data(), v0.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(d_qkv.ptr, qkv.data(), qkv.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(d_slots.ptr, slots.data(), m * 4, cudaMemcpyHostToDevice);
    layer.k = d_k.ptr;
    layer.v = d_v.ptr;
    ASSERT_TRUE(LaunchKvCacheWrite(layer, d_qkv.ptr, m, row_stride, k_offset, v_offset,
                                   static_cast<const int32_t*>(d_slots.ptr), nullptr)
                    .ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint16_t> k1(k0.size()), v1(v0.size());
    cudaMemcpy(k1.data(), d_k.ptr, k1.size() * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(v1.data(), d_v.ptr, v1.size() * 2, cudaMemcpyDeviceToHost);
    std::vector<uint16_t> k_want = k0, v_want = v0;
    for (int i = 0; i < m; ++i) {
      if (slots[i] < 0) continue;
      std::memcpy(&k_want[static_cast<size_t>(slots[i]) * kv_dim], &qkv[static_cast<size_t>(i) * row_stride + k_offset], kv_dim * 2);
      std::memcpy(&v_want[static_cast<size_t>(slots[i]) * kv_dim], &qkv[static_cast<size_t>(i) * row_stride + v_offset], kv_dim * 2);
    }
    EXPECT_EQ(k1, k_want) << "D=" << d;
    EXPECT_EQ(v1, v_want) << "D=" << d;
  }
}

// ---- Fused RoPE + KV write (FusedRopeKv) -------------------------------------------------------
// LaunchPagedAttention with a FusedRopeKv against what it replaces, LaunchRopeKvWrite followed by
// LaunchPagedAttention, on two copies of the same inputs: the attention outputs and the whole K
// and V caches must be bitwise equal, and the fused call must leave qkv raw.

using flute::testing::Llama3InvFreq;

constexpr int kMaxPosition = 131072;

// One decode step on the host: every sequence has one query row (row s of qkv). Sequences
// [0, real) are real decode sequences; the last two are padding sequences as the engine pads a
// graph batch (context 1 on a padding block, slot -1) and one whose slot lies past the cache
// (also "write nothing").
struct FusedStep {
  int num_seqs = 0, real = 0, num_blocks = 0, max_blocks = 0, bound_ctx = 0;
  int row_stride = 0, k_offset = 0, v_offset = 0;
  bool far_positions = false;
  std::vector<uint16_t> k_cache, v_cache, qkv;  // the caches before the step
  std::vector<int32_t> positions, slots, query_start, context_len, tables;
};

uint16_t RandomBits(ActivationType dtype, std::mt19937& rng) {
  return ToActivationBits(dtype, std::normal_distribution<float>()(rng));
}

// The row's RoPE position: context - 1, or with far_positions any position up to 128k (RoPE
// reads only `positions`); the first two sequences then take the extremes.
int32_t StepPosition(const FusedStep& s, int seq, int ctx, std::mt19937& rng) {
  if (!s.far_positions) return ctx - 1;
  if (seq == 0) return kMaxPosition;
  if (seq == 1) return kMaxPosition - 1;
  return static_cast<int32_t>(rng() % (kMaxPosition + 1));
}

// Fresh qkv rows (random raw q, k, v and padding columns), positions and slots for the step's
// contexts (the block tables are fixed).
void FillStepRows(const Config& c, FusedStep& s, std::mt19937& rng) {
  const int bs = c.block_size;
  for (auto& x : s.qkv) x = RandomBits(c.dtype, rng);
  for (int i = 0; i < s.num_seqs; ++i) {
    const int ctx = s.context_len[i];
    s.positions[i] = StepPosition(s, i, ctx, rng);
    if (i < s.real) {
      const int32_t block = s.tables[static_cast<size_t>(i) * s.max_blocks + (ctx - 1) / bs];
      s.slots[i] = block * bs + (ctx - 1) % bs;
    } else {
      s.slots[i] = i == s.real ? -1 : s.num_blocks * bs + 3;  // both outside the cache: write nothing
    }
  }
}

// A step of decode sequences of the given contexts (their tables cover `grow` more positions
// for later steps), random block assignment, then the two padding sequences. The caches hold
// random finite values at every earlier position (< context - 1) and in the padding block, NaN
// everywhere else, the newest positions included: the fused kernel must take those from qkv,
// the unfused pair writes them first. v_before_k swaps the k and v columns of qkv.
FusedStep BuildFusedStep(const Config& c, const std::vector<int>& contexts, bool far_positions, bool v_before_k,
                         int grow, int extra_ctx, std::mt19937& rng, int padding_seqs = 2) {
  FusedStep s;
  const int bs = c.block_size, d = c.head_dim, kv_dim = c.num_kv_heads * d, qd = c.num_heads() * d;
  s.real = static_cast<int>(contexts.size());
  s.num_seqs = s.real + padding_seqs;
  s.far_positions = far_positions;
  int max_ctx = 1, blocks_used = 1;  // + the padding block
  for (int ctx : contexts) {
    max_ctx = std::max(max_ctx, ctx + grow);
    blocks_used += (ctx + grow + bs - 1) / bs;
  }
  s.bound_ctx = max_ctx + extra_ctx;
  s.max_blocks = (s.bound_ctx + bs - 1) / bs;
  s.num_blocks = blocks_used + 3;
  std::vector<int32_t> pool(s.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  s.tables.assign(static_cast<size_t>(s.num_seqs) * s.max_blocks, -1);  // never read
  s.k_cache.assign(static_cast<size_t>(s.num_blocks) * bs * kv_dim, 0xFFFF);
  s.v_cache.assign(s.k_cache.size(), 0xFFFF);
  int next = 0;
  auto fill_slot = [&](size_t slot) {
    for (int e = 0; e < kv_dim; ++e) {
      s.k_cache[slot * kv_dim + e] = RandomBits(c.dtype, rng);
      s.v_cache[slot * kv_dim + e] = RandomBits(c.dtype, rng);
    }
  };
  for (int i = 0; i < s.real; ++i) {
    int32_t* table = &s.tables[static_cast<size_t>(i) * s.max_blocks];
    const int ctx = contexts[i];
    for (int b = 0; b < (ctx + grow + bs - 1) / bs; ++b) table[b] = pool[next++];
    for (int pos = 0; pos < ctx - 1; ++pos) fill_slot(static_cast<size_t>(table[pos / bs]) * bs + pos % bs);
  }
  const int32_t pad_block = pool[next++];
  for (int i = 0; i < bs; ++i) fill_slot(static_cast<size_t>(pad_block) * bs + i);
  s.query_start.resize(s.num_seqs + 1);
  s.context_len.resize(s.num_seqs);
  for (int i = 0; i < s.num_seqs; ++i) {
    s.query_start[i + 1] = i + 1;
    s.context_len[i] = i < s.real ? contexts[i] : 1;
    if (i >= s.real) s.tables[static_cast<size_t>(i) * s.max_blocks] = pad_block;
  }
  s.row_stride = qd + 2 * kv_dim + 8;  // + padding columns
  s.k_offset = v_before_k ? qd + kv_dim : qd;
  s.v_offset = v_before_k ? qd : qd + kv_dim;
  s.qkv.resize(static_cast<size_t>(s.num_seqs) * s.row_stride);
  s.positions.resize(s.num_seqs);
  s.slots.resize(s.num_seqs);
  FillStepRows(c, s, rng);
  return s;
}

// The next decode step: every real sequence one token longer, fresh qkv rows and positions.
void AdvanceStep(const Config& c, FusedStep& s, std::mt19937& rng) {
  for (int i = 0; i < s.real; ++i) ++s.context_len[i];
  FillStepRows(c, s, rng);
}

// One copy of a fused test's device state (sizes of the step it is made for).
struct FusedDevice : DeviceArrays {
  std::unique_ptr<DeviceBuffer> positions, inv_freq;

  FusedDevice(const Config& c, const FusedStep& s, const std::vector<float>& inv)
      : DeviceArrays(c, s, s.num_seqs, s.bound_ctx) {
    positions = Make(s.positions.size() * 4);
    inv_freq = Make(inv.size() * 4);
    if (inv_freq->ptr) cudaMemcpy(inv_freq->ptr, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice);
  }
  bool ok() const {
    return k->ptr && v->ptr && qkv->ptr && positions->ptr && slots->ptr && query_start->ptr && context_len->ptr &&
           tables->ptr && inv_freq->ptr && out->ptr && (ws_bytes == 0 || ws->ptr);
  }

  // The step's inputs (and the caches when `caches`); poisons the output and the workspace.
  void Upload(const FusedStep& s, bool caches) {
    UploadArrays(s, caches);
    cudaMemcpy(positions->ptr, s.positions.data(), s.positions.size() * 4, cudaMemcpyHostToDevice);
  }

  absl::Status Attention(const Config& c, const FusedStep& s, cudaStream_t stream, const FusedRopeKv* fused) const {
    return LaunchAttention(c, Layer(c, s.num_blocks), s.row_stride, s.num_seqs, s.max_blocks, /*max_query_len=*/1,
                           s.bound_ctx, stream, fused);
  }

  // LaunchRopeKvWrite over every row, then the attention.
  absl::Status RunUnfused(const Config& c, const FusedStep& s, cudaStream_t stream) const {
    absl::Status st = LaunchRopeKvWrite(qkv->ptr, s.num_seqs, s.row_stride, c.num_heads(), s.k_offset, s.v_offset,
                                        Layer(c, s.num_blocks), static_cast<const int32_t*>(positions->ptr),
                                        static_cast<const int32_t*>(slots->ptr),
                                        static_cast<const float*>(inv_freq->ptr), stream);
    if (!st.ok()) return st;
    return Attention(c, s, stream, nullptr);
  }

  FusedRopeKv Fused(const FusedStep& s) const {
    FusedRopeKv f;
    f.positions = static_cast<const int32_t*>(positions->ptr);
    f.slots = static_cast<const int32_t*>(slots->ptr);
    f.inv_freq = static_cast<const float*>(inv_freq->ptr);
    f.k_offset = s.k_offset;
    f.v_offset = s.v_offset;
    return f;
  }

  absl::Status RunFused(const Config& c, const FusedStep& s, cudaStream_t stream) const {
    const FusedRopeKv f = Fused(s);
    return Attention(c, s, stream, &f);
  }

  static std::vector<uint16_t> Get(const DeviceBuffer& b, size_t elems) {
    std::vector<uint16_t> h(elems);
    cudaMemcpy(h.data(), b.ptr, elems * 2, cudaMemcpyDeviceToHost);
    return h;
  }
};

// The fused copy against the unfused one after a step: outputs (every row, padding sequences
// included) and both caches bitwise equal, the fused qkv still the step's raw rows, and the
// unfused outputs finite (a sanity check of the reference path itself).
::testing::AssertionResult SameAfterStep(const Config& c, const FusedStep& s, const FusedDevice& unfused,
                                         const FusedDevice& fused) {
  const size_t hd = static_cast<size_t>(c.num_heads()) * c.head_dim;
  const size_t kv_dim = static_cast<size_t>(c.num_kv_heads) * c.head_dim;
  const std::vector<uint16_t> out_a = FusedDevice::Get(*unfused.out, unfused.out_elems);
  const std::vector<uint16_t> out_b = FusedDevice::Get(*fused.out, fused.out_elems);
  for (size_t e = 0; e < out_a.size(); ++e) {
    const size_t row = e / hd, h = (e % hd) / c.head_dim, dim = e % c.head_dim;
    if (!std::isfinite(FromActivationBits(c.dtype, out_a[e]))) {
      return ::testing::AssertionFailure() << "unfused output not finite at seq " << row << " head " << h << " dim "
                                           << dim << " (context_len " << s.context_len[row] << ")";
    }
    if (out_a[e] != out_b[e]) {
      return ::testing::AssertionFailure()
             << "outputs differ at seq " << row << " (context_len " << s.context_len[row] << ", position "
             << s.positions[row] << ", slot " << s.slots[row] << ") head " << h << " dim " << dim << ": unfused "
             << FromActivationBits(c.dtype, out_a[e]) << " (0x" << std::hex << out_a[e] << "), fused "
             << FromActivationBits(c.dtype, out_b[e]) << " (0x" << out_b[e] << std::dec << ")";
    }
  }
  for (const char* which : {"k", "v"}) {
    const bool is_k = which[0] == 'k';
    const std::vector<uint16_t> a = FusedDevice::Get(is_k ? *unfused.k : *unfused.v, s.k_cache.size());
    const std::vector<uint16_t> b = FusedDevice::Get(is_k ? *fused.k : *fused.v, s.k_cache.size());
    for (size_t e = 0; e < a.size(); ++e) {
      if (a[e] != b[e]) {
        return ::testing::AssertionFailure() << which << " caches differ at slot " << e / kv_dim << " element "
                                             << e % kv_dim << ": unfused 0x" << std::hex << a[e] << ", fused 0x"
                                             << b[e] << std::dec;
      }
    }
  }
  if (FusedDevice::Get(*fused.qkv, s.qkv.size()) != s.qkv) {
    return ::testing::AssertionFailure() << "the fused call changed qkv (it must only read it)";
  }
  return ::testing::AssertionSuccess();
}

// The step run on two device copies, as the unfused pair (RoPE + KV write, then the attention)
// and as the fused launch: SameAfterStep of the two, or why they could not run.
::testing::AssertionResult FusedIsBitwiseTheUnfusedPair(const Config& c, const FusedStep& s,
                                                        const std::vector<float>& inv) {
  FusedDevice unfused(c, s, inv), fused(c, s, inv);
  if (!unfused.ok() || !fused.ok()) return ::testing::AssertionFailure() << "cudaMalloc failed";
  unfused.Upload(s, true);
  fused.Upload(s, true);
  absl::Status st = unfused.RunUnfused(c, s, nullptr);
  if (!st.ok()) return ::testing::AssertionFailure() << "unfused pair: " << st;
  st = fused.RunFused(c, s, nullptr);
  if (!st.ok()) return ::testing::AssertionFailure() << "fused launch: " << st;
  const cudaError_t synced = cudaDeviceSynchronize();
  if (synced != cudaSuccess) return ::testing::AssertionFailure() << cudaGetErrorString(synced);
  return SameAfterStep(c, s, unfused, fused);
}

std::string DescribeFused(const Config& c, const FusedStep& s) {
  return Describe(c) + (s.far_positions ? " far positions" : " positions = context - 1") +
         (s.k_offset > s.v_offset ? " v before k" : "") + " bound " + std::to_string(s.bound_ctx);
}

TEST_F(AttentionGpuTest, FusedRopeKvIsBitwiseRopeKvWriteThenAttention) {
  REQUIRE_GPU();
  std::vector<Config> configs = ConfigGrid({1, 4, 8, 12}, {8, 16, 32});  // 12: two head slices per kv head
  configs.push_back(kLlama8B);
  // One to 47 chunks: one split, several splits of one chunk, and splits of 2 and 3 chunks whose
  // newest position lies in a later chunk than the split's first (1025: 17 chunks, 2100: 33, 3000: 47).
  std::vector<int> contexts = {1, 2, 63, 64, 65, 512, 1000, 1025, 2100, 3000};
  int n = 0;
  for (const Config& c : configs) {
    const std::vector<float> inv = Llama3InvFreq(c.head_dim);
    for (bool far : {false, true}) {
      std::shuffle(contexts.begin(), contexts.end(), rng_);
      const FusedStep s = BuildFusedStep(c, contexts, far, /*v_before_k=*/n % 3 == 2, /*grow=*/0,
                                         /*extra_ctx=*/n % 2 == 1 ? 700 : 0, rng_);
      ++n;
      EXPECT_TRUE(FusedIsBitwiseTheUnfusedPair(c, s, inv)) << DescribeFused(c, s);
    }
  }
}

// Fused decode launches of many (sequence, kv head) pairs run in columns of splits
// (DecodeColumnsRopeKernel: a CTA computes the splits y, y + columns, ... of its sequence, its
// work items double-buffered). Forced to 1, 2, 3, 5 and 16 columns (FLUTE_ATTENTION_COLUMNS),
// and "off", with one or two items copied before the PDL wait (FLUTE_ATTENTION_PREFETCH), and at
// one column with the splits merged in the CTA's shared memory (the default) or through the
// workspace (FLUTE_ATTENTION_LOCAL_MERGE=0): bitwise the unfused pair (one CTA per split) for
// contexts of one chunk to 47 chunks (splits of up to 3 chunks), bound contexts beyond the
// longest (columns past a sequence's splits), padding sequences (invalid slots: the newest row
// read from the cache) and head slices.
TEST_F(AttentionGpuTest, FusedDecodeColumnsAreBitwiseTheUnfusedPair) {
  REQUIRE_GPU();
  // {dtype, D, kv heads, group, block size}; group 12: two head slices.
  const std::vector<Config> configs = {kLlama8B, {ActivationType::kBFloat16, 128, 8, 4, 16},
                                       {ActivationType::kBFloat16, 64, 2, 12, 8},
                                       {ActivationType::kFloat16, 128, 2, 1, 32}};
  std::vector<int> contexts = {1, 2, 63, 64, 65, 200, 515, 1000, 1025, 2100, 3000};
  int n = 0;
  struct Variant {
    const char *columns, *prefetch, *local_merge;
  };
  std::vector<Variant> variants;
  for (const char* columns : {"1", "2", "3", "5", "16", "off"}) {
    for (const char* prefetch : {"1", "2"}) variants.push_back({columns, prefetch, "1"});
  }
  variants.push_back({"1", "1", "0"});
  variants.push_back({"1", "2", "0"});
  for (const auto& [columns, prefetch, local_merge] : variants) {
    setenv("FLUTE_ATTENTION_COLUMNS", columns, 1);
    setenv("FLUTE_ATTENTION_PREFETCH", prefetch, 1);
    setenv("FLUTE_ATTENTION_LOCAL_MERGE", local_merge, 1);
    for (const Config& c : configs) {
      const std::vector<float> inv = Llama3InvFreq(c.head_dim);
      std::shuffle(contexts.begin(), contexts.end(), rng_);
      const FusedStep s = BuildFusedStep(c, contexts, /*far=*/n % 2 == 1, /*v_before_k=*/n % 3 == 2, /*grow=*/0,
                                         /*extra_ctx=*/n % 2 == 0 ? 900 : 0, rng_);
      ++n;
      EXPECT_TRUE(FusedIsBitwiseTheUnfusedPair(c, s, inv)) << "FLUTE_ATTENTION_COLUMNS=" << columns
                                                       << " FLUTE_ATTENTION_PREFETCH=" << prefetch
                                                       << " FLUTE_ATTENTION_LOCAL_MERGE=" << local_merge << " "
                                                       << DescribeFused(c, s);
    }
  }
  unsetenv("FLUTE_ATTENTION_COLUMNS");
  unsetenv("FLUTE_ATTENTION_PREFETCH");
  unsetenv("FLUTE_ATTENTION_LOCAL_MERGE");
}

// One-column launches whose splits are merged in shared memory need more shared memory the more
// splits the context bound allows. Launches of 16, 2, 8 and again 16 splits (context bounds from
// 3000 down to 100 positions and back), in that order in one process: each must launch (the
// kernel's shared-memory limit is raised for the largest, never lowered for a smaller one, or
// the next large launch fails with "invalid argument") and be bitwise the unfused pair.
TEST_F(AttentionGpuTest, OneColumnLaunchesOfDifferentSplitCountsAllRun) {
  REQUIRE_GPU();
  Config c;
  c.num_kv_heads = 8;  // 8B LLaMA: D = 128, group 4
  c.dtype = ActivationType::kBFloat16;
  const std::vector<float> inv = Llama3InvFreq(c.head_dim);
  setenv("FLUTE_ATTENTION_COLUMNS", "1", 1);
  for (const int bound : {3000, 100, 500, 3000}) {
    std::vector<int> contexts = {1, 64, 65, bound / 2, bound};
    const FusedStep s = BuildFusedStep(c, contexts, /*far=*/false, /*v_before_k=*/false, /*grow=*/0,
                                       /*extra_ctx=*/0, rng_);
    EXPECT_TRUE(FusedIsBitwiseTheUnfusedPair(c, s, inv)) << "context bound " << bound << " " << DescribeFused(c, s);
  }
  unsetenv("FLUTE_ATTENTION_COLUMNS");
}

// Decode launches of one sequence merge their splits in a thread-block cluster (over
// distributed shared memory, DecodeChunkRopeClusterKernel): bitwise the unfused pair, whose
// attention merges through the workspace, with clusters of 2 to 16 CTAs (the bound context),
// CTAs with nothing to do (sequences of fewer chunks than the cluster has splits), one chunk
// (no merge), batches of several sequences (the workspace merge),
// and FLUTE_ATTENTION_COMBINE=last forcing the workspace merge in the fused call too.
TEST_F(AttentionGpuTest, FusedClusterMergeIsBitwiseTheWorkspaceMerge) {
  REQUIRE_GPU();
  // {dtype, D, kv heads, group, block size}; group 12: two head slices.
  const std::vector<Config> configs = {kLlama8B, {ActivationType::kBFloat16, 64, 2, 12, 8},
                                       {ActivationType::kFloat16, 128, 2, 1, 16}};
  // One sequence and no padding (the cluster merge), then two with two padding sequences.
  const std::vector<std::vector<int>> batches = {{512}, {513}, {65}, {3000}, {1}, {1025}, {130}, {2100}, {65, 3000}};
  for (const char* combine : {"", "last"}) {
    if (*combine) setenv("FLUTE_ATTENTION_COMBINE", combine, 1);
    for (const Config& c : configs) {
      const std::vector<float> inv = Llama3InvFreq(c.head_dim);
      for (size_t b = 0; b < batches.size(); ++b) {
        const FusedStep s = BuildFusedStep(c, batches[b], /*far=*/b % 2 == 1, /*v_before_k=*/false, /*grow=*/0,
                                           /*extra_ctx=*/b == 6 ? 0 : 300, rng_,
                                           /*padding_seqs=*/batches[b].size() == 1 ? 0 : 2);
        EXPECT_TRUE(FusedIsBitwiseTheUnfusedPair(c, s, inv)) << "FLUTE_ATTENTION_COMBINE=" << combine << " "
                                                         << DescribeFused(c, s);
      }
    }
    unsetenv("FLUTE_ATTENTION_COMBINE");
  }
}

// The fused call captured once in a CUDA graph and replayed for three consecutive decode steps
// (fresh qkv rows and positions uploaded before each replay, every context one longer, so each
// replay also reads the row the previous one wrote to the cache), against the unfused pair run
// on a second copy.
TEST_F(AttentionGpuTest, FusedRopeKvInACapturedGraph) {
  REQUIRE_GPU();
  // {dtype, D, kv heads, group, block size}; group 12: two head slices.
  const std::vector<Config> configs = {kLlama8B, {ActivationType::kBFloat16, 64, 2, 12, 8}};
  constexpr int kReplays = 3;
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);  // blocking: ordered after the cudaMemcpy uploads
  for (const Config& c : configs) {
    for (bool far : {false, true}) {
      const std::vector<float> inv = Llama3InvFreq(c.head_dim);
      // 1 -> 3 positions, 64 -> 66 (a new chunk), 1023 -> 1025 (a new split), 2999 -> 3001.
      FusedStep s = BuildFusedStep(c, {1, 64, 1023, 2999, 700}, far, false, kReplays - 1, 1000, rng_);
      FusedDevice unfused(c, s, inv), fused(c, s, inv);
      ASSERT_TRUE(unfused.ok() && fused.ok()) << "cudaMalloc failed";
      unfused.Upload(s, true);
      fused.Upload(s, true);
      CUDA_OK(cudaDeviceSynchronize());
      cudaGraph_t graph;
      cudaGraphExec_t exec = nullptr;
      ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
      const absl::Status captured = fused.RunFused(c, s, stream);
      ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
      ASSERT_TRUE(captured.ok()) << captured;
      ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
      cudaGraphDestroy(graph);
      for (int replay = 0; replay < kReplays; ++replay) {
        if (replay > 0) {
          AdvanceStep(c, s, rng_);
          unfused.Upload(s, false);  // the caches stay: they hold the previous steps' rows
          fused.Upload(s, false);
        }
        CUDA_OK(cudaDeviceSynchronize());
        const absl::Status st = unfused.RunUnfused(c, s, stream);
        ASSERT_TRUE(st.ok()) << st;
        CUDA_OK(cudaGraphLaunch(exec, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        EXPECT_TRUE(SameAfterStep(c, s, unfused, fused)) << "replay " << replay << " " << DescribeFused(c, s);
      }
      cudaGraphExecDestroy(exec);
    }
  }
  cudaStreamDestroy(stream);
}

// The argument checks' layer on a dummy buffer (nothing is launched): 4 blocks of 16 slots, 2 kv
// heads of D = head_dim.
PagedKvLayer DummyLayer(uint16_t* dummy, int head_dim) {
  return PagedKvLayer{/*k=*/dummy, /*v=*/dummy, /*num_blocks=*/4, /*block_size=*/16, /*num_kv_heads=*/2, head_dim};
}

// The argument checks' batch on a dummy buffer: one decode sequence of 64 positions (4 blocks).
AttentionBatch DummyBatch(const uint16_t* dummy) {
  AttentionBatch batch;
  batch.num_seqs = 1;
  batch.query_start = reinterpret_cast<const int32_t*>(dummy);
  batch.context_len = reinterpret_cast<const int32_t*>(dummy);
  batch.block_tables = reinterpret_cast<const int32_t*>(dummy);
  batch.max_blocks_per_seq = 4;
  batch.max_query_len = 1;
  batch.max_context_len = 64;
  return batch;
}

// Argument checks happen on the host before anything touches the GPU.
TEST(AttentionArgsTest, BadArgumentsAreInvalidArgument) {
  alignas(16) static uint16_t dummy[64];
  PagedKvLayer layer = DummyLayer(dummy, 96);
  AttentionBatch batch = DummyBatch(dummy);
  const int32_t* slots = reinterpret_cast<const int32_t*>(dummy);
  auto attention = [&](int row_stride, int heads) {
    return LaunchPagedAttention(layer, dummy, row_stride, heads, 0.1f, batch, dummy, nullptr, 0, nullptr);
  };
  absl::Status st = attention(8 * 96, 4);
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_NE(std::string(st.message()).find("head_dim"), std::string::npos) << st;
  st = LaunchKvCacheWrite(layer, dummy, 1, 8 * 96, 0, 2 * 96, slots, nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;

  layer.head_dim = 64;
  layer.block_size = 12;
  st = attention(8 * 64, 4);
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_NE(std::string(st.message()).find("block_size"), std::string::npos) << st;
  st = LaunchKvCacheWrite(layer, dummy, 1, 8 * 64, 0, 2 * 64, slots, nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;

  layer.block_size = 16;
  EXPECT_TRUE(absl::IsInvalidArgument(attention(8 * 64, 3)));   // not a multiple of kv heads
  EXPECT_TRUE(absl::IsInvalidArgument(attention(4 * 64 - 8, 4)));  // row too short for q
  batch.max_blocks_per_seq = 3;  // 64 positions need 4 blocks of 16
  EXPECT_TRUE(absl::IsInvalidArgument(attention(8 * 64, 4)));
  batch.max_blocks_per_seq = 4;
  batch.max_context_len = 1000;  // needs a workspace, none given
  batch.max_blocks_per_seq = 63;
  EXPECT_TRUE(absl::IsInvalidArgument(attention(8 * 64, 4)));
}

// The fused RoPE + KV write's own rules: a decode-only batch, its pointers, and the qkv column
// layout of LaunchRopeKvWrite. Every other argument is valid, so each call fails on the rule
// it names (nothing is launched).
TEST(AttentionArgsTest, FusedRopeKvBadArgumentsAreInvalidArgument) {
  alignas(16) static uint16_t dummy[64];
  const PagedKvLayer layer = DummyLayer(dummy, 64);
  const int heads = 8, qd = heads * 64, kv_dim = 2 * 64, row_stride = qd + 2 * kv_dim;
  AttentionBatch batch = DummyBatch(dummy);
  FusedRopeKv good;
  good.positions = reinterpret_cast<const int32_t*>(dummy);
  good.slots = reinterpret_cast<const int32_t*>(dummy);
  good.inv_freq = reinterpret_cast<const float*>(dummy);
  good.k_offset = qd;
  good.v_offset = qd + kv_dim;
  auto call_stride = [&](const FusedRopeKv& f, int stride) {
    return LaunchPagedAttention(layer, dummy, stride, heads, 0.1f, batch, dummy, nullptr, 0, nullptr, &f);
  };
  auto call = [&](const FusedRopeKv& f) { return call_stride(f, row_stride); };
  auto expect_invalid = [](const absl::Status& st, const std::string& names) {
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_NE(std::string(st.message()).find(names), std::string::npos) << "want \"" << names << "\" in: " << st;
  };

  batch.max_query_len = 2;  // a prefill sequence may be in the batch
  batch.max_context_len = 64;
  expect_invalid(call(good), "batch.max_query_len");
  batch.max_query_len = 5;
  expect_invalid(call(good), "batch.max_query_len");
  batch.max_query_len = 1;

  FusedRopeKv f = good;
  f.positions = nullptr;
  expect_invalid(call(f), "positions");
  f = good;
  f.slots = nullptr;
  expect_invalid(call(f), "slots");
  f = good;
  f.inv_freq = nullptr;
  expect_invalid(call(f), "inv_freq");

  f = good;
  f.k_offset = qd + 4;  // not a multiple of 8
  expect_invalid(call(f), "k_offset");
  f = good;
  f.k_offset = -8;
  expect_invalid(call(f), "k_offset");
  f = good;
  f.k_offset = qd - 64;  // overlaps the q heads
  expect_invalid(call(f), "k_offset");
  f = good;
  f.v_offset = qd + kv_dim + 2;  // not a multiple of 8
  expect_invalid(call(f), "v_offset");
  f = good;
  f.v_offset = qd + 64;  // overlaps the k heads
  expect_invalid(call(f), "v_offset");
  f = good;
  f.v_offset = 64;  // overlaps the q heads
  expect_invalid(call(f), "v_offset");
  f = good;
  f.v_offset = qd + kv_dim + 8;  // past the row
  expect_invalid(call(f), "v_offset");
  f = good;
  f.k_offset = qd + 2 * kv_dim;  // k after v (a valid order), but past the row
  f.v_offset = qd;
  expect_invalid(call(f), "k_offset");
  f = good;
  expect_invalid(call_stride(f, qd + kv_dim), "v_offset");  // a row too short for the v heads
}

#endif  // FLUTE_HAVE_CUDA

}  // namespace
}  // namespace flute::gpu
