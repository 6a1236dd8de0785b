// Paged GQA attention for sm_90 (H100), decode rows: the columns kernel (DecodeColumnsRopeKernel,
// fused decode launches of many (sequence, kv head) pairs: CTA columns that each compute every
// columns-th split in turn) and its launch helpers, which attention_decode.cu's launcher calls
// (attention_launch.h). What the decode kernels share is in attention_decode_common.cuh.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/attention_common.cuh"
#include "kernels/attention_decode_common.cuh"
#include "kernels/attention_launch.h"
#include "kernels/pdl.cuh"

namespace flute::gpu::attn_detail {
namespace {

// ---- Decode in columns of splits (DecodeColumnsRopeKernel) ------------------------------------
// With many (sequence, kv head) pairs, one CTA per split (DecodeChunkRopeKernel) leaves each CTA
// one chunk to copy and then compute, with nothing to overlap them, and the grid's columns past
// a sequence's splits (the graph's context bound) hold SM slots while they wait. Here the grid
// has `columns` = gridDim.y <= ws_splits CTAs per (kv head slice, sequence), chosen by the host
// from the batch so that the grid is about one wave, and CTA column y computes the splits y,
// y + columns, ... of its sequence one after the other: each split exactly as DecodeChunkCta
// computes it (the same chunks, the same DecodeChunk, its partials stored to the same workspace
// cell, merged by MergeSplits in split order), so `out` is bitwise the same for every column
// count (batch invariance holds: the split plan is still a function of the context length
// only). The work items (the chunks of the column's splits, in order) are double-buffered: the
// next item's K/V rows are copied into the other buffer while the current one is computed.
// Shared memory: DecodeSmem with two buffers (65 KB at D = 128: dynamic), plus FusedRopeSmem.
// PDL and the fused RoPE + KV write as in DecodeChunkCta (kFused): before the wait, the first
// item's rows except position ctx - 1; the CTA holding the sequence's last split takes that row
// from qkv (or, with an invalid slot, from the cache after the wait).
// The position of a column's work: split `split`, chunk `chunk` (< split_end, the split's end).
struct ColumnCursor {
  int split, chunk, split_end;
  __device__ __forceinline__ ColumnCursor(int s, const SplitPlan& plan, int num_chunks)
      : split(s), chunk(s * plan.per_split), split_end(min(num_chunks, (s + 1) * plan.per_split)) {}
  // The item after this one: the next chunk of the split, else the first of split + columns.
  __device__ __forceinline__ ColumnCursor Next(int columns, const SplitPlan& plan, int num_chunks) const {
    if (chunk + 1 < split_end) {
      ColumnCursor c = *this;
      ++c.chunk;
      return c;
    }
    return ColumnCursor(split + columns, plan, num_chunks);
  }
};

// A finished split's running outputs: `out` directly when the sequence has one chunk (then it is
// the only split), else the workspace cell (sequence, head, split), or with `local` (the CTA
// computes every split of its slice: LocalMergePitch) the split's row of the CTA's own shared
// memory, [kG][kD] accumulators then [kG] (max, sum) pairs, as the cluster merge keeps them.
// Then the run restarts.
template <typename T, int kD, int kG>
__device__ __forceinline__ void StoreSplit(const AttnArgs& a, const DecodeTask& task, int split,
                                           DecodeRun<kD, kG>& run, float* local = nullptr) {
#pragma unroll
  for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
    const int o = threadIdx.x + i * kDecodeThreads;
    if (o < task.ng * kD) {
      const int h = task.h0 + o / kD, d = o % kD;
      if (local != nullptr && task.num_chunks > 1) {
        local[o] = run.acc[i];
        if (d == 0) {
          local[kG * kD + 2 * (o / kD)] = run.m[i];
          local[kG * kD + 2 * (o / kD) + 1] = run.l[i];
        }
      } else if (task.num_chunks == 1) {
        T* out = static_cast<T*>(a.out) + static_cast<int64_t>(task.q_row) * a.num_heads * kD;
        out[h * kD + d] = Act<T>::FromFloat(run.acc[i] / run.l[i]);
      } else {
        const int64_t cell = (static_cast<int64_t>(task.seq) * a.num_heads + h) * a.ws_splits + split;
        a.ws_acc[cell * kD + d] = run.acc[i];
        if (d == 0) {
          a.ws_ml[cell * 2] = run.m[i];
          a.ws_ml[cell * 2 + 1] = run.l[i];
        }
      }
    }
    run.acc[i] = 0.f;
    run.l[i] = 0.f;
    run.m[i] = -INFINITY;
  }
}

// The V rows past the item's n positions zeroed (P is 0 there, and 0 times a stale NaN would
// not be), and the newest position's row put in from qkv (fs) when the item is newest_chunk.
template <int kD, int kG>
__device__ __forceinline__ void PrepareColumnItem(const DecodeTask& task, int chunk, int newest_chunk,
                                                  typename DecodeSmem<kD, kG, 2>::Store& buf) {
  constexpr int kPieces = kD / 8;
  const int n = min(kChunk, task.ctx - chunk * kChunk);
  for (int e = n * kPieces + threadIdx.x; e < kChunk * kPieces; e += kDecodeThreads) {
    buf.kv.v[e / kPieces][e % kPieces] = make_uint4(0, 0, 0, 0);
  }
  if (chunk == newest_chunk && threadIdx.x < 2 * kPieces) {
    const int row = task.ctx - 1 - chunk * kChunk, piece = threadIdx.x % kPieces;
    auto& fs = FusedSmem<kD, kG>();
    if (threadIdx.x < kPieces) {
      buf.kv.k[row][DecodeSmem<kD, kG>::Swizzle(row, piece)] = fs.k[piece];
    } else {
      buf.kv.v[row][DecodeSmem<kD, kG>::Swizzle(row, piece)] = fs.v[piece];
    }
  }
}

// The floats per split of the local merge's partials ([kG][kD] accumulators, [kG] (max, sum)
// pairs), rounded up to whole float4s (MergeSplitsWith loads the accumulators as float4).
template <int kD, int kG>
constexpr int LocalMergePitch() {
  return (kG * kD + 2 * kG + 3) / 4 * 4;
}

// MergeSplitsWith over the CTA's own partials (`local`: split c at c * LocalMergePitch floats),
// once every thread's StoreSplit has passed a barrier: MergeSplits' arithmetic in the same order,
// so the same bits, without the workspace's stores, fence, arrival atomic and L2 reads.
template <typename T, int kD, int kG, int kBufs>
__device__ __forceinline__ void MergeLocalSplits(const AttnArgs& a, const DecodeTask& task, int num_splits,
                                                 const float* local, DecodeSmem<kD, kG, kBufs>& sm) {
  constexpr int kPitch = LocalMergePitch<kD, kG>();
  MergeSplitsWith<T, kD, kG>(
      a, task.q_row, task.h0, task.ng, num_splits, MergeScratch(sm),
      [&](int g, int q4, int c) { return *reinterpret_cast<const float4*>(local + c * kPitch + g * kD + 4 * q4); },
      [&](int g, int c) { return *reinterpret_cast<const float2*>(local + c * kPitch + kG * kD + 2 * g); });
}

// prefetch: the items whose copies are issued before the grid dependency wait, 1 or 2 (both
// buffers; the next item is then issued once an item is computed, two ahead).
// local: null, or (a one-column launch: this CTA computes every split of its slice) the
// partials' region of shared memory, ws_splits x LocalMergePitch floats, where StoreSplit keeps
// each split's partials and MergeLocalSplits merges them (the workspace is not used then).
template <typename T, int kD, int kG>
__device__ __forceinline__ void DecodeColumnCta(const AttnArgs& a, const RopeKvArgs& r, int prefetch,
                                                DecodeSmem<kD, kG, 2>& sm, float* local) {
  LaunchDependents();  // first, as PdlPrologue (kernels/pdl.cuh says why that is safe)
  DecodeTask task;
  task.seq = blockIdx.z;
  task.q_row = a.query_start[task.seq];
  task.ctx = a.context_len[task.seq];
  task.num_chunks = (task.ctx + kChunk - 1) / kChunk;
  const SplitPlan plan = PlanSplits(max(task.num_chunks, 1));
  const int column = blockIdx.y, columns = gridDim.y;
  // Nothing to do (not a decode sequence, an empty context, a column past the splits): wait
  // before exiting, as DecodeChunkCta says why.
  if (a.query_start[task.seq + 1] - task.q_row != 1 || task.num_chunks <= 0 || column >= plan.num_splits) {
    GridDependencyWait();
    return;
  }
  task.kv_head = blockIdx.x / a.head_slices;
  const int g0 = (blockIdx.x % a.head_slices) * kG;
  task.ng = min(kG, a.group - g0);
  task.h0 = task.kv_head * a.group + g0;
  const int32_t* table = a.block_tables + static_cast<int64_t>(task.seq) * a.max_blocks_per_seq;
  const int last_chunk = task.num_chunks - 1;  // holds position ctx - 1
  const auto issue = [&](int chunk, int skip, int b) {
    IssueChunkKv<T, kD, kG>(a, table, task.kv_head, chunk * kChunk, min(kChunk, task.ctx - chunk * kChunk), skip,
                            sm, b);
    CpAsyncCommit();  // one group per item (possibly empty): the waits below count them
  };

  // Before the wait: the first `prefetch` items' rows, except position ctx - 1 (written this
  // step: from qkv after the wait, or from the cache after the wait with an invalid slot).
  ColumnCursor item(column, plan, task.num_chunks);
  ColumnCursor ahead = item;  // the next item to issue
  int issued = 0;
  int newest_buf = -1;  // the buffer of a pre-issued item holding position ctx - 1
  for (; issued < prefetch && ahead.split < plan.num_splits; ++issued) {
    if (ahead.chunk == last_chunk) newest_buf = issued;
    issue(ahead.chunk, task.ctx - 1 - ahead.chunk * kChunk, issued);
    ahead = ahead.Next(columns, plan, task.num_chunks);
  }
  constexpr int kPieces = kD / 8;
  const int slot = r.slots[task.q_row];
  const bool from_qkv = slot >= 0 && slot < r.num_slots;
  const bool copies_newest = newest_buf >= 0 && threadIdx.x < 2 * kPieces && !from_qkv;  // K pieces, then V
  size_t newest_off = 0;
  if (copies_newest) {
    newest_off = CacheOffset(table, task.ctx - 1, a.bs_log2, a.num_kv_heads, task.kv_head, kD) +
                 (threadIdx.x % kPieces) * 8;
  }
  FusedRopeSinCos<kD, kG>(r, task);
  __syncthreads();  // cos/sin visible to FusedRopeKvRows

  GridDependencyWait();

  if (copies_newest) {
    const int row = task.ctx - 1 - last_chunk * kChunk;
    const int sp = DecodeSmem<kD, kG>::Swizzle(row, threadIdx.x % kPieces);
    if (threadIdx.x < kPieces) {
      CpAsync16(&sm.buf[newest_buf].kv.k[row][sp], static_cast<const T*>(a.k_cache) + newest_off);
    } else {
      CpAsync16(&sm.buf[newest_buf].kv.v[row][sp], static_cast<const T*>(a.v_cache) + newest_off);
    }
  }
  CpAsyncCommit();
  // The sequence's last chunk, when this column computes it and its row ctx - 1 comes from qkv.
  const bool holds_last_split = (plan.num_splits - 1) % columns == column;
  const int newest_chunk = from_qkv && holds_last_split ? last_chunk : -1;
  FusedRopeKvRows<T, kD, kG>(a, r, task, newest_chunk >= 0, newest_chunk >= 0 && blockIdx.x % a.head_slices == 0,
                             slot);
  __syncthreads();  // fs.q, fs.k, fs.v visible
  trace::Mark(0);  // (trace builds: the times after the wait, tools/trace_timeline.py --marks)

  DecodeRun<kD, kG> run;
#pragma unroll
  for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
    run.acc[i] = 0.f;
    run.l[i] = 0.f;
    run.m[i] = -INFINITY;
  }
  QFragments<kD> qa;
  LoadRotatedQ<kD, kG>(task, qa);
  // Item i sits in buffer i % 2. With one item prefetched, item i + 1 is issued at the top of
  // iteration i (into the buffer item i - 1 used); with two, item i + 2 once item i is computed.
  for (int i = 0;; ++i) {
    const int b = i & 1;
    if (prefetch == 1) {
      if (i > 0) __syncthreads();  // item i - 1 (buffer b ^ 1) merged by every thread
      if (ahead.split < plan.num_splits) {
        issue(ahead.chunk, ahead.chunk == newest_chunk ? task.ctx - 1 - ahead.chunk * kChunk : kChunk, b ^ 1);
        ahead = ahead.Next(columns, plan, task.num_chunks);
      } else {
        CpAsyncCommit();  // an empty group keeps "all but the last" meaning item i's
      }
    }
    PrepareColumnItem<kD, kG>(task, item.chunk, newest_chunk, sm.buf[b]);
    // Item i's copies: all groups but the last (item i + 1's); at i = 0 also the newest row's,
    // committed after the prefetched items: all.
    if (i == 0 && prefetch == 2) {
      CpAsyncWaitAll();
    } else {
      CpAsyncWaitPrior1();
    }
    __syncthreads();  // every thread's copies and zeros are visible
    trace::Mark(2);  // (the last item's)
    DecodeChunk<T, kD, kG>(a, task, item.chunk, qa, sm, run, b);
    if (i == 0) trace::Mark(1);
    if (item.chunk + 1 == item.split_end) {
      StoreSplit<T, kD, kG>(a, task, item.split, run,
                            local != nullptr ? local + item.split * LocalMergePitch<kD, kG>() : nullptr);
    }
    const ColumnCursor next = item.Next(columns, plan, task.num_chunks);
    if (next.split >= plan.num_splits) break;
    if (prefetch == 2) {
      __syncthreads();  // item i (buffer b) merged by every thread
      if (ahead.split < plan.num_splits) {
        issue(ahead.chunk, ahead.chunk == newest_chunk ? task.ctx - 1 - ahead.chunk * kChunk : kChunk, b);
        ahead = ahead.Next(columns, plan, task.num_chunks);
      } else {
        CpAsyncCommit();  // an empty group keeps "all but the last" meaning item i + 1's
      }
    }
    item = next;
  }
  const int arrivals = (plan.num_splits - 1 - column) / columns + 1;  // the splits this CTA computed
  trace::Mark(3);
  if (task.num_chunks > 1 && local != nullptr) {
    __syncthreads();  // every split's partials stored, and the last item's buffers read
    MergeLocalSplits<T, kD, kG>(a, task, plan.num_splits, local, sm);
  } else if (task.num_chunks > 1 && a.split_counters != nullptr) {
    MergeIfLastSplit<T, kD, kG>(a, task, plan.num_splits, arrivals, sm);
  }
}

// Decode in columns of splits (DecodeColumnCta), fused RoPE + KV write; grid (kv heads x head
// slices, columns, sequences), DecodeSmem<kD, kG, 2> in dynamic shared memory.
template <typename T, int kD, int kG>
__global__ void __launch_bounds__(kDecodeThreads)
    DecodeColumnsRopeKernel(AttnArgs a, RopeKvArgs r, int prefetch, bool local_merge) {
  const trace::Scope trace_scope(trace::kDecodeAttention, static_cast<int32_t>(gridDim.z), static_cast<int32_t>(gridDim.y));
  extern __shared__ uint4 dynamic_smem[];
  static_assert(sizeof(DecodeSmem<kD, kG, 2>) % 16 == 0, "the local partials start 16-byte aligned");
  float* local = local_merge ? reinterpret_cast<float*>(reinterpret_cast<char*>(dynamic_smem) +
                                                        sizeof(DecodeSmem<kD, kG, 2>))
                             : nullptr;
  DecodeColumnCta<T, kD, kG>(a, r, prefetch, *reinterpret_cast<DecodeSmem<kD, kG, 2>*>(dynamic_smem), local);
}

// Decode in columns (DecodeColumnsRopeKernel) for fused launches: the number of CTA columns
// per (kv head slice, sequence), or 0 for one CTA per split (DecodeChunkRopeKernel).
// FLUTE_ATTENTION_COLUMNS (read at every launch, host side): "off" selects 0, a number N forces
// N columns (at most ws_splits; tests and A/B runs). FLUTE_ATTENTION_PREFETCH=1 copies one item
// before the PDL wait instead of two (A/B: two were 0.01-0.07 ms faster per step at batches 16-32). Unset: about one wave of the columns
// kernel, its resident CTAs per SM (the occupancy query, once per device) times the SMs divided
// by the (kv head slice, sequence) pairs; 0 when that is more than kMaxAutoColumns or at least
// ws_splits (each CTA would compute one split anyway).
// H100, 8B decode at 512-token contexts (bench/results/ab-2026-11-26-h100/session14/): batch 24
// (2 columns) -0.25 to -0.3 ms per step, batch 32 (1 column) -0.15 to -0.25 (W4), -0.3 (bf16); batch 16
// (3 columns) W4 +0.03 ms (the attention 24 -> 16-19 us after its release, but its copies ahead
// of the wait slow the qkv projection as much), bf16 +1.2 ms: with the columns kernel in the
// step, the bf16 engine's dense GEMVs ran 20-35 % slower (gate/up 84 -> 110 us), also at one
// column, so the cause is its shared-memory configuration, not its grid: it leaves the SMs at the
// largest carveout, and the dense GEMVs then ran with 28 KB of L1. With the GEMVs asking for
// their L1 where the step runs this kernel (DenseGemvParams::prefer_l1, session 15): batch 16
// (3 columns) W4 3.42-3.44 -> 3.35-3.36 ms, bf16 6.89-6.93 -> 6.91-6.96. Hence at most 3.
constexpr int64_t kMaxAutoColumns = 3;
struct ColumnsFit {
  bool ok = false;
  int slots = 0;  // resident CTAs of the columns kernel on the device
};

template <typename T, int kD, int kG>
ColumnsFit ColumnsKernelFit() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return {};
  static std::mutex mu;
  static std::map<int, ColumnsFit>* fits = new std::map<int, ColumnsFit>();
  std::lock_guard<std::mutex> lock(mu);
  const auto it = fits->find(device);
  if (it != fits->end()) return it->second;
  auto kernel = DecodeColumnsRopeKernel<T, kD, kG>;
  constexpr int smem = sizeof(DecodeSmem<kD, kG, 2>);
  ColumnsFit fit;
  int per_sm = 0, sms = 0;
  // The largest shared-memory carveout: otherwise the driver may keep a smaller one that the
  // previous kernel left (the bf16 engine's dense GEMMs), and fewer CTAs fit an SM.
  fit.ok = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) == cudaSuccess &&
           cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                cudaSharedmemCarveoutMaxShared) == cudaSuccess &&
           cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kDecodeThreads, smem) == cudaSuccess &&
           cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess && per_sm >= 1;
  fit.slots = per_sm * sms;
  cudaGetLastError();  // a refused attribute or query is not an error of the launch
  fits->emplace(device, fit);
  return fit;
}

template <typename T, int kD, int kG>
int DecodeColumns(int ws_splits, int num_kv_heads, int head_slices, int num_seqs) {
  const char* env = std::getenv("FLUTE_ATTENTION_COLUMNS");
  if (env != nullptr && std::strcmp(env, "off") == 0) return 0;
  if (ws_splits < 2) return 0;
  const ColumnsFit fit = ColumnsKernelFit<T, kD, kG>();
  if (!fit.ok) return 0;
  const int forced = env != nullptr ? std::atoi(env) : 0;
  if (forced > 0) return std::min(forced, ws_splits);
  const int64_t pairs = static_cast<int64_t>(num_seqs) * num_kv_heads * head_slices;
  const int64_t columns = std::max<int64_t>(fit.slots / pairs, 1);
  return columns > kMaxAutoColumns || columns >= ws_splits ? 0 : static_cast<int>(columns);
}
template <typename T, int kD, int kG>
int DecodeColumns(const AttnArgs& a, int num_seqs) {
  return DecodeColumns<T, kD, kG>(a.ws_splits, a.num_kv_heads, a.head_slices, num_seqs);
}

// Shared memory of a one-column launch with the local merge (DecodeColumnCta's `local`): the
// columns kernel's plus ws_splits rows of partials; 0 where it is off or would cost a wave.
// In a one-column launch each CTA computes all of its slice's splits, so their merge needs no
// other CTA: keeping the partials in shared memory removes the end of every CTA's chain (the
// workspace stores, the arrival atomic's round trip and the L2 reads of the partials: ~3 us
// from the last item to the exit at the 8B bf16 decode step at batch 32, H100 session 19).
// Only where the extra shared memory keeps the grid in one wave of resident CTAs.
// FLUTE_ATTENTION_LOCAL_MERGE=0 turns it off (tests, A/B runs: the bits are the same).
template <typename T, int kD, int kG>
size_t LocalMergeSmem(int ws_splits, int64_t ctas) {
  const char* env = std::getenv("FLUTE_ATTENTION_LOCAL_MERGE");
  if (env != nullptr && std::strcmp(env, "0") == 0) return 0;
  const size_t smem = sizeof(DecodeSmem<kD, kG, 2>) + sizeof(float) * ws_splits * LocalMergePitch<kD, kG>();
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  static std::mutex mu;
  static std::map<std::pair<int, size_t>, int>* slots_of = new std::map<std::pair<int, size_t>, int>();
  // The kernel's dynamic shared-memory limit per device: only ever raised. (One attribute serves
  // every size: lowering it for a smaller launch would make the next launch of a larger size,
  // or the replay of a graph that holds one, fail with "invalid argument".)
  static std::map<int, size_t>* limit_of = new std::map<int, size_t>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = slots_of->find({device, smem});
  if (it == slots_of->end()) {
    auto kernel = DecodeColumnsRopeKernel<T, kD, kG>;
    size_t& limit = (*limit_of)[device];
    bool ok = true;
    if (smem > limit) {
      ok = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) ==
           cudaSuccess;
      if (ok) limit = smem;
    }
    int per_sm = 0, sms = 0;
    ok = ok && cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kDecodeThreads, smem) == cudaSuccess &&
         cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess;
    cudaGetLastError();  // a refused attribute or query is not an error of the launch
    it = slots_of->emplace(std::make_pair(device, smem), ok ? per_sm * sms : 0).first;
  }
  return it->second >= ctas ? smem : 0;
}

}  // namespace

// The columns per (kv head slice, sequence) of a fused decode launch of this instance, or 0 for
// one CTA per split (DecodeColumns).
template <typename T, int kD, int kG>
int DecodeColumnCount(const AttnArgs& a, int num_seqs) {
  return DecodeColumns<T, kD, kG>(a, num_seqs);
}

// DecodeColumnsRopeKernel over `columns` CTA columns (> 0: DecodeColumnCount), with the local
// merge where one column computes every split and its partials fit (LocalMergeSmem).
template <typename T, int kD, int kG>
cudaError_t LaunchDecodeColumns(const AttnArgs& a, const RopeKvArgs& rope, int columns, int num_seqs,
                                cudaStream_t stream) {
  const dim3 grid(a.num_kv_heads * a.head_slices, columns, num_seqs);
  const char* prefetch_env = std::getenv("FLUTE_ATTENTION_PREFETCH");
  const int prefetch = prefetch_env != nullptr && std::strcmp(prefetch_env, "1") == 0 ? 1 : 2;
  const size_t local_smem =
      columns == 1 ? LocalMergeSmem<T, kD, kG>(a.ws_splits, static_cast<int64_t>(grid.x) * grid.z) : 0;
  LaunchWithPdl(DecodeColumnsRopeKernel<T, kD, kG>, grid, kDecodeThreads,
                local_smem > 0 ? local_smem : sizeof(DecodeSmem<kD, kG, 2>), stream, a, rope, prefetch,
                local_smem > 0);
  return cudaGetLastError();
}

// DecodeColumns of the instance LaunchDecodeForGroup picks (fused launches only).
template <typename T, int kD>
int DecodeColumnsForGroup(int group, int ws_splits, int num_kv_heads, int num_seqs) {
  const int head_slices = (group + kMaxGroup - 1) / kMaxGroup;
  const int g = group >= kMaxGroup ? kMaxGroup : group;
  if (g <= 1) return DecodeColumns<T, kD, 1>(ws_splits, num_kv_heads, head_slices, num_seqs);
  if (g <= 2) return DecodeColumns<T, kD, 2>(ws_splits, num_kv_heads, head_slices, num_seqs);
  if (g <= 4) return DecodeColumns<T, kD, 4>(ws_splits, num_kv_heads, head_slices, num_seqs);
  return DecodeColumns<T, kD, 8>(ws_splits, num_kv_heads, head_slices, num_seqs);
}

// The instances attention_decode.cu and attention.cu call (attention_launch.h).
#define FLUTE_DECODE_COLUMNS_INSTANCE(T, D, G)                                       \
  template int DecodeColumnCount<T, D, G>(const AttnArgs&, int);                     \
  template cudaError_t LaunchDecodeColumns<T, D, G>(const AttnArgs&, const RopeKvArgs&, int, int, cudaStream_t);
#define FLUTE_DECODE_COLUMNS_GROUPS(T, D)  \
  FLUTE_DECODE_COLUMNS_INSTANCE(T, D, 1)   \
  FLUTE_DECODE_COLUMNS_INSTANCE(T, D, 2)   \
  FLUTE_DECODE_COLUMNS_INSTANCE(T, D, 4)   \
  FLUTE_DECODE_COLUMNS_INSTANCE(T, D, 8)   \
  template int DecodeColumnsForGroup<T, D>(int, int, int, int);
FLUTE_DECODE_COLUMNS_GROUPS(__half, 64)
FLUTE_DECODE_COLUMNS_GROUPS(__half, 128)
FLUTE_DECODE_COLUMNS_GROUPS(__nv_bfloat16, 64)
FLUTE_DECODE_COLUMNS_GROUPS(__nv_bfloat16, 128)
#undef FLUTE_DECODE_COLUMNS_GROUPS
#undef FLUTE_DECODE_COLUMNS_INSTANCE

}  // namespace flute::gpu::attn_detail

// The columns kernel is traced too: this file's copy of the trace buffer (kernel_trace.cu calls
// every setter).
namespace flute::trace {
FLUTE_TRACE_SETTER(SetBufferAttentionColumns)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
