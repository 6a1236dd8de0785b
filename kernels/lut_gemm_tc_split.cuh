// The tensor-core LUT-GEMM's split-K pieces (sm_90a; lut_gemm_tc_kernel.cuh describes the
// kernel): a block's share of the work (TcSegment: classic split-K, split-K in clusters,
// Stream-K) and the reductions of a tile's split partials other than the last block's (through
// distributed shared memory in a cluster, ClusterReduce; spread over the tile's split blocks,
// SpreadReduce). Included only by lut_gemm_tc_kernel.cuh: an anonymous namespace, one copy per
// instance file, as in lut_gemm_device.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/arrival.cuh"
#include "kernels/cluster.cuh"
#include "kernels/lut_gemm_device.cuh"
#include "kernels/lut_gemm_tc_common.cuh"

namespace flute::lut::tc_detail {
namespace {
// One block's share of the work: k-tiles [kt_begin, kt_begin + num_iters) of output tile
// (m_tile, col_block), piece `split` of the `splits` that cover the tile (1: the whole tile).
struct TcSegment {
  int m_tile, col_block, split, splits, kt_begin, num_iters;
};

// Piece `split` of the args.splits that cover tile (m_tile, col_block): k-tiles
// [split * ktiles_per_split, ...), the last piece possibly shorter.
__device__ __forceinline__ TcSegment SplitSegment(const TcArgs& args, int m_tile, int col_block, int split) {
  TcSegment s;
  s.m_tile = m_tile;
  s.split = split;
  s.col_block = col_block;
  s.splits = args.splits;
  const int num_ktiles = args.k / kTileK;
  s.kt_begin = s.split * args.ktiles_per_split;
  s.num_iters = min(num_ktiles, s.kt_begin + args.ktiles_per_split) - s.kt_begin;
  return s;
}

// Classic split-K: block b = (column block, split, m tile), m tile fastest.
__device__ __forceinline__ TcSegment ClassicSegment(const TcArgs& args) {
  const int m_tile = blockIdx.x % args.num_m_tiles;
  const int rest = blockIdx.x / args.num_m_tiles;
  const int split = rest % args.splits;
  return SplitSegment(args, m_tile, rest / args.splits, split);
}

// Split-K in clusters (TcPlan::cluster, MT = 128): the splits of a tile are one thread-block
// cluster of args.splits blocks, so block b = (column block, m tile, split), split fastest (the
// cluster's rank).
__device__ __forceinline__ TcSegment ClusterSegment(const TcArgs& args) {
  const int split = blockIdx.x % args.splits;
  const int rest = blockIdx.x / args.splits;
  const int m_tile = rest % args.num_m_tiles;
  return SplitSegment(args, m_tile, rest / args.num_m_tiles, split);
}

// Stream-K (TcArgs::stream_k): the T = tiles x k-tiles iterations, tile-major (tile t = column
// block t / num_m_tiles, m tile t % num_m_tiles), are cut into gridDim.x equal ranges, block c
// taking [c T / grid, (c + 1) T / grid) (grid <= T: every range is non-empty). The block owning
// iteration i is floor(((i + 1) grid - 1) / T), so a tile's pieces are the blocks from the owner
// of its first iteration to the owner of its last, and piece = block - that first owner.
__device__ __forceinline__ int64_t StreamKOwner(int64_t i, int64_t total) {
  return ((i + 1) * gridDim.x - 1) / total;
}
__device__ __forceinline__ int StreamKTiles(const TcArgs& args) {
  return args.num_m_tiles * ((args.n + kTileBlockN - 1) / kTileBlockN);
}
__device__ __forceinline__ TcSegment StreamKSegment(const TcArgs& args, int64_t it, int64_t end) {
  const int num_ktiles = args.k / kTileK;
  const int64_t total = static_cast<int64_t>(StreamKTiles(args)) * num_ktiles;
  const int tile = static_cast<int>(it / num_ktiles);
  TcSegment s;
  s.m_tile = tile % args.num_m_tiles;
  s.col_block = tile / args.num_m_tiles;
  s.kt_begin = static_cast<int>(it - static_cast<int64_t>(tile) * num_ktiles);
  s.num_iters = static_cast<int>(min(static_cast<int64_t>(num_ktiles - s.kt_begin), end - it));
  const int64_t first_owner = StreamKOwner(static_cast<int64_t>(tile) * num_ktiles, total);
  s.split = static_cast<int>(blockIdx.x - first_owner);
  s.splits = static_cast<int>(StreamKOwner(static_cast<int64_t>(tile) * num_ktiles + num_ktiles - 1, total) -
                              first_owner + 1);
  return s;
}

// 0, from an asm volatile: values computed from it cannot be hoisted out of a loop.
__device__ __forceinline__ int OpaqueZero() {
  int z;
  asm volatile("mov.b32 %0, 0;" : "=r"(z));
  return z;
}

__device__ __forceinline__ void StoreSegment(const TcSegment& s, volatile TcSegment* dst) {
  dst->m_tile = s.m_tile;
  dst->col_block = s.col_block;
  dst->split = s.split;
  dst->splits = s.splits;
  dst->kt_begin = s.kt_begin;
  dst->num_iters = s.num_iters;
}

// The split-K reduction of a cluster (TcPlan::cluster): every block of the cluster (`splits`
// blocks, this one `split`) puts its partial tile's first `vecs` float4s per thread (the 8-row
// groups that hold rows < M; kAcc / 4 for a full [kMT x 128] tile) into its own shared memory
// (`scratch`, the X stages: thread t's float4 j at (j * kThreads + t) * 16 bytes, so that a
// warp's 16-byte accesses are contiguous), and after the cluster barrier sums its slice,
// float4s [split * vecs / splits, (split + 1) * vecs / splits) of every thread, over the
// cluster's blocks in split order from 0.0f: the order of the workspace reduction (own_reduce),
// so bitwise the same sums. Both warpgroups' wgmmas must be retired and the X stages' copies complete (the main
// loop's wait_group 0 and cp.async wait) before the call; the caller stores its slice and then
// passes ClusterSyncRelaxed before exiting, so that no block's shared memory goes while another
// still reads it.
template <int kAcc>
__device__ __forceinline__ void ClusterReduce(float (&acc)[kAcc], int split, int splits, int vecs,
                                              unsigned char* scratch, int tid) {
  constexpr int kVecs = kAcc / 4;
  __syncthreads();  // the other warpgroup's wgmmas have retired too: the X stages are free
  float4* mine = reinterpret_cast<float4*>(scratch);
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    if (j < vecs) {
      mine[j * kThreads + tid] = make_float4(acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]);
    }
  }
  ClusterSync();  // every block's partial is in its shared memory and visible to the cluster
  const int j0 = split * vecs / splits, j1 = (split + 1) * vecs / splits;
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    if (j >= j0 && j < j1) acc[4 * j] = acc[4 * j + 1] = acc[4 * j + 2] = acc[4 * j + 3] = 0.0f;
  }
  const uint32_t base = SmemAddr(scratch) + tid * 16;
  for (int sp = 0; sp < splits; ++sp) {
#pragma unroll
    for (int j = 0; j < kVecs; ++j) {
      if (j >= j0 && j < j1) {
        const float4 p = LoadSharedCluster4(MapShared(base + j * kThreads * 16, sp));
        acc[4 * j] += p.x;
        acc[4 * j + 1] += p.y;
        acc[4 * j + 2] += p.z;
        acc[4 * j + 3] += p.w;
      }
    }
  }
}

// The split-K reduction spread over a tile's split blocks (TcArgs::spread_reduce; MakeTcPlan sets
// it for plain MT = 64 and 128 calls whose classic plan splits K 2-8 ways, whose whole grid is
// resident at once, and (MT = 128) whose tiles' clusters of that many blocks do not all fit:
// 4096x4096 and 14336x4096 at M = 65-128, 32 tiles x 4 splits; most split shapes at M = 33-64).
// Every block has stored its partial tile (fragment order), at MT = 128 but for its own slice
// (below), which it keeps on chip: (splits - 1) / splits of the bytes through L2 each way. Instead of the last
// block to arrive loading every split's [128 x 128] fp32 tile into one SM (4 x 64 KB, one L2
// round trip per split: the chain that made the whole gap to cuBLAS on 4096x4096), each of the
// tile's blocks waits for the others and sums one slice of the 8-row groups,
// [s * vecs / splits, (s + 1) * vecs / splits) for split s, over all splits in split order from
// 0.0f: bitwise the last block's sums. The wait is bounded (kSpreadWaitNs), so nothing
// hangs if the splits were not resident together after all. The tile's counter word: bits 0-7
// the arrivals, 8-15 the slices given up, 16-23 the blocks done with the word.
//  - A block that sees all arrivals within the wait sums its slice; one that does not stores its
//    own slice and gives the slice up with one acquire-release add (its bit and its "done"): if that add finds all
//    arrived after all, the block sums its slice anyway, else the last block to arrive, whose
//    arrival add returns the bits given up before it, sums it. So each slice is summed once, and
//    the fast path has no atomic between the wait and the loads.
//  - Each block adds its "done" once, after its last read of the word (off the critical path: its
//    result is needed only at the end); the block whose add completes the count resets the word
//    to 0 for the next call.
constexpr unsigned long long kSpreadWaitNs = 20000;

// Polls the counter word until all `splits` blocks arrived (true: their partials are visible to
// this thread) or wait_ns passed (false).
__device__ __forceinline__ bool WaitForArrivals(const int* counter, int splits, unsigned long long wait_ns) {
  const unsigned long long start = GlobalTimerNs();
  for (;;) {
    if ((LoadAcquireGpu(counter) & 0xff) == splits) return true;
    if (GlobalTimerNs() - start >= wait_ns) return false;
  }
}

// Slice `slice` of the tile: this thread's float4s j0 <= j < j1 (8-row groups) summed over the
// splits in split order from 0.0f, split sp's at frag + sp * split_stride + j * kFragmentGroupFloats,
// except split own_split's (this block's own slice, kept on chip: -1 for a slice given up by
// another block), at own[(j - j0) * kThreads]; the loads of two splits in one L2 round trip;
// store_group(j, sum) stores each. (All 4 splits of 4096x4096 in one round trip instead of two
// was no faster on the H100: the reduction is bound by the partials' bytes in L2, not by round
// trips.)
template <int kVecs, typename StoreGroup>
__device__ __forceinline__ void SumSlice(const float* frag, int64_t split_stride, int splits, int slice, int vecs,
                                         int own_split, const float4* own, const StoreGroup& store_group) {
  constexpr int kMaxSlice = kVecs / 2;  // (2 or more splits)
  const int j0 = slice * vecs / splits, len = (slice + 1) * vecs / splits - j0;
  float4 sum[kMaxSlice];
#pragma unroll
  for (int u = 0; u < kMaxSlice; ++u) sum[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int sp0 = 0; sp0 < splits; sp0 += 2) {
    float4 v[2][kMaxSlice];
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      const bool split_exists = sp0 + b < splits, on_chip = sp0 + b == own_split;
      const float* part = frag + (split_exists ? sp0 + b : 0) * split_stride + j0 * kFragmentGroupFloats;
#pragma unroll
      for (int u = 0; u < kMaxSlice; ++u) {
        v[b][u] = !split_exists || u >= len ? make_float4(0.0f, 0.0f, 0.0f, 0.0f)
                  : on_chip                 ? own[u * kThreads]
                                            : __ldcg(reinterpret_cast<const float4*>(part + u * kFragmentGroupFloats));
      }
    }
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      if (sp0 + b >= splits) continue;  // (adding 0.0f would turn a -0.0f sum into +0.0f)
#pragma unroll
      for (int u = 0; u < kMaxSlice; ++u) {
        sum[u].x += v[b][u].x;
        sum[u].y += v[b][u].y;
        sum[u].z += v[b][u].z;
        sum[u].w += v[b][u].w;
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kMaxSlice; ++u) {
    if (u < len) store_group(j0 + u, sum[u]);
  }
}

// The 8-row groups [j0, j1) of a tile's vecs that split `split` of `splits` sums (SpreadReduce).
__device__ __forceinline__ int SpreadSliceBegin(int split, int splits, int vecs) { return split * vecs / splits; }

// f(j, v) for the 8-row groups j0 <= j < j1 of this thread's accumulators, v = acc[4j .. 4j + 3]
// (j is a compile-time index into acc; the range is a run-time one).
template <int kAcc, typename F>
__device__ __forceinline__ void ForGroupsInRange(const float (&acc)[kAcc], int j0, int j1, const F& f) {
#pragma unroll
  for (int j = 0; j < kAcc / 4; ++j) {
    if (j >= j0 && j < j1) f(j, make_float4(acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]));
  }
}

// (tid 0) This block's arrival on the tile's counter word and its wait for the other splits:
// the slices it sums (its own, and as the last to arrive those given up before it), or
// kSpreadGiveUp if the wait ran out. *done_before: the "done" count before this block's.
constexpr unsigned kSpreadGiveUp = 1u << 31;
__device__ __forceinline__ unsigned ArriveAndWait(const TcArgs& args, int* counter, int splits, unsigned mine,
                                                  int* done_before) {
  const int old = AtomicAddAcqRelGpu(counter, 1);
  if ((old & 0xff) == splits - 1) {  // the last to arrive
    *done_before = atomicAdd(counter, 1 << 16);
    return mine | ((old >> 8) & 0xff);
  }
  if (WaitForArrivals(counter, splits, args.spread_reduce == kSpreadNoWait ? 0 : kSpreadWaitNs)) {
    *done_before = atomicAdd(counter, 1 << 16);
    return mine;
  }
  return kSpreadGiveUp;
}

// The protocol above for this block, after its partial stores; every thread calls it with its
// accumulators. kOwnOnChip (MT = 128): the stores left out the block's own slice
// (SpreadSliceBegin), which goes to scratch, shared memory free once every warp is past its main
// loop (the X stages), [kAcc / 8][kThreads] float4s. (At MT = 64, M = 33-64, keeping it on chip
// was 0-2 % slower: 4096x6144 1.5-2 %, session 39 call 1.)
template <int kAcc, bool kOwnOnChip, typename Segment, typename StoreGroup>
__device__ __forceinline__ void SpreadReduce(const TcArgs& args, const Segment& seg, const float (&acc)[kAcc],
                                             const float* frag, int64_t split_stride, int vecs, bool warp_active,
                                             int tid, unsigned char* scratch, const StoreGroup& store_group) {
  __shared__ unsigned s_slices;
  int* counter = args.counters + seg.col_block * args.num_m_tiles + seg.m_tile;
  const int splits = seg.splits;
  const unsigned mine = 1u << seg.split;
  const int j0 = SpreadSliceBegin(seg.split, splits, vecs), j1 = SpreadSliceBegin(seg.split + 1, splits, vecs);
  float4* own = reinterpret_cast<float4*>(scratch) + tid;
  // Every warp's wgmmas and X copies are done (so the X stages are free), and the block's partial
  // stores come before tid 0's release (cumulative).
  __syncthreads();
  if (kOwnOnChip && warp_active) ForGroupsInRange(acc, j0, j1, [&](int j, float4 v) { own[(j - j0) * kThreads] = v; });
  int done_before = 0;  // (tid 0)
  if (tid == 0) s_slices = ArriveAndWait(args, counter, splits, mine, &done_before);
  __syncthreads();  // (tid 0's acquire of the other splits' partials, extended to the block)
  unsigned slices = s_slices;
  if (slices == kSpreadGiveUp) {
    // Give the slice up, unless all arrived meanwhile: first store it for the block that sums it.
    if (kOwnOnChip && warp_active) {
      float* own_part = const_cast<float*>(frag) + seg.split * split_stride;
      ForGroupsInRange(acc, j0, j1, [&](int j, float4 v) {
        __stcg(reinterpret_cast<float4*>(own_part + j * kFragmentGroupFloats), v);
      });
    }
    __syncthreads();  // those stores before tid 0's release
    if (tid == 0) {
      done_before = AtomicAddAcqRelGpu(counter, static_cast<int>(mine << 8) + (1 << 16));
      s_slices = (done_before & 0xff) == splits ? mine : 0u;
    }
    __syncthreads();
    slices = s_slices;
  }
  for (int slice = 0; slice < splits; ++slice) {
    if (warp_active && ((slices >> slice) & 1)) {
      const int own_split = kOwnOnChip && slice == seg.split ? seg.split : -1;
      SumSlice<kAcc / 4>(frag, split_stride, splits, slice, vecs, own_split, own, store_group);
    }
  }
  if (tid == 0 && ((done_before >> 16) & 0xff) == splits - 1) atomicExch(counter, 0);  // every block is done
}

}  // namespace
}  // namespace flute::lut::tc_detail
