// Paged GQA attention for sm_90 (H100), decode rows: the kernels of one CTA per split
// (DecodeChunkKernel, DecodeChunkRopeKernel, DecodeChunkRopeClusterKernel), CombineKernel, and the
// launchers of attention_launch.h, which take the columns kernel (attention_decode_columns.cu)
// where it fits. What the decode kernels share, and how they work, is in
// attention_decode_common.cuh.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/attention_common.cuh"
#include "kernels/attention_decode_common.cuh"
#include "kernels/attention_launch.h"
#include "kernels/cluster.cuh"
#include "kernels/pdl.cuh"

namespace flute::gpu::attn_detail {
namespace {

// Grid (kv heads x head slices, splits, sequences). A sequence of one chunk is written to
// `out` directly; otherwise each split writes its merged partials to the workspace.
//
// PDL (launched with LaunchWithPdl, kernels/pdl.cuh): before GridDependencyWait the kernel
// reads only what the previous kernel (RoPE + KV-cache write; or the prefill kernel, which
// itself waited for that write before it let this grid start) does not write: the step
// inputs (query_start, context_len, block_tables) and the cache rows of positions < ctx - 1.
// So the CTA's first chunk is put in flight before the wait, all but the row of position
// ctx - 1 (the token written this step), which is copied after the wait, with q.
//
// kFused (FusedRopeKv, decode-only launches): the previous kernel is the qkv projection and
// nobody has written position ctx - 1 to the cache. Before the wait the CTA also reads its row's
// position and slot and computes cos/sin (step inputs); after it, it rotates its q heads from
// raw qkv (FusedRopeKvRows) and, if its chunks hold position ctx - 1 and the slot is valid,
// rotates the kv head's k and takes its v from qkv: that row goes into the chunk's shared K/V
// rows in place of a cache copy, and to the cache at the slot (head slice 0 only). With an
// invalid slot (padding row) the row is copied from the cache as in the unfused kernel. The
// rest (loads of the other rows, every floating-point operation of the attention) is the
// unfused kernel's.
//
// kCluster (DecodeChunkRopeClusterKernel): the grid's ws_splits CTAs of one (kv head slice,
// sequence) form a cluster (rank = split), and the splits are merged over distributed shared
// memory instead of through the workspace: each split CTA leaves its partials in its own shared
// memory, one cluster barrier publishes them, split 0 merges them (MergeSplitsCluster: the same
// bits as MergeSplits), and a second (relaxed) barrier keeps every CTA resident until it has
// read them. That replaces the fence, the arrival counter's atomic and the reads of the
// partials from L2 on the critical path of a decode step. A CTA with nothing to do (a split past
// its sequence's context) exits at once, as in the other kernels: the barriers wait for the
// cluster's non-exited threads only.
template <typename T, int kD, int kG, bool kFused, bool kCluster = false>
__device__ __forceinline__ void DecodeChunkCta(const AttnArgs& a, const RopeKvArgs& r, DecodeSmem<kD, kG>& sm) {
  LaunchDependents();  // first, as PdlPrologue (kernels/pdl.cuh says why that is safe)
  // A CTA with nothing to do still waits before it exits (nothing in flight then): the next
  // kernel's wait covers this grid only, so this grid must not complete before its own
  // predecessor (e.g. the O projection after a prefill-only step would read `out` while the
  // prefill kernel still writes it).
  DecodeTask task;
  task.seq = blockIdx.z;
  task.q_row = a.query_start[task.seq];
  if (a.query_start[task.seq + 1] - task.q_row != 1) {  // prefill sequences: the prefill kernel
    GridDependencyWait();
    return;
  }
  task.ctx = a.context_len[task.seq];
  task.num_chunks = (task.ctx + kChunk - 1) / kChunk;
  if (task.num_chunks <= 0) {  // empty context (not a valid step): nothing to attend to
    GridDependencyWait();
    return;
  }
  const SplitPlan plan = PlanSplits(task.num_chunks);
  const int split = blockIdx.y;
  if (split >= plan.num_splits) {
    GridDependencyWait();
    return;
  }
  task.kv_head = blockIdx.x / a.head_slices;
  const int g0 = (blockIdx.x % a.head_slices) * kG;
  task.ng = min(kG, a.group - g0);
  task.h0 = task.kv_head * a.group + g0;
  const int32_t* table = a.block_tables + static_cast<int64_t>(task.seq) * a.max_blocks_per_seq;
  const int first = split * plan.per_split;
  const int last = min(task.num_chunks, first + plan.per_split);

  // Before the wait: the first chunk's K/V rows except position ctx - 1 (its row `newest`
  // in the first chunk; >= kChunk when that position lies in a later chunk), and that row's
  // cache offset (the table is a step input).
  const int newest = task.ctx - 1 - first * kChunk;
  IssueChunkKv<T, kD, kG>(a, table, task.kv_head, first * kChunk, min(kChunk, task.ctx - first * kChunk),
                          newest, sm, 0);
  CpAsyncCommit();
  constexpr int kPieces = kD / 8;
  // Fused: whether the newest row comes from qkv (the row's slot is valid) rather than the cache.
  int slot = -1;
  bool from_qkv = false;
  if constexpr (kFused) {
    slot = r.slots[task.q_row];
    from_qkv = slot >= 0 && slot < r.num_slots;
  }
  const bool copies_newest = newest < kChunk && threadIdx.x < 2 * kPieces && (!kFused || !from_qkv);  // K pieces, then V
  size_t newest_off = 0;
  if (copies_newest) {
    newest_off = CacheOffset(table, task.ctx - 1, a.bs_log2, a.num_kv_heads, task.kv_head, kD) +
                 (threadIdx.x % kPieces) * 8;
  }
  if constexpr (kFused) {
    FusedRopeSinCos<kD, kG>(r, task);
    __syncthreads();  // cos/sin visible to FusedRopeKvRows
  }

  GridDependencyWait();

  if (copies_newest) {
    const int sp = DecodeSmem<kD, kG>::Swizzle(newest, threadIdx.x % kPieces);
    if (threadIdx.x < kPieces) {
      CpAsync16(&sm.buf[0].kv.k[newest][sp], static_cast<const T*>(a.k_cache) + newest_off);
    } else {
      CpAsync16(&sm.buf[0].kv.v[newest][sp], static_cast<const T*>(a.v_cache) + newest_off);
    }
  }
  CpAsyncCommit();
  // Fused: the chunk (if any of this CTA's) that holds position ctx - 1 taken from qkv.
  const int newest_chunk = kFused && from_qkv && last == task.num_chunks ? task.num_chunks - 1 : -1;
  if constexpr (kFused) {
    FusedRopeKvRows<T, kD, kG>(a, r, task, newest_chunk >= 0, newest_chunk >= 0 && blockIdx.x % a.head_slices == 0,
                               slot);
    __syncthreads();  // fs.q, fs.k, fs.v visible
  }

  DecodeRun<kD, kG> run;
#pragma unroll
  for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
    run.acc[i] = 0.f;
    run.l[i] = 0.f;
    run.m[i] = -INFINITY;
  }
  QFragments<kD> qa;  // the slice's q as MMA A fragments, for every chunk
  if constexpr (kFused) {
    LoadRotatedQ<kD, kG>(task, qa);
  } else {
    LoadQ<T, kD, kG>(a, task, qa);  // in flight while the copies land
  }
  for (int chunk = first; chunk < last; ++chunk) {
    const int n = min(kChunk, task.ctx - chunk * kChunk);
    if (chunk > first) {
      // Later chunks (contexts > 1024: several chunks per split) after the wait, all rows,
      // once the previous chunk's reads of the shared storage (chunk_sum, m, l) are done.
      __syncthreads();
      IssueChunkKv<T, kD, kG>(a, table, task.kv_head, chunk * kChunk, n,
                              kFused && chunk == newest_chunk ? task.ctx - 1 - chunk * kChunk : kChunk, sm, 0);
      CpAsyncCommit();
    }
    // V rows past the context: zero (P is 0 there, and 0 times a stale NaN would not be).
    for (int i = n * kPieces + threadIdx.x; i < kChunk * kPieces; i += kDecodeThreads) {
      sm.buf[0].kv.v[i / kPieces][i % kPieces] = make_uint4(0, 0, 0, 0);
    }
    if constexpr (kFused) {
      if (chunk == newest_chunk && threadIdx.x < 2 * kPieces) {  // the newest row from qkv (fs)
        const int row = task.ctx - 1 - chunk * kChunk, piece = threadIdx.x % kPieces;
        auto& fs = FusedSmem<kD, kG>();
        if (threadIdx.x < kPieces) {
          sm.buf[0].kv.k[row][DecodeSmem<kD, kG>::Swizzle(row, piece)] = fs.k[piece];
        } else {
          sm.buf[0].kv.v[row][DecodeSmem<kD, kG>::Swizzle(row, piece)] = fs.v[piece];
        }
      }
    }
    CpAsyncWaitAll();
    __syncthreads();  // every thread's copies are visible
    DecodeChunk<T, kD, kG>(a, task, chunk, qa, sm, run, 0);
  }

  const int num_heads = a.num_heads;
#pragma unroll
  for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
    const int o = threadIdx.x + i * kDecodeThreads;
    if (o >= task.ng * kD) continue;
    const int h = task.h0 + o / kD, d = o % kD;
    if (task.num_chunks == 1) {
      T* out = static_cast<T*>(a.out) + static_cast<int64_t>(task.q_row) * num_heads * kD;
      out[h * kD + d] = Act<T>::FromFloat(run.acc[i] / run.l[i]);
    } else if (!kCluster) {
      const int64_t cell = (static_cast<int64_t>(task.seq) * num_heads + h) * a.ws_splits + split;
      a.ws_acc[cell * kD + d] = run.acc[i];
      if (d == 0) {
        a.ws_ml[cell * 2] = run.m[i];
        a.ws_ml[cell * 2 + 1] = run.l[i];
      }
    }
  }
  if constexpr (kCluster) {
    float* part = reinterpret_cast<float*>(&sm.buf[0]);  // [kG][kD] accumulators, then [kG] (max, sum)
    static_assert(sizeof(sm.buf[0]) >= sizeof(float) * kG * (kD + 2), "the partials must fit the K/V storage");
    if (task.num_chunks > 1) {
      __syncthreads();  // the chunk loop's last reads of sm.buf are done
#pragma unroll
      for (int i = 0; i < DecodeRun<kD, kG>::kOut; ++i) {
        const int o = threadIdx.x + i * kDecodeThreads;
        if (o >= task.ng * kD) continue;
        part[o] = run.acc[i];
        if (o % kD == 0) {
          part[kG * kD + 2 * (o / kD)] = run.m[i];
          part[kG * kD + 2 * (o / kD) + 1] = run.l[i];
        }
      }
    }
    ClusterSync();  // every split's partials are visible to CTA 0 of the cluster
    if (split == 0 && task.num_chunks > 1) {
      MergeSplitsCluster<T, kD, kG>(a, task.q_row, task.h0, task.ng, plan.num_splits, part, MergeScratch(sm));
    }
    ClusterSyncRelaxed();  // (its remote reads have completed: their values are in the outputs)
    return;
  }
  if (task.num_chunks > 1 && a.split_counters != nullptr) MergeIfLastSplit<T, kD, kG>(a, task, plan.num_splits, 1, sm);
}

template <typename T, int kD, int kG>
__global__ void __launch_bounds__(kDecodeThreads) DecodeChunkKernel(AttnArgs a) {
  const trace::Scope trace_scope(trace::kDecodeAttention, static_cast<int32_t>(gridDim.z));
  __shared__ DecodeSmem<kD, kG> sm;
  DecodeChunkCta<T, kD, kG, false>(a, RopeKvArgs{}, sm);
}

// The same with the fused RoPE + KV write (decode-only launches with a FusedRopeKv).
template <typename T, int kD, int kG>
__global__ void __launch_bounds__(kDecodeThreads) DecodeChunkRopeKernel(AttnArgs a, RopeKvArgs r) {
  const trace::Scope trace_scope(trace::kDecodeAttention, static_cast<int32_t>(gridDim.z));
  __shared__ DecodeSmem<kD, kG> sm;
  DecodeChunkCta<T, kD, kG, true>(a, r, sm);
}

// The same, the splits of a (kv head slice, sequence) in one cluster that merges them over
// distributed shared memory (launched with a cluster dimension of (1, ws_splits, 1)).
template <typename T, int kD, int kG>
__global__ void __launch_bounds__(kDecodeThreads) DecodeChunkRopeClusterKernel(AttnArgs a, RopeKvArgs r) {
  const trace::Scope trace_scope(trace::kDecodeAttention, static_cast<int32_t>(gridDim.z));
  __shared__ DecodeSmem<kD, kG> sm;
  DecodeChunkCta<T, kD, kG, true, true>(a, r, sm);
}

// Decode sequences of more than one chunk, where the split CTAs do not merge (no counters):
// merge the splits' partials in split order. Grid (num_heads, num_seqs), kDecodeThreads threads.
template <typename T, int kD>
__global__ void __launch_bounds__(kDecodeThreads) CombineKernel(AttnArgs a) {
  __shared__ float s_ml[2 * kMaxSplits];
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  const int seq = blockIdx.y, h = blockIdx.x;
  const int q_row = a.query_start[seq];
  if (a.query_start[seq + 1] - q_row != 1) return;
  const int num_chunks = (a.context_len[seq] + kChunk - 1) / kChunk;
  if (num_chunks <= 1) return;  // written by DecodeChunkKernel
  MergeSplits<T, kD, 1>(a, seq, q_row, h, 1, PlanSplits(num_chunks).num_splits, s_ml);
}

// ---- Launch helpers (decode) ---------------------------------------------------------------
// Whether a fused decode launch merges its splits in a cluster (DecodeChunkRopeClusterKernel):
// by default when the splits merge in the kernel (split counters), there are several, the
// launch has a single sequence (batches of 4 to 32 were slower with clusters: 0.2-0.7 ms per 8B
// step, H100), and a cluster of ws_splits CTAs fits the device. FLUTE_ATTENTION_COMBINE=last
// keeps the workspace merge by the last-arriving split (A/B runs); =kernel selects CombineKernel.
constexpr int kMaxClusterMergeSeqs = 1;

template <typename T, int kD, int kG>
bool UseClusterMerge(const AttnArgs& a, const RopeKvArgs* rope, int num_seqs) {
  if (rope == nullptr || a.split_counters == nullptr || a.ws_splits < 2 || num_seqs > kMaxClusterMergeSeqs) {
    return false;
  }
  const char* v = std::getenv("FLUTE_ATTENTION_COMBINE");
  if (v != nullptr && std::strcmp(v, "last") == 0) return false;
  // Clusters of more than 8 CTAs are "non-portable" (the H100 allows 16); checked once per
  // (device, cluster size): the attribute and the occupancy query.
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  static std::mutex mu;
  static std::map<std::pair<int, int>, bool>* fits = new std::map<std::pair<int, int>, bool>();
  const std::pair<int, int> key{device, a.ws_splits};
  std::lock_guard<std::mutex> lock(mu);
  const auto it = fits->find(key);
  if (it != fits->end()) return it->second;
  auto kernel = DecodeChunkRopeClusterKernel<T, kD, kG>;
  bool ok = a.ws_splits <= 8 ||
            cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
  if (ok) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(1, a.ws_splits, 1);
    cfg.blockDim = dim3(kDecodeThreads);
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = 1;
    attr.val.clusterDim.y = a.ws_splits;
    attr.val.clusterDim.z = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    ok = cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters >= 1;
  }
  cudaGetLastError();  // a refused attribute or query is not an error of the launch
  fits->emplace(key, ok);
  return ok;
}

template <typename T, int kD, int kG>
cudaError_t LaunchDecode(const AttnArgs& a, const RopeKvArgs* rope, int num_seqs, cudaStream_t stream) {
  const dim3 grid(a.num_kv_heads * a.head_slices, a.ws_splits, num_seqs);
  if (UseClusterMerge<T, kD, kG>(a, rope, num_seqs)) {
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    attr[1].id = cudaLaunchAttributeClusterDimension;
    attr[1].val.clusterDim.x = 1;
    attr[1].val.clusterDim.y = a.ws_splits;
    attr[1].val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(kDecodeThreads);
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 2;
    cudaLaunchKernelEx(&cfg, DecodeChunkRopeClusterKernel<T, kD, kG>, a, *rope);
    return cudaGetLastError();
  }
  const int columns = rope != nullptr ? DecodeColumnCount<T, kD, kG>(a, num_seqs) : 0;
  if (columns > 0) return LaunchDecodeColumns<T, kD, kG>(a, *rope, columns, num_seqs, stream);
  if (rope != nullptr) {
    LaunchWithPdl(DecodeChunkRopeKernel<T, kD, kG>, grid, kDecodeThreads, 0, stream, a, *rope);
  } else {
    LaunchWithPdl(DecodeChunkKernel<T, kD, kG>, grid, kDecodeThreads, 0, stream, a);
  }
  return cudaGetLastError();
}

}  // namespace

template <typename T, int kD>
cudaError_t LaunchDecodeForGroup(const AttnArgs& a, const RopeKvArgs* rope, int num_seqs, cudaStream_t stream) {
  // The smallest instance that holds the group (or a slice of kMaxGroup heads).
  const int g = a.group >= kMaxGroup ? kMaxGroup : a.group;
  if (g <= 1) return LaunchDecode<T, kD, 1>(a, rope, num_seqs, stream);
  if (g <= 2) return LaunchDecode<T, kD, 2>(a, rope, num_seqs, stream);
  if (g <= 4) return LaunchDecode<T, kD, 4>(a, rope, num_seqs, stream);
  return LaunchDecode<T, kD, 8>(a, rope, num_seqs, stream);
}

// CombineKernel after the decode kernel (LaunchAll, attention.cu: splits without counters).
template <typename T, int kD>
cudaError_t LaunchCombine(const AttnArgs& a, int num_seqs, cudaStream_t stream) {
  LaunchWithPdl(CombineKernel<T, kD>, dim3(a.num_heads, num_seqs), kDecodeThreads, 0, stream, a);
  return cudaGetLastError();
}

// The instances attention.cu calls (attention_launch.h).
template cudaError_t LaunchDecodeForGroup<__half, 64>(const AttnArgs&, const RopeKvArgs*, int, cudaStream_t);
template cudaError_t LaunchDecodeForGroup<__half, 128>(const AttnArgs&, const RopeKvArgs*, int, cudaStream_t);
template cudaError_t LaunchDecodeForGroup<__nv_bfloat16, 64>(const AttnArgs&, const RopeKvArgs*, int, cudaStream_t);
template cudaError_t LaunchDecodeForGroup<__nv_bfloat16, 128>(const AttnArgs&, const RopeKvArgs*, int, cudaStream_t);
template cudaError_t LaunchCombine<__half, 64>(const AttnArgs&, int, cudaStream_t);
template cudaError_t LaunchCombine<__half, 128>(const AttnArgs&, int, cudaStream_t);
template cudaError_t LaunchCombine<__nv_bfloat16, 64>(const AttnArgs&, int, cudaStream_t);
template cudaError_t LaunchCombine<__nv_bfloat16, 128>(const AttnArgs&, int, cudaStream_t);

}  // namespace flute::gpu::attn_detail

// The decode kernels are the attention's traced ones: this file's copy of the trace buffer.
namespace flute::trace {
FLUTE_TRACE_SETTER(SetBufferAttention)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
