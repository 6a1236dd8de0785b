// The tensor-core LUT-GEMM (sm_90a): see lut_gemm_tc.h. Y[M, N] = X[M, K] · Ŵᵀ
// with wgmma.mma_async m64nMTk16, A = Ŵ dequantized in registers, B = X from shared memory.
//
// Why: the split-K kernel (lut_gemm.cu) gives each warp a 16-row strip and ldmatrix's the X
// fragment from shared memory for every mma.m16n8k16, so from M ≈ 64 it is bound by shared-memory
// bandwidth, and below that it is issue-latency-bound (two dependent mma.sync per k step and
// warp). wgmma reads B (= X) from shared memory once per warpgroup and instruction, straight
// into the tensor cores, and takes A from registers in exactly the mma.m16n8k16 A-fragment layout
// per warp (warp w of a warpgroup = rows 16w..16w+15), which is what LookupPairs produces from the
// packed format (kernels/README.md), so the dequantization is the same as in the other kernels.
//
// The tensor-core LUT-GEMM's files (lut_gemm_tc_kernel.cuh describes the kernel):
//  - lut_gemm_tc.cu: the host side (the plan: tile height, split count, split-K in clusters,
//    Stream-K; the environment switches; LaunchTensorCoreLutGemm, TensorCoreClusterSplits,
//    TensorCoreStreamKWorkspaceBytes; the trace setter);
//  - lut_gemm_tc_common.cuh: what the kernels and the host side share (TcArgs, TcNormArgs,
//    TcConfig, the wgmma and fence wrappers, the fused epilogues' pieces, the fragment order
//    of the split-K partials);
//  - lut_gemm_tc_kernel.cuh: the main loop (TcLutGemmSegment), the kernels (TcLutGemmKernel,
//    TcLutGemmClusterKernel, TcLutGemmFusedKernel) and their launchers down to LaunchTcForBits;
//  - lut_gemm_tc_split.cuh: a block's share of the work (TcSegment: classic split-K, clusters,
//    Stream-K) and the split reductions in clusters (ClusterReduce) and spread (SpreadReduce);
//  - lut_gemm_tc_launch.h: TcPlan and the launchers' declarations, what lut_gemm_tc.cu calls;
//  - lut_gemm_tc_2bit.cu, lut_gemm_tc_3bit.cu, lut_gemm_tc_4bit.cu: the instances of one bit
//    width each (LaunchTcForBits<T, kBits>, every kernel of those bits), compiled in parallel.
#include "kernels/lut_gemm_tc.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <array>
#include <limits>
#include <map>
#include <mutex>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/lut_gemm_device.cuh"
#include "kernels/lut_gemm_tc_common.cuh"
#include "kernels/lut_gemm_tc_launch.h"

namespace flute::lut {
namespace {

// From lut_gemm_tc_common.cuh and lut_gemm_tc_launch.h.
using tc_detail::FragmentSplitFloats;
using tc_detail::kBlockN;
using tc_detail::LaunchTcForBits;
using tc_detail::TcArgs;
using tc_detail::TcClusterCapacity;
using tc_detail::TcConfig;
using tc_detail::TcNormArgs;
using tc_detail::TcPlan;
using tc_detail::TcSpread;

// ---- Host side -------------------------------------------------------------------------------
// FLUTE_LUT_TC selects the configuration, read on every call (so that one benchmark process can
// A/B them; unset or unknown = the default):
//   (unset)  the default: the per-thread split reduction (TcArgs::own_reduce) and the split
//            count chosen among those the workspace holds (see MakeTcPlan);
//   "old"    the behaviour before 2026-11-27: the [rows x 128] element-loop reduction and the
//            split count chosen first, then lowered until the workspace holds it;
//   "mt64"   the default with MT = 64 for every m (M > 64 as several 64-row m tiles: 2 blocks
//            per SM and half the accumulators, for twice the weight reads from L2);
//   "mt16", "mt32"  the same with MT = 16 or 32 (M > MT as several m tiles; A/B runs).
enum class TcMode { kDefault, kOld, kMt16, kMt32, kMt64 };
TcMode TcModeFromEnv() {
  const char* env = std::getenv("FLUTE_LUT_TC");
  if (env == nullptr) return TcMode::kDefault;
  if (std::strcmp(env, "old") == 0) return TcMode::kOld;
  if (std::strcmp(env, "mt16") == 0) return TcMode::kMt16;
  if (std::strcmp(env, "mt32") == 0) return TcMode::kMt32;
  if (std::strcmp(env, "mt64") == 0) return TcMode::kMt64;
  return TcMode::kDefault;
}


// FLUTE_LUT_TC_STREAMK, read on every call (A/B runs): "off" = never, "on" = wherever it
// applies (ApplyStreamK), unset or anything else = where the cost model prefers it.
enum class StreamKMode { kAuto, kOff, kOn };
StreamKMode StreamKModeFromEnv() {
  const char* env = std::getenv("FLUTE_LUT_TC_STREAMK");
  if (env == nullptr) return StreamKMode::kAuto;
  if (std::strcmp(env, "off") == 0) return StreamKMode::kOff;
  if (std::strcmp(env, "on") == 0) return StreamKMode::kOn;
  return StreamKMode::kAuto;
}

template <int kBits>
int TcSmemBytes(int mt) {
  switch (mt) {
    case 16: return TcConfig<kBits, 16>::kSmemBytes;
    case 32: return TcConfig<kBits, 32>::kSmemBytes;
    case 64: return TcConfig<kBits, 64>::kSmemBytes;
    default: return TcConfig<kBits, 128>::kSmemBytes;
  }
}

// The register limit's blocks per SM of each MT (TcConfig::kMinBlocksPerSm).
int TcRegBlocks(int mt) { return mt == 128 ? 1 : 2; }

// Rows of X per block: the smallest of 16 / 32 / 64 holding m, else 128 (m tiles beyond).
int TcRowsPerBlock(int64_t m, TcMode mode) {
  if (mode == TcMode::kMt16) return 16;
  if (mode == TcMode::kMt32) return 32;
  if (mode == TcMode::kMt64) return 64;
  return m <= 16 ? 16 : m <= 32 ? 32 : m <= 64 ? 64 : 128;
}

// Workspace bytes of the partials: [splits][M][N] floats, or with own_reduce the fragment
// order's padded [splits][column blocks][8-row groups] (LutGemmWorkspaceBytes pads likewise).
size_t PartialBytes(int splits, int64_t m, int64_t n, bool own_reduce) {
  if (splits == 1) return 0;
  const int64_t floats = own_reduce ? FragmentSplitFloats(m, n) : m * n;
  return static_cast<size_t>(splits) * static_cast<size_t>(floats) * sizeof(float);
}

// Whether `splits` fits the caller's workspace, laid out as the split-K kernel's: counters at
// its start (for the same n and m no more than the split-K kernel's: the tiles are larger),
// then the partials. So LutGemmWorkspaceBytes holds as many splits as the split-K kernel makes.
bool FitsWorkspace(const TcPlan& p, int64_t m, int64_t n, size_t workspace_bytes, bool have_workspace) {
  return p.splits == 1 ||
         (have_workspace && workspace_bytes >= p.counter_bytes + PartialBytes(p.splits, m, n, p.own_reduce));
}

// The most pieces Stream-K cuts a tile into, with `grid` blocks over tiles x num_ktiles
// iterations (block c: [c T / grid, (c + 1) T / grid); StreamKSegment).
int StreamKMaxPieces(int64_t tiles, int num_ktiles, int64_t grid) {
  const int64_t total = tiles * num_ktiles;
  const auto owner = [&](int64_t i) { return ((i + 1) * grid - 1) / total; };
  int64_t most = 1;
  for (int64_t t = 0; t < tiles; ++t) {
    most = std::max(most, owner(t * num_ktiles + num_ktiles - 1) - owner(t * num_ktiles) + 1);
  }
  return static_cast<int>(most);
}

// Stream-K instead of the classic plan in `p` (automatic split count, own_reduce), MT = 128 only
// (one block per SM; TcLutGemmBody): one block per SM, each with an equal share of the tiles'
// k-tiles, so that no SM is left with a whole tile more than another (e.g. 4096x28672 at
// M = 128: 224 tiles on 132 SMs, 92 of them with two; H200, same binary: 94.7 -> 88.6 us;
// 8192x10240: 76.8 -> 67.1; 8192x57344: 360.9 -> 331.8). Applies where every block gets >= 4
// k-tiles, the counters hold the tiles and the workspace holds the pieces' partials. Auto: where
// the cost per SM in k-tile times, 2 per block or segment for the pipeline fill and reduction,
// is under 95 % of the classic plan's: ceil(blocks / SMs) x (k-tiles per block + 2) against
// slots per SM x (k-tiles per block + 2 + 1 for a second segment).
void ApplyStreamK(const LutGemmParams& params, int sm_count, int blocks_per_sm, StreamKMode mode, TcPlan* p) {
  if (mode == StreamKMode::kOff || params.split_k > 0 || !p->own_reduce || p->mt != 128) return;
  const int num_ktiles = static_cast<int>(params.shape.k / kTileK);
  const int64_t tiles = static_cast<int64_t>(p->num_col_blocks) * p->num_m_tiles;
  const int64_t slots = static_cast<int64_t>(sm_count) * blocks_per_sm;
  const int64_t total = tiles * num_ktiles;
  if (total < 4 * slots || tiles * static_cast<int64_t>(sizeof(int)) > kSplitCounterBytes) return;
  if (mode == StreamKMode::kAuto) {
    const int64_t blocks = tiles * p->splits;
    const int64_t classic = (blocks + sm_count - 1) / sm_count * (p->ktiles_per_split + 2);
    const int64_t stream_k = blocks_per_sm * ((total + slots - 1) / slots + 3);
    if (20 * stream_k >= 19 * classic) return;
  }
  TcPlan c = *p;
  c.stream_k = true;
  c.grid = static_cast<int>(slots);
  c.splits = StreamKMaxPieces(tiles, num_ktiles, slots);
  if (!FitsWorkspace(c, params.m, params.shape.n, params.workspace_bytes, params.workspace != nullptr)) return;
  *p = c;
}

// FLUTE_LUT_TC_CLUSTER=off, read on every call: no split-K in clusters (UseClusters), for
// A/B runs and tests.
bool ClusterFromEnv() {
  const char* env = std::getenv("FLUTE_LUT_TC_CLUSTER");
  return env == nullptr || std::strcmp(env, "off") != 0;
}

// TcClusterCapacity of the current device, asked once per (device, dtype, bits, cluster size,
// shared memory).
int ClusterCapacity(ActivationType dtype, int bits, int cluster, int smem_bytes) {
  static std::mutex mu;
  static std::map<std::array<int, 5>, int> cache;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  const std::array<int, 5> key = {device, static_cast<int>(dtype), bits, cluster, smem_bytes};
  std::lock_guard<std::mutex> lock(mu);
  const auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const bool bf16 = dtype == ActivationType::kBFloat16;
  int clusters = 0;
  switch (bits) {
    case 2:
      clusters = bf16 ? TcClusterCapacity<__nv_bfloat16, 2>(cluster, smem_bytes)
                      : TcClusterCapacity<__half, 2>(cluster, smem_bytes);
      break;
    case 3:
      clusters = bf16 ? TcClusterCapacity<__nv_bfloat16, 3>(cluster, smem_bytes)
                      : TcClusterCapacity<__half, 3>(cluster, smem_bytes);
      break;
    default:
      clusters = bf16 ? TcClusterCapacity<__nv_bfloat16, 4>(cluster, smem_bytes)
                      : TcClusterCapacity<__half, 4>(cluster, smem_bytes);
      break;
  }
  cache.emplace(key, clusters);
  return clusters;
}

// Split-K in clusters (TcPlan::cluster) in place of the workspace reduction (and of Stream-K)
// for plain MT = 128 calls whose classic plan splits K 2-8 ways, where all the tiles' clusters of
// that many blocks are resident at once (an H100 holds 66 / 39 / 30 / 15 clusters of 2 / 3 / 4 / 8
// such blocks): the same split count, so bitwise the same sums, summed through distributed
// shared memory (ClusterReduce) instead of the last block's store -> arrival -> L2 loads of every
// partial tile. H100, FLUTE_UB_TC_SKIP=4 (no reduction at all; wrong outputs, timing only) against
// the workspace reduction, M = 128: 4096x4096 (4 splits) 16.95 -> 11.4 us, 4096x6144 (Stream-K)
// 23.3 -> 17.2; with the clusters, same binary against FLUTE_LUT_TC_CLUSTER=off: 4096x6144 at
// M = 112-128 0.89-0.94 of the time, M = 65-96 0.97-0.99, 4096x4096 at M = 256 0.90-0.95, the
// other playbook shapes within noise (bench/results/ab-2026-11-26-h100/session37/). (4096x4096 at
// M <= 128 keeps its 4 splits: 32 clusters of 4 do not fit, and 3 splits in clusters were as slow;
// its reduction is spread over the split blocks instead: UseSpread.)
// Default mode only (FLUTE_LUT_TC unset); plain and SwiGLU calls (the fused norms keep the
// workspace reduction).
bool UseClusters(const LutGemmParams& params, TcMode mode, TcPlan* p) {
  if (mode != TcMode::kDefault || p->mt != 128 || p->splits < 2 || p->splits > 8 || params.residual_epilogue() ||
      params.deferred_norm() || !ClusterFromEnv()) {
    return false;
  }
  const int64_t tiles = static_cast<int64_t>(p->num_col_blocks) * p->num_m_tiles;
  if (ClusterCapacity(params.dtype, params.shape.bits, p->splits, p->smem_bytes) < tiles) return false;
  p->cluster = p->splits;
  return true;
}

// FLUTE_LUT_TC_SPREAD, read on every call: "off" = never spread the reduction (UseSpread; A/B
// runs), "nowait" = spread with no wait, so that blocks hand their slices to the last one (tests),
// unset or anything else = spread where it applies, waiting up to kSpreadWaitNs.
TcSpread SpreadFromEnv() {
  const char* env = std::getenv("FLUTE_LUT_TC_SPREAD");
  if (env == nullptr) return tc_detail::kSpreadBounded;
  if (std::strcmp(env, "off") == 0) return tc_detail::kSpreadOff;
  if (std::strcmp(env, "nowait") == 0) return tc_detail::kSpreadNoWait;
  return tc_detail::kSpreadBounded;
}

// The reduction spread over each tile's split blocks (TcArgs::spread_reduce, SpreadReduce in
// lut_gemm_tc_kernel.cuh) for plain MT = 64 and 128 calls of a classic plan (not Stream-K, not in
// clusters) with 2-8 splits whose whole grid is resident at once (one block per SM at MT = 128,
// two at 64), so that a block's wait for its tile's other splits is short: the same split count
// and order, so bitwise the last block's sums. At MT = 64 (M = 33-64), against the fce2261
// binary (MT = 128 only): 4096x4096 M = 33-48 0.89-0.93 of the time, 4096x6144 0.90-0.96,
// 14336x4096 0.93-0.98, 8192x8192 0.94-0.98 (session38/call10; FLUTE_LUT_TC=mt64 with the spread
// at M = 65-128 was slower than MT = 128's). H100, same binary against FLUTE_LUT_TC_SPREAD=off, fp16, 3
// rounds (bench/results/ab-2026-11-26-h100/session38/, call 5): 4096x4096 at M = 65 / 96 / 128
// 0.93-0.94 / 0.90-0.92 / 0.88-0.89 of the time (4-bit G128 M = 128 17.1 -> 15.1 us, cuBLAS
// 14.7), 14336x4096 0.94-0.98; the shapes it does not apply to within noise (call 1). Clusters of
// 2 with this reduction over the pairs' sums were slower than either (call 4; not kept). Default
// mode only; plain and SwiGLU calls.
void UseSpread(const LutGemmParams& params, TcMode mode, int sm_count, TcPlan* p) {
  if ((mode != TcMode::kDefault && mode != TcMode::kMt64) || (p->mt != 128 && p->mt != 64) || p->splits < 2 ||
      p->splits > 8 || p->stream_k || p->cluster > 1 || !p->own_reduce || params.residual_epilogue() ||
      params.deferred_norm()) {
    return;
  }
  const int64_t grid = static_cast<int64_t>(p->num_col_blocks) * p->num_m_tiles * p->splits;
  const int blocks_per_sm = std::max(1, std::min(TcRegBlocks(p->mt), (227 * 1024) / (p->smem_bytes + 1024)));
  if (grid > static_cast<int64_t>(sm_count) * blocks_per_sm) return;
  p->spread = SpreadFromEnv();
}

// Splits K only when the (column block x m tile) grid is under one wave of resident blocks,
// choosing the split count that minimizes waves x (k-tiles per block + fixed cost), >= 4
// k-tiles per split (the pipeline needs work), and only as many as the workspace holds.
//
// Default (not FLUTE_LUT_TC=old): the candidates are only the split counts the workspace holds,
// so that a best count that does not fit falls to the best one that does, not to the next
// smaller one (e.g. 8192x10240 at M = 128: 80 blocks; 2 splits = 160 blocks = 2 waves of 32
// k-tiles, no better than 1 wave of 64), and each split adds a quarter k-tile to the cost: the
// last block reads one [MT x 128] fp32 partial tile per split (one L2 round trip each with
// own_reduce), and every split writes one.
absl::StatusOr<TcPlan> MakeTcPlanWithMt(const LutGemmParams& params, int sm_count, TcMode mode, StreamKMode sk_mode,
                                        int mt) {
  const LutShape& s = params.shape;
  TcPlan p;
  p.mt = mt;
  // (SumPartialsInSplitOrder stores plain outputs only.)
  p.own_reduce = mode != TcMode::kOld || params.residual_epilogue() || params.deferred_norm();
  p.num_m_tiles = static_cast<int>((params.m + p.mt - 1) / p.mt);
  p.num_col_blocks = static_cast<int>((s.n + kBlockN - 1) / kBlockN);
  p.smem_bytes = s.bits == 2 ? TcSmemBytes<2>(p.mt) : s.bits == 3 ? TcSmemBytes<3>(p.mt) : TcSmemBytes<4>(p.mt);
  p.counter_bytes = kSplitCounterBytes;  // (lut_gemm_device.cuh: the same prefix as the split-K kernel)
  const int num_ktiles = static_cast<int>(s.k / kTileK);
  const bool have_workspace = params.workspace != nullptr;
  if (params.split_k > 0) {
    const int want = std::min(params.split_k, num_ktiles);
    p.ktiles_per_split = (num_ktiles + want - 1) / want;
    p.splits = (num_ktiles + p.ktiles_per_split - 1) / p.ktiles_per_split;  // no empty split
    if (!FitsWorkspace(p, params.m, s.n, params.workspace_bytes, have_workspace)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "LUT-GEMM (tensor-core kernel): split_k=", params.split_k, " needs a workspace of ",
          PartialBytes(p.splits, params.m, s.n, p.own_reduce) + p.counter_bytes, " bytes, got ", params.workspace_bytes));
    }
    if (p.splits > 1 && static_cast<int64_t>(p.num_col_blocks) * p.num_m_tiles * 4 > kSplitCounterBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "LUT-GEMM (tensor-core kernel): split_k=", params.split_k, " over ", p.num_col_blocks * p.num_m_tiles,
          " output tiles needs more than the workspace's ", kSplitCounterBytes / 4, " counters: use fewer rows"));
    }
    if (!UseClusters(params, mode, &p)) UseSpread(params, mode, sm_count, &p);
    return p;
  }
  const int reg_blocks = TcRegBlocks(p.mt);
  const int blocks_per_sm = std::max(1, std::min(reg_blocks, (227 * 1024) / (p.smem_bytes + 1024)));
  const int64_t slots = static_cast<int64_t>(sm_count) * blocks_per_sm;
  const int64_t base = static_cast<int64_t>(p.num_m_tiles) * p.num_col_blocks;
  int best = 1;
  if (mode != TcMode::kOld) {
    if (base < slots) {
      // Cost in k-tile times of a block: waves x (k-tiles per split + 2 fixed) + splits / 4.
      // (x 4 to stay in integers.)
      int64_t best_cost = -1;
      const int max_splits = std::max(1, std::min(32, num_ktiles / 4));
      for (int sp = 1; sp <= max_splits; ++sp) {
        TcPlan c = p;
        c.ktiles_per_split = (num_ktiles + sp - 1) / sp;
        c.splits = (num_ktiles + c.ktiles_per_split - 1) / c.ktiles_per_split;
        if (c.splits != sp) continue;  // the same split count as a smaller sp
        if (!FitsWorkspace(c, params.m, s.n, params.workspace_bytes, have_workspace)) continue;
        const int64_t waves = (base * sp + slots - 1) / slots;
        const int64_t cost = 4 * waves * (c.ktiles_per_split + 2) + (sp > 1 ? sp : 0);
        if (best_cost < 0 || cost < best_cost) {
          best_cost = cost;
          best = sp;
        }
      }
    }
    p.ktiles_per_split = (num_ktiles + best - 1) / best;
    p.splits = (num_ktiles + p.ktiles_per_split - 1) / p.ktiles_per_split;
    if (!UseClusters(params, mode, &p)) {
      ApplyStreamK(params, sm_count, blocks_per_sm, sk_mode, &p);
      UseSpread(params, mode, sm_count, &p);
    }
    return p;
  }
  if (base < slots) best = CheapestSplitCount(base, slots, num_ktiles);
  for (;; --best) {  // as many splits as the workspace holds
    p.ktiles_per_split = (num_ktiles + best - 1) / best;
    p.splits = (num_ktiles + p.ktiles_per_split - 1) / p.ktiles_per_split;
    if (best == 1 || FitsWorkspace(p, params.m, s.n, params.workspace_bytes, have_workspace)) break;
  }
  return p;
}

// The plan for the call's tile height (TcRowsPerBlock), except one case measured to be faster
// with two 32-row m tiles than with one 64-row tile: 49-64 rows (3 bits: 57-64) where the 64-row
// plan splits K into pieces of at most 4 k-tiles (K = 4096 with N <= 4096: 8 splits), so that
// its blocks spend more time on the pipeline fill and the reduction of 8 [64 x 128] fp32
// partials than on their 4 k-tiles. 32-row tiles halve the partials and the splits. H100,
// 4096x4096, against the 64-row plan in the same run (bench/results/ab-2026-11-26-h100/session24/
// kbench-mt32-rule.txt): M = 49-64, fp16 and bf16, 4-bit G128 and G64 and 2-bit 7-16 % faster
// (M = 64 fp16 4-bit 14.7 -> 12.4 us, cuBLAS 14.5); 3-bit 2 % faster at M = 64 but 1-2 % slower
// at M = 49-56. On every other playbook shape MT = 32 was slower, up to 1.5x (kbench-mt.txt).
// Plain calls and SwiGLU only (the fused norms keep their tested tile heights), default mode,
// automatic splits.
absl::StatusOr<TcPlan> MakeTcPlan(const LutGemmParams& params, int sm_count, TcMode mode, StreamKMode sk_mode) {
  absl::StatusOr<TcPlan> plan = MakeTcPlanWithMt(params, sm_count, mode, sk_mode, TcRowsPerBlock(params.m, mode));
  const int64_t min_rows = params.shape.bits == 3 ? 57 : 49;
  if (!plan.ok() || mode != TcMode::kDefault || params.split_k > 0 || params.residual_epilogue() ||
      params.deferred_norm() || plan->mt != 64 || params.m < min_rows || plan->splits <= 1 || plan->stream_k ||
      plan->ktiles_per_split > 4) {
    return plan;
  }
  absl::StatusOr<TcPlan> halves = MakeTcPlanWithMt(params, sm_count, mode, sk_mode, 32);
  return halves.ok() ? halves : plan;
}

}  // namespace

namespace tc_detail {

// Where the group scales are applied after the sums (kFold: MT = 16 at G = 64) rather than to the
// dequantized weights (HMUL2). H100, 4-bit, M = 8 and 16, same run (bench/results/ab-2026-11-26-h100/
// session18/): G = 64 10-22 % faster on the 6 large LLaMA shapes (4096x28672 M = 16: 42.9 -> 34.3 us;
// there 8 scales per k-tile and thread, 4 pairs of rows x quarters, fed the HMUL2s); G = 128 even
// (0.99-1.01) in the kernel benchmark but the 8B W4 decode step ~1 % slower at batches 8-16, so G >= 128
// keeps HMUL2. (G = 32 has two scales per commit group.) FLUTE_LUT_TC_FOLD=off, read on every call:
// HMUL2 at G = 64 too (A/B runs, tests).
bool FoldFromEnv() {
  const char* env = std::getenv("FLUTE_LUT_TC_FOLD");
  return env == nullptr || std::strcmp(env, "off") != 0;
}

// G >= 128 at MT = 32 on kTileGroupLoop (one scale load and conversion per row and k-tile rather
// than per 32-wide quarter: ~10 fewer instructions per warp and k-tile in bf16). H100, same call,
// against kPlainLoop: M = 32 3-7 % faster at 4 bits and 3-12 % at 2 bits on the 7 large LLaMA
// shapes; the 8B W4 decode step (fused instances) at batch 24 -1.5 to -2 %, at batch 32 -0.5 to
// -3 % over two calls. At MT = 16 the same loop was 1-5 % slower at M = 8 and 16 (and the
// batch-16 step 3.12 -> 3.17 ms), so MT = 16 keeps kPlainLoop (session 13 had found the same
// split with a similar trim). FLUTE_LUT_TC_TILEGROUP=off,
// read on every call, runs kPlainLoop at MT = 32 too (A/B runs, tests).
bool TileGroupFromEnv() {
  const char* env = std::getenv("FLUTE_LUT_TC_TILEGROUP");
  return env == nullptr || std::strcmp(env, "off") != 0;
}

// Calls of 65-128 rows (one 128-row tile) on kRawScaleLoop: the next k-tile's scales are unpacked
// in the iteration that uses them, not right after their loads. H100, same binary against
// kPlainLoop, 3 rounds (bench/results/ab-2026-11-26-h100/session40/call5-*): fp16 M = 65-128
// 4096x6144 0.91-0.96 of the time (4-bit G128 M = 128 21.5 -> 19.8 us, 0.98 -> 1.06x cuBLAS),
// 8192x8192 0.90-0.96, 28672x8192 0.77-0.98, 8192x10240 0.96-1.01, 4096x4096 0.98-1.01, the rest
// 0.93-1.05 (noise on the longest); bf16 M = 128 alike. At M = 256-512 mixed (4096x4096 M = 256
// 0.91, 8192x8192 1.04-1.12) and the 8B W4 prefill of 256 / 512 tokens even, so those keep
// kPlainLoop. At MT = 16 and 64 (G >= 128) it was no faster alone and the 8B W4 decode step 1 %
// slower at batches 8-16 (call 7). FLUTE_LUT_TC_RAWSCALES=off, read on every call, runs kPlainLoop
// (A/B runs, tests).
bool RawScalesFromEnv() {
  const char* env = std::getenv("FLUTE_LUT_TC_RAWSCALES");
  return env == nullptr || std::strcmp(env, "off") != 0;
}

}  // namespace tc_detail

namespace {

template <typename T>
cudaError_t LaunchTcForType(const TcArgs& args, const TcNormArgs& norm, int bits, const TcPlan& p, bool pdl,
                            cudaStream_t stream) {
  switch (bits) {
    case 2: return LaunchTcForBits<T, 2>(args, norm, p, pdl, stream);
    case 3: return LaunchTcForBits<T, 3>(args, norm, p, pdl, stream);
    default: return LaunchTcForBits<T, 4>(args, norm, p, pdl, stream);
  }
}

}  // namespace

size_t TensorCoreStreamKWorkspaceBytes(const LutShape& shape, int64_t m) {
  LutGemmParams params;
  params.shape = shape;
  params.m = m;
  params.workspace = &params;  // (any non-null pointer: only the sizes are planned)
  params.workspace_bytes = std::numeric_limits<size_t>::max();
  const absl::StatusOr<TcPlan> plan = MakeTcPlan(params, DeviceSmCount(), TcMode::kDefault, StreamKMode::kOn);
  if (!plan.ok() || !plan->stream_k) return 0;
  return plan->counter_bytes + PartialBytes(plan->splits, m, shape.n, plan->own_reduce);
}

int TensorCoreClusterSplits(const LutGemmParams& params) {
  const absl::StatusOr<TcPlan> plan = MakeTcPlan(params, DeviceSmCount(), TcModeFromEnv(), StreamKModeFromEnv());
  return plan.ok() ? plan->cluster : 1;
}

int TensorCoreSpreadSplits(const LutGemmParams& params) {
  const absl::StatusOr<TcPlan> plan = MakeTcPlan(params, DeviceSmCount(), TcModeFromEnv(), StreamKModeFromEnv());
  return plan.ok() && plan->spread != tc_detail::kSpreadOff ? plan->splits : 1;
}

absl::Status LaunchTensorCoreLutGemm(const LutGemmParams& params, CUstream_st* stream) {
  if (params.norm_prologue()) {
    return absl::InvalidArgumentError("LUT-GEMM: the tensor-core kernel has no norm prologue (strip kernel only)");
  }
  if ((params.residual_epilogue() || params.deferred_norm()) && params.dtype != ActivationType::kBFloat16) {
    return absl::InvalidArgumentError(
        "LUT-GEMM: the tensor-core kernel's residual epilogue and deferred norm are compiled for bf16 only "
        "(dtype fp16 given; fp16 decode steps of few rows use the strip kernel's fused norms)");
  }
  if (params.shape.group_size < kTileK && reinterpret_cast<uintptr_t>(params.scales) % 8 != 0) {
    return absl::UnimplementedError(absl::StrCat(
        "LUT-GEMM: the tensor-core kernel needs 8-byte aligned scales at group size ", params.shape.group_size,
        " (one load per row and k-tile)"));
  }
  const int64_t max_grid = int64_t{1} << 31;
  if ((params.m + 15) / 16 * ((params.shape.n + kBlockN - 1) / kBlockN) * (params.shape.k / kTileK) >= max_grid) {
    return absl::UnimplementedError("LUT-GEMM: the tensor-core kernel's grid would exceed 2^31 blocks");
  }
  absl::StatusOr<TcPlan> plan = MakeTcPlan(params, DeviceSmCount(), TcModeFromEnv(), StreamKModeFromEnv());
  if (!plan.ok()) return plan.status();
  TcArgs args;
  args.x = params.x;
  args.packed = params.packed;
  args.scales = reinterpret_cast<const __half*>(params.scales);
  args.table = params.table;
  args.y = params.y;
  args.counters = static_cast<int*>(params.workspace);
  args.partials = plan->splits > 1 && plan->cluster == 1
                      ? reinterpret_cast<float*>(static_cast<char*>(params.workspace) + plan->counter_bytes)
                      : nullptr;
  args.m = static_cast<int>(params.m);
  args.n = static_cast<int>(params.shape.n);
  args.k = static_cast<int>(params.shape.k);
  args.group_size = params.shape.group_size;
  args.splits = plan->stream_k ? 0 : plan->splits;
  args.ktiles_per_split = plan->ktiles_per_split;
  args.num_m_tiles = plan->num_m_tiles;
  args.swiglu = params.swiglu;
  args.early_weights = params.pdl && params.early_weights;
  TcNormArgs norm;
  norm.residual = params.residual_out;
  norm.sumsq_out = params.sumsq_out;
  norm.prenorm_out = params.prenorm_out;
  norm.prenorm_weight = params.prenorm_weight;
  norm.deferred_sumsq = params.deferred_sumsq;
  norm.norm_eps = params.norm_eps;
  args.own_reduce = plan->own_reduce;
  args.spread_reduce = plan->spread;
  const cudaError_t err = params.dtype == ActivationType::kBFloat16
                              ? LaunchTcForType<__nv_bfloat16>(args, norm, params.shape.bits, *plan, params.pdl, stream)
                              : LaunchTcForType<__half>(args, norm, params.shape.bits, *plan, params.pdl, stream);
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("LUT-GEMM (tensor-core) launch failed: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace flute::lut

namespace flute::trace {
#ifdef FLUTE_KERNEL_TRACE
// The kernels are in three files, each with its own copy of the trace buffer
// (kernels/kernel_trace.cuh): Enable (kernel_trace.cu) calls this setter, which sets the three.
cudaError_t SetBufferLutTensorCore(void* buffer) {
  for (auto* set : {SetBufferLutTensorCore2Bit, SetBufferLutTensorCore3Bit, SetBufferLutTensorCore4Bit}) {
    const cudaError_t err = set(buffer);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}
#endif
}  // namespace flute::trace
