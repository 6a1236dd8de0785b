// LaunchRopeKvWrite (kernels/rope_kv_write.h) against what it replaces, LaunchRope followed by
// LaunchKvCacheWrite, on two copies of the same inputs: the fused qkv buffer and the whole K
// and V caches must be bitwise equal. Fresh random data every run (the seed is printed on
// failure); both caches start from the same random bit pattern (NaNs included), so a slot
// written by mistake, or one left unwritten, shows. Each run is also checked directly: a
// valid slot holds the row's rotated k heads and its original v heads, every other slot its
// poison, the v and padding columns of qkv are untouched. Skips with a message when the build
// has no CUDA or the machine has no GPU; the argument checks run without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/rope_kv_write.h"
#include "tests/kernels/gpu_test_util.h"

#ifdef FLUTE_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/attention.h"
#include "kernels/llama_ops.h"
#endif

namespace flute::gpu {
namespace {

#ifndef FLUTE_HAVE_CUDA
TEST(RopeKvWriteGpuTest, SkippedWithoutCuda) {
  EXPECT_EQ(LaunchRopeKvWrite(nullptr, 1, 0, 0, 0, 0, PagedKvLayer{}, nullptr, nullptr, nullptr, nullptr).code(),
            absl::StatusCode::kUnimplemented);
  GTEST_SKIP() << "built without CUDA: the GPU RoPE + KV write tests need nvcc at build time";
}
#else

#define REQUIRE_GPU() REQUIRE_GPU_FOR("RoPE + KV write")
using flute::testing::DeviceBuffer;
using flute::testing::Llama3InvFreq;

struct Case {
  ActivationType dtype = ActivationType::kFloat16;
  int head_dim = 128, num_heads = 32, num_kv_heads = 8, block_size = 16, m = 1;
};

std::string Describe(const Case& c) {
  return std::string(flute::testing::ActivationName(c.dtype)) + " D=" + std::to_string(c.head_dim) + " heads=" +
         std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) + " block=" +
         std::to_string(c.block_size) + " m=" + std::to_string(c.m);
}

// Everything a launch reads, on the host. qkv rows are q | k | v | 8 padding columns; the
// cache has more slots than rows (some are never written) over several blocks.
struct Problem {
  Case c;
  int row_stride = 0, k_offset = 0, v_offset = 0, num_blocks = 0;
  std::vector<uint16_t> qkv;               // [m, row_stride]
  std::vector<uint16_t> k_poison, v_poison;  // initial cache contents, [num_slots, kv_dim]
  std::vector<int32_t> positions, slots;   // [m]
  std::vector<float> inv_freq;             // [head_dim / 2]
  int kv_dim() const { return c.num_kv_heads * c.head_dim; }
  int num_slots() const { return num_blocks * c.block_size; }
  size_t cache_elems() const { return static_cast<size_t>(num_slots()) * kv_dim(); }
  bool valid_slot(int i) const { return slots[i] >= 0 && slots[i] < num_slots(); }
};

Problem MakeProblem(const Case& c, std::mt19937& rng) {
  Problem p;
  p.c = c;
  const int d = c.head_dim;
  p.k_offset = c.num_heads * d;
  p.v_offset = p.k_offset + p.kv_dim();
  p.row_stride = p.v_offset + p.kv_dim() + 8;
  p.num_blocks = std::max(4, (2 * c.m + c.block_size - 1) / c.block_size + 1);
  std::normal_distribution<float> normal;
  p.qkv.resize(static_cast<size_t>(c.m) * p.row_stride);
  for (auto& x : p.qkv) x = flute::testing::ToActivationBits(c.dtype, normal(rng));
  p.k_poison.resize(p.cache_elems());
  p.v_poison.resize(p.cache_elems());
  for (auto& x : p.k_poison) x = static_cast<uint16_t>(rng());
  for (auto& x : p.v_poison) x = static_cast<uint16_t>(rng());
  p.positions.resize(c.m);
  for (auto& pos : p.positions) pos = static_cast<int32_t>(rng() % 131073);
  p.positions[0] = 131072;
  if (c.m > 1) p.positions[1] = 0;
  std::vector<int32_t> perm(p.num_slots());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  p.slots.assign(perm.begin(), perm.begin() + c.m);  // distinct, random over all blocks
  p.inv_freq = Llama3InvFreq(d);
  return p;
}

struct Result {
  std::vector<uint16_t> qkv, k, v;
};

// One set of device buffers for a problem.
struct DeviceRun {
  DeviceBuffer qkv, k, v, positions, slots, inv_freq;
  explicit DeviceRun(const Problem& p)
      : qkv(p.qkv.size() * 2), k(p.cache_elems() * 2), v(p.cache_elems() * 2), positions(p.c.m * 4),
        slots(p.c.m * 4), inv_freq(p.inv_freq.size() * 4) {}
  bool ok() const { return qkv.ptr && k.ptr && v.ptr && positions.ptr && slots.ptr && inv_freq.ptr; }

  // (Re)loads every input, the caches with their poison.
  void Upload(const Problem& p) const {
    cudaMemcpy(qkv.ptr, p.qkv.data(), p.qkv.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(k.ptr, p.k_poison.data(), p.cache_elems() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(v.ptr, p.v_poison.data(), p.cache_elems() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(positions.ptr, p.positions.data(), p.c.m * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(slots.ptr, p.slots.data(), p.c.m * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(inv_freq.ptr, p.inv_freq.data(), p.inv_freq.size() * 4, cudaMemcpyHostToDevice);
  }

  PagedKvLayer Layer(const Problem& p) const {
    PagedKvLayer layer;
    layer.k = k.ptr;
    layer.v = v.ptr;
    layer.num_blocks = p.num_blocks;
    layer.block_size = p.c.block_size;
    layer.num_kv_heads = p.c.num_kv_heads;
    layer.head_dim = p.c.head_dim;
    layer.dtype = p.c.dtype;
    return layer;
  }

  // What the fused launch replaces: LaunchRope, then LaunchKvCacheWrite.
  absl::Status LaunchSequential(const Problem& p, cudaStream_t stream) const {
    absl::Status st = LaunchRope(p.c.dtype, qkv.ptr, p.c.m, p.row_stride, p.c.num_heads, p.k_offset,
                                 p.c.num_kv_heads, p.c.head_dim, static_cast<const int32_t*>(positions.ptr),
                                 static_cast<const float*>(inv_freq.ptr), stream);
    if (!st.ok()) return st;
    return LaunchKvCacheWrite(Layer(p), qkv.ptr, p.c.m, p.row_stride, p.k_offset, p.v_offset,
                              static_cast<const int32_t*>(slots.ptr), stream);
  }

  absl::Status LaunchFused(const Problem& p, cudaStream_t stream) const {
    return LaunchRopeKvWrite(qkv.ptr, p.c.m, p.row_stride, p.c.num_heads, p.k_offset, p.v_offset, Layer(p),
                             static_cast<const int32_t*>(positions.ptr), static_cast<const int32_t*>(slots.ptr),
                             static_cast<const float*>(inv_freq.ptr), stream);
  }

  Result Download(const Problem& p) const {
    Result r;
    r.qkv.resize(p.qkv.size());
    r.k.resize(p.cache_elems());
    r.v.resize(p.cache_elems());
    cudaMemcpy(r.qkv.data(), qkv.ptr, r.qkv.size() * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(r.k.data(), k.ptr, r.k.size() * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(r.v.data(), v.ptr, r.v.size() * 2, cudaMemcpyDeviceToHost);
    return r;
  }
};

// OK status, then a clean synchronize.
::testing::AssertionResult Finished(const absl::Status& st) {
  if (!st.ok()) return ::testing::AssertionFailure() << st;
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) return ::testing::AssertionFailure() << cudaGetErrorString(err);
  return ::testing::AssertionSuccess();
}

// Bitwise equality of two [rows, cols] arrays of 16-bit values; names the first difference.
::testing::AssertionResult SameBits(const char* what, const std::vector<uint16_t>& got,
                                    const std::vector<uint16_t>& want, int cols) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << what << ": " << got.size() << " elements, want " << want.size();
  }
  size_t diffs = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && diffs++ == 0) first = i;
  }
  if (diffs == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << diffs << " of " << got.size() << " elements differ; first at row " << first / cols
         << " col " << first % cols << ": got 0x" << std::hex << got[first] << ", want 0x" << want[first];
}

// The contract checked directly on one launch's result r for problem p: valid slots hold the
// row's rotated k (as left in r.qkv) and its original v, every other slot its poison; the v
// and padding columns of qkv are untouched; some q/k element was rotated (row 0 is at
// position 131072: its angles are far from multiples of 2 pi, so elements change).
::testing::AssertionResult MatchesContract(const Problem& p, const Result& r) {
  const int kv_dim = p.kv_dim();
  std::vector<uint16_t> k_want = p.k_poison, v_want = p.v_poison;
  for (int i = 0; i < p.c.m; ++i) {
    if (!p.valid_slot(i)) continue;
    const size_t row = static_cast<size_t>(i) * p.row_stride, slot = static_cast<size_t>(p.slots[i]) * kv_dim;
    std::copy_n(&r.qkv[row + p.k_offset], kv_dim, &k_want[slot]);
    std::copy_n(&p.qkv[row + p.v_offset], kv_dim, &v_want[slot]);
  }
  ::testing::AssertionResult res = SameBits("K cache vs rotated k of qkv", r.k, k_want, kv_dim);
  if (!res) return res;
  res = SameBits("V cache vs input v", r.v, v_want, kv_dim);
  if (!res) return res;
  size_t rotated_changed = 0;
  for (int i = 0; i < p.c.m; ++i) {
    const size_t row = static_cast<size_t>(i) * p.row_stride;
    for (int col = 0; col < p.row_stride; ++col) {
      if (col < p.v_offset) {
        rotated_changed += r.qkv[row + col] != p.qkv[row + col];
      } else if (r.qkv[row + col] != p.qkv[row + col]) {
        return ::testing::AssertionFailure() << "qkv row " << i << " col " << col
                                             << " (v or padding column) changed";
      }
    }
  }
  if (rotated_changed == 0) return ::testing::AssertionFailure() << "no q/k element of qkv was rotated";
  return ::testing::AssertionSuccess();
}

// Runs the sequential pair and the fused launch on copies of p; compares everything.
void CheckAgainstSequential(const Problem& p) {
  SCOPED_TRACE(Describe(p.c));
  DeviceRun seq(p), fused(p);
  ASSERT_TRUE(seq.ok() && fused.ok()) << "cudaMalloc failed";
  seq.Upload(p);
  fused.Upload(p);
  ASSERT_TRUE(Finished(seq.LaunchSequential(p, nullptr)));
  ASSERT_TRUE(Finished(fused.LaunchFused(p, nullptr)));
  const Result want = seq.Download(p), got = fused.Download(p);
  EXPECT_TRUE(SameBits("qkv", got.qkv, want.qkv, p.row_stride));
  EXPECT_TRUE(SameBits("K cache", got.k, want.k, p.kv_dim()));
  EXPECT_TRUE(SameBits("V cache", got.v, want.v, p.kv_dim()));
  EXPECT_TRUE(MatchesContract(p, got));
}

constexpr ActivationType kDtypes[] = {ActivationType::kFloat16, ActivationType::kBFloat16};

TEST(RopeKvWriteGpuTest, BitwiseEqualToRopeThenKvCacheWrite) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  const std::pair<int, int> heads[] = {{32, 8}, {8, 8}, {16, 2}};  // GQA 4, MHA, GQA 8
  for (ActivationType t : kDtypes) {
    for (int d : {64, 128}) {
      for (auto h : heads) {
        for (int m : {1, 3, 17, 64}) {
          for (int bs : {16, 8}) {
            Case c;
            c.dtype = t;
            c.head_dim = d;
            c.num_heads = h.first;
            c.num_kv_heads = h.second;
            c.block_size = bs;
            c.m = m;
            CheckAgainstSequential(MakeProblem(c, rng));
            if (::testing::Test::HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

// Padding rows (negative slots, and slots past the cache: never written either) are rotated
// in qkv like every row, and leave the cache as it was.
TEST(RopeKvWriteGpuTest, PaddingRowsRotateButWriteNothing) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  for (ActivationType t : kDtypes) {
    for (int d : {64, 128}) {
      Case c;
      c.dtype = t;
      c.head_dim = d;
      c.num_heads = 16;
      c.num_kv_heads = 2;
      c.m = 24;
      Problem p = MakeProblem(c, rng);
      for (int i = 1; i < c.m; i += 3) p.slots[i] = -1 - i;
      p.slots[4] = std::numeric_limits<int32_t>::min();
      p.slots[2] = p.num_slots();  // one past the last slot
      p.slots[5] = std::numeric_limits<int32_t>::max();
      CheckAgainstSequential(p);
      if (HasFatalFailure()) return;

      // Every row padding: the caches stay exactly their poison, qkv is still rotated.
      for (auto& s : p.slots) s = -1;
      SCOPED_TRACE("all rows padding");
      CheckAgainstSequential(p);
      DeviceRun fused(p);
      ASSERT_TRUE(fused.ok());
      fused.Upload(p);
      ASSERT_TRUE(Finished(fused.LaunchFused(p, nullptr)));
      const Result r = fused.Download(p);
      EXPECT_TRUE(SameBits("K cache vs poison", r.k, p.k_poison, p.kv_dim()));
      EXPECT_TRUE(SameBits("V cache vs poison", r.v, p.v_poison, p.kv_dim()));
      EXPECT_FALSE(SameBits("qkv vs input", r.qkv, p.qkv, p.row_stride)) << "qkv was not rotated";
      if (HasFatalFailure()) return;
    }
  }
}

// Captured once on a non-blocking stream, the graph replays the launch on whatever the
// buffers hold at replay time: two different problems of the same shape, each equal to the
// sequential pair run directly.
TEST(RopeKvWriteGpuTest, CapturedGraphReplaysTheSameResult) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  Case c;
  c.dtype = ActivationType::kBFloat16;
  c.head_dim = 128;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.m = 17;
  const Problem first = MakeProblem(c, rng);
  Problem second = MakeProblem(c, rng);
  ASSERT_EQ(second.cache_elems(), first.cache_elems());
  second.slots[3] = -1;  // a padding row in the second replay
  DeviceRun graph_run(first);
  ASSERT_TRUE(graph_run.ok());
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  const absl::Status st = graph_run.LaunchFused(first, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(st.ok()) << st;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  cudaGraphDestroy(graph);
  int replay = 0;
  const Problem* replays[] = {&first, &second, &first};
  for (const Problem* p : replays) {
    SCOPED_TRACE(::testing::Message() << "replay " << replay++);
    DeviceRun seq(*p);
    ASSERT_TRUE(seq.ok());
    seq.Upload(*p);
    ASSERT_TRUE(Finished(seq.LaunchSequential(*p, nullptr)));
    const Result want = seq.Download(*p);
    graph_run.Upload(*p);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the copies land before the replay starts
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const Result got = graph_run.Download(*p);
    EXPECT_TRUE(SameBits("qkv", got.qkv, want.qkv, p->row_stride));
    EXPECT_TRUE(SameBits("K cache", got.k, want.k, p->kv_dim()));
    EXPECT_TRUE(SameBits("V cache", got.v, want.v, p->kv_dim()));
    EXPECT_TRUE(MatchesContract(*p, got));
  }
  cudaGraphExecDestroy(exec);
  cudaStreamDestroy(stream);
}

// ---- Argument checks: on the host, before any CUDA call (so no GPU needed) ----
void ExpectInvalid(const absl::Status& st, const std::vector<std::string>& needles) {
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  for (const std::string& needle : needles) {
    EXPECT_NE(std::string(st.message()).find(needle), std::string::npos)
        << "message should mention \"" << needle << "\": " << st;
  }
}

TEST(RopeKvWriteArgsTest, BadArgumentsAreInvalidArgument) {
  // Non-null host dummies: validation must fail before anything is dereferenced or launched.
  alignas(16) static uint16_t buf[64];
  const int32_t* ids = reinterpret_cast<const int32_t*>(buf);
  const float* f = reinterpret_cast<const float*>(buf);
  PagedKvLayer good;
  good.k = buf;
  good.v = buf;
  good.num_blocks = 4;
  good.block_size = 16;
  good.num_kv_heads = 2;
  good.head_dim = 64;
  good.dtype = ActivationType::kBFloat16;
  // q: 8 heads [0, 512), k [512, 640), v [640, 768), row_stride 776.
  const int rs = 776, ko = 512, vo = 640;
  auto call = [&](const PagedKvLayer& layer, void* qkv, int m, int row_stride, int heads, int k_offset,
                  int v_offset, const int32_t* pos, const int32_t* slots, const float* inv) {
    return LaunchRopeKvWrite(qkv, m, row_stride, heads, k_offset, v_offset, layer, pos, slots, inv, nullptr);
  };
  auto with = [&](auto edit) {
    PagedKvLayer l = good;
    edit(l);
    return call(l, buf, 1, rs, 8, ko, vo, ids, ids, f);
  };
  ExpectInvalid(with([](PagedKvLayer& l) { l.head_dim = 96; }), {"LaunchRopeKvWrite", "cache.head_dim", "96"});
  ExpectInvalid(with([](PagedKvLayer& l) { l.block_size = 12; }), {"cache.block_size", "12"});
  ExpectInvalid(with([](PagedKvLayer& l) { l.block_size = 128; }), {"cache.block_size", "128"});
  ExpectInvalid(with([](PagedKvLayer& l) { l.num_kv_heads = 0; }), {"cache.num_kv_heads", "0"});
  ExpectInvalid(with([](PagedKvLayer& l) { l.num_blocks = -3; }), {"cache.num_blocks", "-3"});
  ExpectInvalid(with([](PagedKvLayer& l) { l.dtype = static_cast<ActivationType>(7); }), {"cache.dtype", "7"});
  ExpectInvalid(with([](PagedKvLayer& l) { l.k = nullptr; }), {"cache.k", "null"});
  ExpectInvalid(with([](PagedKvLayer& l) { l.v = nullptr; }), {"cache.v", "null"});
  ExpectInvalid(with([](PagedKvLayer& l) { l.v = reinterpret_cast<char*>(buf) + 2; }), {"cache.v", "aligned"});
  ExpectInvalid(call(good, buf, -1, rs, 8, ko, vo, ids, ids, f), {"m must", "-1"});
  ExpectInvalid(call(good, buf, 1, rs, -2, ko, vo, ids, ids, f), {"num_heads", "-2"});
  ExpectInvalid(call(good, buf, 1, 772, 8, ko, vo, ids, ids, f), {"row_stride", "772"});
  ExpectInvalid(call(good, buf, 1, rs, 8, 516, vo, ids, ids, f), {"k_offset", "516"});
  ExpectInvalid(call(good, buf, 1, rs, 8, ko, -8, ids, ids, f), {"v_offset", "-8"});
  ExpectInvalid(call(good, buf, 1, rs, 13, 776 - 128, 0, ids, ids, f), {"row_stride", "832"});  // q ends at 832
  ExpectInvalid(call(good, buf, 1, rs, 8, 656, vo, ids, ids, f), {"k_offset", "784", "776"});  // k past the row
  ExpectInvalid(call(good, buf, 1, rs, 8, ko, 656, ids, ids, f), {"v_offset", "784", "776"});  // v past the row
  ExpectInvalid(call(good, buf, 1, rs, 8, 504, vo, ids, ids, f), {"k_offset", "512", "504"});  // k overlaps q
  ExpectInvalid(call(good, buf, 1, rs, 8, ko, 576, ids, ids, f), {"v_offset", "576"});  // v overlaps k
  ExpectInvalid(call(good, buf, 1, rs, 8, ko, 448, ids, ids, f), {"v_offset", "448"});  // v overlaps q
  ExpectInvalid(call(good, nullptr, 1, rs, 8, ko, vo, ids, ids, f), {"qkv", "null"});
  ExpectInvalid(call(good, buf + 4, 1, rs, 8, ko, vo, ids, ids, f), {"qkv", "aligned"});
  ExpectInvalid(call(good, buf, 1, rs, 8, ko, vo, nullptr, ids, f), {"positions", "null"});
  ExpectInvalid(call(good, buf, 1, rs, 8, ko, vo, ids, nullptr, f), {"slots", "null"});
  ExpectInvalid(call(good, buf, 1, rs, 8, ko, vo, ids, ids, nullptr), {"inv_freq", "null"});
  // Nothing to do is not an error, and reads no pointer.
  EXPECT_TRUE(call(good, nullptr, 0, rs, 8, ko, vo, nullptr, nullptr, nullptr).ok());
}

#endif  // FLUTE_HAVE_CUDA

}  // namespace
}  // namespace flute::gpu
