// The dense strip GEMV: Y[m, n] = X[m, k] · W[n, k]ᵀ for 1 <= m <= 32, 16-bit X and W, fp32
// accumulation. See dense_gemv.h for the contract. The launcher (LaunchDenseGemv, DenseGemvRunsWgmma)
// runs plain calls of m <= 8 here; calls of 9-32 rows and calls with an epilogue go to the wgmma
// kernel (dense_gemv_wgmma.cu), and this file's cluster and flat kernels run under
// DenseGemvParams::variant 1 and 2 (tests, A/B runs).
//
// At these m the product is a stream of W (2·n·k bytes; at most 32 flop per byte), so the
// design is about keeping enough W bytes in flight on every SM, touching each byte of W once,
// and keeping the re-reads of X (every strip of W needs all of X) well below W's bytes.
//
// ---- m <= 8: DenseGemvKernel (one CTA per strip) ----
//
// - Work: strips of 32 rows of W (two 16-row tiles), all of k. Persistent blocks of 8 warps
//   (grid = min(strips, resident blocks)) take strips blockIdx.x, blockIdx.x + grid, ..., or,
//   with DenseGemvParams::strip_counter, those two and then the next strip not yet taken (an
//   atomic counter, fetched one strip ahead). The second block on an SM gets a smaller share
//   of the SM's memory bandwidth: in the 8B decode step's LM head (4008 strips, 15 or 16 per
//   block) the first blocks on the SMs ended after 315-335 us, the second ones after 355-370.
// - Within a strip the 8 warps split k: a *batch* is 128 consecutive k (4 steps of 32), and warp
//   w takes batches w, w + 8, w + 16, ... (so a block's 8 warps read 2 KB runs of each row).
//   The split depends on k alone: batch class c = the batches that are c mod 8.
// - A lane (g = lane / 4, q = lane % 4) of a warp loads, per step, the 16 bytes k0 + 8q ..
//   k0 + 8q + 7 of rows g, g + 8, g + 16, g + 24 of the strip, and the same 16 bytes of X row g
//   (rows g >= m: zeros). That is exactly the A (W, rows = output features) and B (Xᵀ, columns
//   = rows of X) fragments of two mma.m16n8k16 per 16-row tile, with the k positions permuted
//   identically in A and B, so no shuffles or conversions are needed and m costs nothing: the
//   tensor core does the m x 32 dot products. Loads per lane per batch: 16 x 16 bytes of W
//   (ld.global.nc, L1::no_allocate and 256-byte L2 prefetch: W is read once) and 4 x 16 bytes
//   of X (cached in L1: every strip re-reads it). In flight: 8 KB of W per warp,
//   64 KB per block, 128 KB per SM at 2 blocks per SM. 120 registers, no spills.
// - Each step's two MMAs start from zero and their sum is added to the fp32 accumulator with
//   one FADD (a long chain inside the tensor core's accumulator would round less precisely).
// - At the end of a strip each warp leaves its 32 rows x m partials in shared memory and the
//   block sums them in warp order (double-buffered by strip parity: one barrier per strip). The
//   next strip's first batch is already in flight by then.
// - Summation order of an output element: steps in k order within a warp's batches, batches in
//   order, warps 0..7 in order; a function of k only (bitwise the same for every m, n, grid and
//   run; rows >= m of the MMA carry zeros and never mix with the others).
// - PDL (params.pdl): every block lets the next kernel be scheduled at once, loads its first
//   batch of W, and only then waits for the previous kernel (griddepcontrol.wait) before it
//   reads X.
//
// ---- 9 <= m <= 16, the flat variant: DenseGemvKernel<G = 2, S = 2> (DenseGemvParams::variant 2) ----
//
// The kernel above (which is DenseGemvKernel<G = 1, S = 4>) with two 8-row groups of X: per step
// two B fragments (X rows g and g + 8) and two MMA pairs per A fragment, accumulators
// [2 tiles][2 groups][4]. The X fragments of a whole batch would be 32 registers, so a lane
// loads a batch in two *units* of S = 2 steps (8 x 16 bytes of W and 2 x 2 x 16 bytes of X),
// each refilled as soon as it is consumed: 4 KB of W per warp in flight, 64 KB per SM. 126
// registers, no spills; 36 KB of shared memory for the partials (2 blocks per SM). The
// summation order is the m <= 8 kernel's (units only change when the loads are issued), so
// its rows are bitwise those of every other call. No clusters, no X staging: each 32-row
// strip re-reads all of X from L1 / L2 (m/32 bytes of X per byte of W: 0.5 at m = 16).
// Not the launcher's choice. Alone (a chain of the same call) it beats the cluster kernel where
// its strips fit one round of resident blocks (H100, m = 16, % of the copy bandwidth: 4096x4096
// 82 vs 75, 14336x4096 92 vs 83; bench/results/dense-gemv-flat-2026-11-26-h100.md), but in the
// engine's decode step (after attention, norms, SwiGLU, with PDL) the 8B bf16 step at batch 16
// took 7.40 ms with it everywhere and 7.65 with it where it fits one round, against 6.97 with the
// cluster kernel everywhere (same session, twice each; cause not established).
//
// ---- 9 <= m <= 32: DenseGemvClusterKernel<G, R> (a cluster of R/16 CTAs per strip) ----
//
// G = 2 or 4 groups of 8 rows of X (m rounded up to 16 or 32): one B fragment and two MMAs more
// per A fragment and group, nothing else per byte of W. What limits the m <= 8 layout here:
// - Registers. A lane's X fragments of a batch are 16·G registers (64 at G = 4, as many as its W
//   fragments) and its accumulators 8·G per 32 rows; with the 64 W registers that keep 8 KB per
//   warp in flight, G = 4 does not fit the 128 registers that let 2 CTAs share an SM (tried:
//   ~50-90 bytes of spills even with X in shared memory and 32-row warps).
// - X traffic. A CTA that owns R rows of W re-reads all of X per strip: m/R bytes of X per byte
//   of W. At R = 32 and m = 32 that is as many bytes as W (256 KB of X per 256 KB strip at
//   k = 4096): 6 TB/s out of L2 for 3 TB/s of HBM, at the L2's limit; and L1 cannot hold a
//   256 KB X (a cyclic sweep through LRU hits nothing). A larger R is what reduces it, but whole
//   strips of 64 rows leave n = 4096 with 64 CTAs for 132 SMs: k has to be split between CTAs,
//   and their partials summed in a fixed order without a workspace. Hence clusters.
//
// The layout:
// - A warp owns 16 rows (one MMA tile: rows g and g + 8 of the lane) of one batch class, and
//   loads a *round* of two batches of its class (c + 16j and c + 16j + 8) at once: 2 batches x
//   2 rows x 4 steps x 16 bytes = 64 registers, 8 KB per warp in flight as at m <= 8, with
//   accumulators 4·G (16 at G = 4). Steps, batches and rounds stay in k order.
// - A strip is R = 32 (m <= 16 only), 64 or 128 rows and belongs to a cluster of R/16 CTAs (2,
//   4 or 8); a group of R/16 warps covers the strip's R rows for one class, so a CTA holds 128/R
//   groups (4, 2 or 1) and the cluster's CTAs the 8 classes: CTA r has classes r·128/R + group. The grid has n/16 CTAs
//   (256 for n = 4096: every SM busy, 2 CTAs on most, against 128 CTAs of the m <= 8 kernel);
//   each streams R rows x k·(128/R)/8 of W: 64 rows x 1024 k x 2 B = 128 KB at k = 4096.
// - The warps of a group read the same X at the same time: the group stages the round's X in
//   shared memory with cp.async (2 batches x 8G rows x 256 B = 4G KB; chunks past m or k are
//   zero-filled), and each lane reads its B fragment with ld.shared.v4 just before the MMAs:
//   chunk 4s + q of tile row ρ = 8G·b + 8i + g, the chunk index XORed with 4·(ρ & 1) so that
//   the 8 lanes of each quarter-warp touch 8 distinct 16-byte bank groups. One tile per group,
//   refilled after the group's named barrier (bar.sync 1 + group) that ends its use; the W
//   registers of the next round are issued before that barrier and the X tile after it, so
//   both are in flight together as in the m <= 8 kernel. X costs a lane 4 registers.
// - X re-read per byte of W: m/R. At m = 32: 0.5 (R = 64) or 0.25 (R = 128) instead of 1; at
//   m = 16: 0.25 (R = 64). Per CTA and strip at k = 4096, m = 32: W 128 KB, X 32 x 1024 x 2 B =
//   64 KB (R = 64) or 32 x 512 x 2 B = 32 KB (R = 128). A 4096 x 4096 call at m = 32 reads
//   32 MB of W and 16 MB (R = 64) or 8 MB (R = 128) of X from L2, against 32 MB with 32-row
//   strips. Shared memory serves 2 bytes of X per byte of W at G = 4 (16 rows per fragment
//   read), ~25 B/clk per SM at full HBM rate: a fifth of its bandwidth.
// - Default (variant 1): R = 64 (clusters of 4), or R = 32 (clusters of 2) at m <= 16 where 64-row strips
//   would give the co-resident clusters about one each (LaunchDenseGemv says why);
//   DenseGemvParams::cluster forces 2, 4 or 8 (R = 128), for A/B runs and tests. (Clusters of 8 halve X's traffic again at m > 16, but a 4096-wide
//   W has 32 strips of 128 rows: all 32 clusters of 8 (256 of the 264 CTA slots) must be
//   co-resident, which depends on how the SMs split into GPCs; 64 clusters of 4 fit with room.)
// - End of a strip: each warp writes its 16 rows x m partials (one class) to its CTA's shared
//   memory (double-buffered by strip parity), one cluster barrier (barrier.cluster, release /
//   acquire), then CTA r sums rows 16r .. 16r + 15 of the strip: for each output the 8 class
//   partials in class order from 0.0f, read with ld.shared::cluster (mapa) from the CTAs that
//   hold them, all loads issued before the sums (16 rows x m x 8 x 4 B = 16 KB per CTA at
//   m = 32). A last cluster barrier keeps every CTA resident until the others have read it.
// - The same summation order as the m <= 8 kernel: within a class, steps in k order, each two
//   MMAs from zero and one FADD, batches in order; then classes 0..7 in order from 0.0f. The
//   MMA's output column (X row) depends only on its own B column, so row r of any call with
//   1 <= m <= 32, either kernel and either R, has the same bits (tested).
// - Shared memory per CTA: X tiles 128/R x 4G KB + partials 2 x 128/R x 8G x (R + 4) x 4 B:
//   G = 4: 66 KB (R = 64), 49 KB (R = 128); G = 2: 50 KB (R = 32), 33 KB, 25 KB. 2 CTAs per SM (registers:
//   __launch_bounds__(256, 2)): 128 KB of W in flight per SM, as in the m <= 8 kernel.
//   Registers: 128 (G = 4), 126 / 124 (G = 2, R = 64 / 128), no spills.
//   Grid = R/16 x min(strips, co-resident clusters from cudaOccupancyMaxActiveClusters);
//   clusters take strips clusterid, clusterid + clusters, and with DenseGemvParams::strip_counter
//   then the next strip not yet taken (fetched by CTA 0 one strip ahead and read by the others
//   from its shared memory after the strip's cluster barrier). Static shares had left the 8B
//   step's LM head at m = 16 with a cluster placed only after the others' strips were done
//   (one of 62 clusters started 272 us late: the call took 476 us instead of ~360; H100,
//   2026-11-26 session 15 traces).
// - PDL as above: the first W round is loaded before griddepcontrol.wait, X only after it.
// - Epilogues (G = 2, 16-bit y; DenseGemvParams): the sums of CTA r's 16 strip rows are where
//   a decode step's next element-wise kernel would read them, so they end there. SwiGLU: with
//   the gate and up rows interleaved by 8, lane l (< 8) of each half-warp holds gate row
//   16r + l and lane l + 8 its up row: one shuffle, and the lower 8 lanes store silu(gate) * up.
//   Residual: each thread adds its output to the fp32 residual (read before the strip's
//   cluster barrier, so the round trip overlaps it), stores the new residual and
//   round(weight * residual), and the half-warp's xor tree (offsets 1, 2, 4, 8) sums the 16
//   squares into sumsq_out[m, n / 16]. Deferred norm: after the grid dependency wait, each
//   half-warp sums its X row's k / 16 sums of squares (with the first X tile in flight) into
//   s_inv, and every output is multiplied by its row's factor before the rounding. (At G = 4
//   the residual operands beside the next strip's W registers spilled; 17-32 rows run the wgmma
//   kernel, dense_gemv_wgmma.cu.) The per-output epilogue code is in dense_gemv_common.cuh.
#include "kernels/dense_gemv.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/act_convert.cuh"
#include "kernels/cluster.cuh"
#include "kernels/dense_gemv_common.cuh"
#include "kernels/dense_gemv_wgmma.h"
#include "kernels/pdl.cuh"

namespace flute::gpu {
namespace {

constexpr int kWarps = 8;                    // k slices of a strip, one per warp
constexpr int kThreads = kWarps * 32;
constexpr int kStripRows = 32;               // rows of W per strip: two 16-row MMA tiles
constexpr int kLaneRows = 4;                 // rows g, g + 8, g + 16, g + 24 of the strip
constexpr int kStepK = 32;                   // k per step: 4 lanes q x 8 values
constexpr int kBatchSteps = 4;               // steps per batch (all loaded before any is used)
constexpr int kBatchK = kBatchSteps * kStepK;  // 128 k = 256 bytes of a row per batch
constexpr int kMaxM = 8;                     // DenseGemvKernel's rows of X: the MMA's n dimension
// Partials of a strip: [parity][warp][m][kRedPitch floats]. A pitch of 36 puts the 32 lanes'
// writes of one accumulator register (m = 2q + c, row g + const) in 32 distinct banks.
constexpr int kRedPitch = 36;
static_assert(4 * kMaxM == kDenseGemvMaxM, "m <= 8: one MMA of 8 rows of X; m <= 32: up to 4");

struct GemvArgs {
  const void* x;  // [m, k]
  const void* w;  // [n, k]
  void* y;        // [m, n]
  int m, n, k;
  int strips;     // ceil(n / rows per strip): 32, or 32·C for the cluster kernel
  int batches;    // ceil(k / 128)
  unsigned int* strip_counter;  // DenseGemvKernel: dynamic strips (DenseGemvParams), or null
  unsigned int fetches;         // counter increments per call (the last one resets it)
  // The cluster kernel's epilogues (DenseGemvParams; null / false: none).
  bool swiglu;
  float* residual;
  float* sumsq_out;
  void* prenorm_out;
  const float* prenorm_weight;
  const float* deferred_sumsq;
  float norm_eps;
};

// 16 bytes of W, streamed: not kept in L1, and a 256-byte L2 fetch (a warp reads 64 contiguous
// bytes of a row per load and the rest of the 256 in the same batch). (ptxas takes
// .L2::evict_first on ld only for 32-byte vectors, which sm_90 lacks; the L2 hint would need a
// createpolicy operand, whose cp.async form raised "illegal instruction" here before, see
// lut_gemm_device.cuh. X is re-read all the time, so it stays in L2 anyway.)
// Zeros where !pred (the address is then never dereferenced). volatile: issued in program
// order, so the first batch's loads stay ahead of the grid dependency wait.
// 16 bytes at ptr with the load instruction `op`, or zeros where !pred (no access then).
#define FLUTE_PREDICATED_LOAD16(op, ptr, pred, v)                                             \
  asm volatile(                                                                                \
      "{\n"                                                                                     \
      "  .reg .pred p;\n"                                                                       \
      "  setp.ne.b32 p, %5, 0;\n"                                                               \
      "  mov.b32 %0, 0;\n"                                                                      \
      "  mov.b32 %1, 0;\n"                                                                      \
      "  mov.b32 %2, 0;\n"                                                                      \
      "  mov.b32 %3, 0;\n"                                                                      \
      "  @p " op " {%0, %1, %2, %3}, [%4];\n"                                                   \
      "}\n"                                                                                     \
      : "=r"((v).x), "=r"((v).y), "=r"((v).z), "=r"((v).w)                                     \
      : "l"(ptr), "r"(static_cast<int>(pred)))

__device__ __forceinline__ uint4 LoadWeights(const void* ptr, bool pred) {
  uint4 v;
  FLUTE_PREDICATED_LOAD16("ld.global.nc.L1::no_allocate.L2::256B.v4.u32", ptr, pred, v);
  return v;
}

// 16 bytes of X, kept in L1 (every strip of the block re-reads them). A coherent load, not .nc,
// and volatile: X is the previous kernel's output, so nothing may treat it as invariant and
// hoist it above the grid dependency wait.
__device__ __forceinline__ uint4 LoadActivations(const void* ptr, bool pred) {
  uint4 v;
  FLUTE_PREDICATED_LOAD16("ld.global.v4.u32", ptr, pred, v);
  return v;
}

// d = A(16 x 16, rows = W rows) · B(16 x 8, columns = X rows) + c, fp32 accumulate.
template <typename T>
__device__ __forceinline__ void Mma(float* d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1, const float* c);
template <>
__device__ __forceinline__ void Mma<__half>(float* d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            uint32_t b0, uint32_t b1, const float* c) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
template <>
__device__ __forceinline__ void Mma<__nv_bfloat16>(float* d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                   uint32_t b0, uint32_t b1, const float* c) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

// The registers a lane loads at once (one *unit*: S steps of a batch): w[i][s] = 16 bytes of
// strip row g + 8i at the unit's step s, x[j][s] = the same 16 bytes of X row g + 8j.
template <int G, int S>
struct Fragments {
  uint4 w[kLaneRows][S];
  uint4 x[G][S];
};

// T: fp16 / bf16 of X and W; TY: T or float (Y); G: 8-row groups of X (1: m <= 8; 2: the flat
// variant for 9 <= m <= 16); S: steps per unit (4: a whole batch; 2: half a batch, the flat
// variant, whose two B fragments per step would not fit the registers for 4 steps).
// __launch_bounds__(256, 2): at most 128 registers, so that 2 blocks (16 warps) fit an SM.
template <typename T, typename TY, int G, int S>
__global__ void __launch_bounds__(kThreads, 2) DenseGemvKernel(const GemvArgs a) {
  const trace::Scope trace_scope(trace::kDenseGemv, a.n, a.k);
  static_assert((G == 1 && S == kBatchSteps) || (G == 2 && S == kBatchSteps / 2), "m <= 8 or the flat m <= 16");
  constexpr int kUnits = kBatchSteps / S;  // units per batch, loaded one after the other
  constexpr int kRows = kMaxM * G;         // rows of X
  __shared__ float s_red[2][kWarps][kRows][kRedPitch];  // 18 KB (G = 1), 36 KB (G = 2)
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  __shared__ int s_next[2];  // dynamic strips: the strip after iteration i's is s_next[i & 1]
  const int grid = static_cast<int>(gridDim.x);
  const int block = static_cast<int>(blockIdx.x);
  // The strip after iteration i's: strip + grid (static; and always at i = 0), or, from i = 1
  // on with a strip counter, the next one not yet taken: fetched by thread 0 during iteration
  // i - 1 and stored just before its barrier (thread 0's warp never waits on the atomic).
  // Only blocks with two static strips fetch, each until its first miss: a.fetches
  // increments in all, and the last one puts the counter back to 0 for the next call, which
  // reads it only after its grid dependency wait (after this grid has completed).
  const bool fetching = a.strip_counter != nullptr && block + grid < a.strips;
  // Batches of a strip this warp sums (the same for every strip).
  const int my_batches = warp < a.batches ? (a.batches - 1 - warp) / kWarps + 1 : 0;
  const int64_t row_bytes = static_cast<int64_t>(a.k) * 2;
  const char* const w_lane = static_cast<const char*>(a.w) + static_cast<int64_t>(g) * row_bytes + 16 * q;
  const char* const x_lane = static_cast<const char*>(a.x) + static_cast<int64_t>(g) * row_bytes + 16 * q;

  Fragments<G, S> f;
  // Unit u of a batch: steps S·u .. S·u + S - 1.
  auto load_w = [&](int strip, int batch, int u) {
    const int row0 = strip * kStripRows + g;
    const int k0 = batch * kBatchK + kStepK * S * u + 8 * q;  // this lane's first k of the unit
    const char* p = w_lane + static_cast<int64_t>(strip) * kStripRows * row_bytes + int64_t{2} * batch * kBatchK +
                    2 * kStepK * S * u;
#pragma unroll
    for (int i = 0; i < kLaneRows; ++i) {
      const bool row_ok = row0 + 8 * i < a.n;
#pragma unroll
      for (int s = 0; s < S; ++s) {
        f.w[i][s] = LoadWeights(p + 8 * i * row_bytes + 2 * kStepK * s, row_ok && k0 + kStepK * s < a.k);
      }
    }
  };
  auto load_x = [&](int batch, int u) {
    const int k0 = batch * kBatchK + kStepK * S * u + 8 * q;
    const char* p = x_lane + int64_t{2} * batch * kBatchK + 2 * kStepK * S * u;
#pragma unroll
    for (int j = 0; j < G; ++j) {
      const bool x_row = g + 8 * j < a.m;
#pragma unroll
      for (int s = 0; s < S; ++s) {
        f.x[j][s] = LoadActivations(p + 8 * j * row_bytes + 2 * kStepK * s, x_row && k0 + kStepK * s < a.k);
      }
    }
  };
  // acc[t][j][c]: tile t (rows 16t ..), X group j, register c: strip row 16t + g + 8 (c >> 1),
  // X row 8j + 2q + (c & 1).
  auto compute = [&](int batch, int u, float (&acc)[2][G][4]) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      if (batch * kBatchK + kStepK * (S * u + s) >= a.k) break;  // past the end of k (warp-uniform)
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const uint4& lo = f.w[2 * t][s];      // row 16t + g
        const uint4& hi = f.w[2 * t + 1][s];  // row 16t + g + 8
#pragma unroll
        for (int j = 0; j < G; ++j) {
          const float zero[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          float c[4], d[4];
          // Logical k 2q, 2q + 1 | 2q + 8, 2q + 9 of the first MMA are k0 + 0, 1 | 2, 3 of the
          // lane's 8 values, of the second k0 + 4, 5 | 6, 7: the same in A and B.
          Mma<T>(c, lo.x, hi.x, lo.y, hi.y, f.x[j][s].x, f.x[j][s].y, zero);
          Mma<T>(d, lo.z, hi.z, lo.w, hi.w, f.x[j][s].z, f.x[j][s].w, c);
#pragma unroll
          for (int r = 0; r < 4; ++r) acc[t][j][r] += d[r];
        }
      }
    }
  };

  // The grid is resident at once (grid <= resident blocks), so the next kernel may be
  // scheduled now; it waits for this one before it reads Y.
  LaunchDependents();
  if (my_batches > 0) load_w(block, warp, 0);  // weights: never written by the previous kernel
  GridDependencyWait();                        // X is: read it only from here on
  if (my_batches > 0) load_x(warp, 0);

  int parity = 0;
  for (int i = 0, strip = block; strip < a.strips; ++i) {
    const int next = i > 0 && fetching ? s_next[i & 1] : strip + grid;
    // The strip after next (its slot's last reader read it before the previous barrier).
    const bool fetch_next = fetching && tid == 0 && next < a.strips;
    unsigned int taken = 0;
    if (fetch_next) taken = atomicAdd(a.strip_counter, 1u);
    float acc[2][G][4];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
#pragma unroll
      for (int j = 0; j < G; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[t][j][c] = 0.0f;
      }
    }
    for (int j = 0; j < my_batches; ++j) {
      const int batch = warp + j * kWarps;
#pragma unroll
      for (int u = 0; u < kUnits; ++u) {
        compute(batch, u, acc);
        // Refill the registers just consumed: this batch's next unit, this strip's next batch,
        // or the next strip's first (in flight during the reduction below).
        if (u + 1 < kUnits) {
          load_w(strip, batch, u + 1);
          load_x(batch, u + 1);
        } else if (j + 1 < my_batches) {
          load_w(strip, batch + kWarps, 0);
          load_x(batch + kWarps, 0);
        } else if (next < a.strips) {
          load_w(next, warp, 0);
          load_x(warp, 0);
        }
      }
    }
    // This warp's partials of the strip, then the block's sum in warp order.
    float (*red)[kRows][kRedPitch] = s_red[parity];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
#pragma unroll
      for (int j = 0; j < G; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int mm = 8 * j + 2 * q + (c & 1);
          if (mm < a.m) red[warp][mm][16 * t + g + 8 * (c >> 1)] = acc[t][j][c];
        }
      }
    }
    if (fetch_next) {
      if (taken == a.fetches - 1u) *a.strip_counter = 0u;
      const int fetched = 2 * grid + static_cast<int>(taken);
      s_next[(i + 1) & 1] = fetched < a.strips ? fetched : a.strips;
    }
    __syncthreads();  // (the buffer of the other parity is free: its readers passed this barrier)
#pragma unroll
    for (int v = 0; v < G; ++v) {  // outputs tid + 256v: 32 strip rows x m
      const int o = tid + kThreads * v;
      if (o < kStripRows * a.m) {
        const int mm = o >> 5, row = o & 31;
        const int out = strip * kStripRows + row;
        if (out < a.n) {
          float sum = 0.0f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w) sum += red[w][mm][row];
          static_cast<TY*>(a.y)[static_cast<int64_t>(mm) * a.n + out] = OutCvt<TY>::FromFloat(sum);
        }
      }
    }
    parity ^= 1;
    strip = next;
  }
}

// ---- 9 <= m <= 32: the cluster kernel --------------------------------------------------------

// The layout of DenseGemvClusterKernel<G, R>: G groups of 8 rows of X, strips of R rows of W.
template <int G, int R>
struct ClusterPlan {
  static_assert(G == 2 || G == 4, "m in 9..16 or 17..32");
  static_assert(R == 32 || R == 64 || R == 128, "strips of 32, 64 or 128 rows");
  static_assert(R != 32 || G == 2, "strips of 32 rows: m <= 16 only (instances)");
  static constexpr int kTileRows = 16;                  // rows of W per warp: one MMA tile
  static constexpr int kGroupWarps = R / kTileRows;     // warps of a group: one class, all R rows
  static constexpr int kGroups = kWarps / kGroupWarps;  // groups (classes) per CTA: 2 or 1
  static constexpr int kCluster = kWarps / kGroups;     // CTAs per cluster: 8 classes (= R / 16)
  static constexpr int kRoundBatches = 2;               // batches c + 16j and c + 16j + 8 per round
  static constexpr int kXRows = 8 * G;                  // rows of X staged per batch
  static constexpr int kXRowBytes = kBatchK * 2;        // 256 bytes of a row of X per batch
  static constexpr int kXTileBytes = kRoundBatches * kXRows * kXRowBytes;  // a group's round of X
  static constexpr int kCopyThreads = 32 * kGroupWarps;
  static constexpr int kCopyRowStep = kCopyThreads / 16;  // tile rows between a thread's copies
  static constexpr int kXChunks = kXTileBytes / 16 / kCopyThreads;  // cp.async per thread and round
  // Partials of one parity: [group][row of X][kRedPitch floats]. The pitch is 4 mod 32 banks, so
  // the lanes' writes of one accumulator register (X row 2q + const, W row g + const) hit
  // banks 8q + g: all distinct.
  static constexpr int kRedPitch = R + 4;
  static constexpr int kRedFloats = kGroups * kXRows * kRedPitch;
  static constexpr int kSmemBytes = kGroups * kXTileBytes + 2 * kRedFloats * 4;
  static constexpr int kOutRows = R / kCluster;  // rows of the strip a CTA sums: 16
  static constexpr int kOutPerThread = kOutRows * kXRows / kThreads;  // G / 2
  static_assert(kCluster == R / 16 && kOutRows == 16, "a cluster's CTAs hold the 8 classes");
  static_assert(kXChunks * kCopyThreads * 16 == kXTileBytes, "the group copies its tile exactly once");
  static_assert(kCopyRowStep % 2 == 0 && kXRows % kCopyRowStep == 0,
                "a thread's copies keep one row parity and one batch per u");
  static_assert(kOutPerThread * kThreads == kOutRows * kXRows, "16 rows x 8G outputs per CTA and strip");
};

// The barrier of warp group `group` of a CTA: kCount threads (whole warps), id 1 + group (0 is
// __syncthreads). (A run-time id makes ptxas report 16 barriers used; immediate ids through a
// branch on the group cost the G = 4 instances 12 bytes of spills.)
template <int kCount>
__device__ __forceinline__ void GroupBarrier(int group) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(1 + group), "n"(kCount) : "memory");
}

// T: fp16 / bf16 of X and W; TY: T or float (Y); G: 8-row groups of X (2 or 4); R: rows per strip
// (64 or 128). Launched with a cluster dimension of R / 16 and ClusterPlan::kSmemBytes of dynamic
// shared memory; see the file comment.
template <typename T, typename TY, int G, int R>
__global__ void __launch_bounds__(kThreads, 2) DenseGemvClusterKernel(const GemvArgs a) {
  const trace::Scope trace_scope(trace::kDenseGemv, a.n, a.k);
  using P = ClusterPlan<G, R>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int part = warp % P::kGroupWarps;   // rows 16·part .. 16·part + 15 of the strip
  const int group = warp / P::kGroupWarps;  // the warp group: one batch class, one X tile
  const int rank = ClusterRank();
  const int cls = rank * P::kGroups + group;  // batches cls, cls + 8, ... (as warp cls at m <= 8)
  const int cluster = ClusterIndex(), clusters = ClusterCount();  // clusters <= strips
  // Strips: cluster, cluster + clusters, then (with a strip counter, for clusters that have
  // both) the next one not yet taken, as DenseGemvKernel's blocks take them: CTA 0's thread 0
  // fetches the strip after next during a strip and stores it in its s_next before the
  // strip's cluster barrier; after it every CTA reads it there (ld.shared::cluster). So the
  // clusters that start late (placed only as the previous kernel's CTAs leave their SMs) take
  // fewer strips, instead of ending a whole share after the others.
  __shared__ int s_next[2];
  const bool fetching = a.strip_counter != nullptr && cluster + clusters < a.strips;
  const int my_batches = cls < a.batches ? (a.batches - 1 - cls) / kWarps + 1 : 0;
  const int my_rounds = (my_batches + 1) / P::kRoundBatches;
  const int64_t row_bytes = static_cast<int64_t>(a.k) * 2;
  const char* const w_lane =
      static_cast<const char*>(a.w) + static_cast<int64_t>(16 * part + g) * row_bytes + 16 * q;

  // The group's X tile of a round: [2 batches][8G rows][16 chunks of 16 bytes], tile row
  // ρ = 8G·batch + row, chunk c of tile row ρ at c ^ 4·(ρ & 1).
  unsigned char* const x_tile = smem + group * P::kXTileBytes;
  // This thread's copies: chunk xc of tile rows xr + kCopyRowStep·u (u < kXChunks), all of the
  // same parity as xr; u fixes the batch and the row offset.
  const int tg = part * 32 + lane;
  const int xc = tg & 15, xr = tg >> 4;
  const uint32_t x_dst = SharedAddress(x_tile) + xr * P::kXRowBytes + 16 * (xc ^ ((xr & 1) << 2));
  const char* const x_src = static_cast<const char*>(a.x) + static_cast<int64_t>(xr) * row_bytes + 16 * xc;
  // This lane's B fragment of batch b, step s and group i: chunk 4s + q of tile row
  // 8G·b + 8i + g, i.e. byte 256·(8G·b + 8i + g) + 64·(s ^ (g & 1)) + 16q: x_even (+ 128 at
  // s = 2) for even s, x_odd for odd s.
  const int x_even = g * P::kXRowBytes + 16 * q + 64 * (g & 1);
  const int x_odd = x_even ^ 64;

  // fw[b][h][s]: 16 bytes of strip row 16·part + g + 8h, step s of the round's batch b.
  uint4 fw[P::kRoundBatches][2][kBatchSteps];
  // The round's batches: cls + 16·round + 8b (b < 2; past the end of k the loads give zeros).
  auto load_w = [&](int strip, int round) {
    const int row0 = strip * R + 16 * part + g;
    const int batch0 = cls + 2 * kWarps * round;
    const char* p = w_lane + static_cast<int64_t>(strip) * R * row_bytes + int64_t{2} * batch0 * kBatchK;
#pragma unroll
    for (int b = 0; b < P::kRoundBatches; ++b) {
      const int k0 = (batch0 + kWarps * b) * kBatchK + 8 * q;  // this lane's first k of the batch
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const bool row_ok = row0 + 8 * h < a.n;
#pragma unroll
        for (int s = 0; s < kBatchSteps; ++s) {
          fw[b][h][s] = LoadWeights(p + 8 * h * row_bytes + 2 * (kWarps * kBatchK * b + kStepK * s),
                                    row_ok && k0 + kStepK * s < a.k);
        }
      }
    }
  };
  auto issue_x = [&](int round) {
    const int batch0 = cls + 2 * kWarps * round;
    const char* p = x_src + int64_t{2} * batch0 * kBatchK;
#pragma unroll
    for (int u = 0; u < P::kXChunks; ++u) {
      const int rho = P::kCopyRowStep * u;              // + xr: the tile row
      const int b = rho / P::kXRows, rows = rho % P::kXRows;  // batch of the round, X row - xr
      const bool ok = (batch0 + kWarps * b) * kBatchK + 8 * xc < a.k && xr + rows < a.m;
      CpAsync16(x_dst + rho * P::kXRowBytes, ok ? p + rows * row_bytes + 2 * kWarps * kBatchK * b : a.x, ok);
    }
    CpAsyncCommit();
  };
  // acc[i][c]: X group i, register c: strip row 16·part + g + 8 (c >> 1), X row 8i + 2q + (c & 1).
  auto compute = [&](int round, float (&acc)[G][4]) {
#pragma unroll
    for (int b = 0; b < P::kRoundBatches; ++b) {
      const int batch = cls + 2 * kWarps * round + kWarps * b;
#pragma unroll
      for (int s = 0; s < kBatchSteps; ++s) {
        if (batch * kBatchK + kStepK * s >= a.k) break;  // past the end of k (warp-uniform)
        const unsigned char* xs =
            x_tile + P::kXRows * P::kXRowBytes * b + ((s & 1) ? x_odd : x_even) + 128 * (s >> 1);
        const uint4& lo = fw[b][0][s];  // row 16·part + g
        const uint4& hi = fw[b][1][s];  // row 16·part + g + 8
#pragma unroll
        for (int i = 0; i < G; ++i) {  // one X group at a time: 4 registers of B fragment
          const uint4 fx = *reinterpret_cast<const uint4*>(xs + 8 * P::kXRowBytes * i);
          const float zero[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          float c[4], d[4];
          // The same k permutation as DenseGemvKernel: k0 + 0..3 | 4..7 of the lane's 8 values.
          Mma<T>(c, lo.x, hi.x, lo.y, hi.y, fx.x, fx.y, zero);
          Mma<T>(d, lo.z, hi.z, lo.w, hi.w, fx.z, fx.w, c);
#pragma unroll
          for (int r = 0; r < 4; ++r) acc[i][r] += d[r];
        }
      }
    }
  };

  LaunchDependents();
  if (my_rounds > 0) load_w(cluster, 0);  // weights: never written by the previous kernel
  GridDependencyWait();                   // X is: read it only from here on
  if (my_rounds > 0) issue_x(0);
  // The deferred norm's factors of the output rows (tid >> 4) + 16u, into shared memory (read
  // after the first strip's cluster barrier; no register held through the main loop): their
  // loads are in flight with the first X tile's.
  // 16-bit outputs and m <= 16 only: with 4 groups of X rows, the residual epilogue's operands
  // beside the next strip's W registers and the partials spilled 24 bytes (17-32 rows run
  // the wgmma kernel, dense_gemv_wgmma.cu).
  constexpr bool kEpilogues = !std::is_same<TY, float>::value && G == 2;
  __shared__ float s_inv[kDenseGemvMaxM];
  if (kEpilogues && a.deferred_sumsq != nullptr) {
#pragma unroll
    for (int u = 0; u < P::kOutPerThread; ++u) {
      const float inv = DeferredNormFactor(a, (tid >> 4) + 16 * u, tid & 15);
      if ((tid & 15) == 0) s_inv[(tid >> 4) + 16 * u] = inv;
    }
  }

  float* const red_base = reinterpret_cast<float*>(smem + P::kGroups * P::kXTileBytes);
  int parity = 0;
  for (int i = 0, strip = cluster; strip < a.strips; ++i) {
    const int next =
        i > 0 && fetching ? LoadSharedClusterS32(MapShared(SharedAddress(s_next + (i & 1)), 0)) : strip + clusters;
    const bool fetch_next = fetching && rank == 0 && tid == 0 && next < a.strips;
    unsigned int taken = 0;
    if (fetch_next) taken = atomicAdd(a.strip_counter, 1u);
    float acc[G][4];
#pragma unroll
    for (int j = 0; j < G; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[j][c] = 0.0f;
    }
    for (int j = 0; j < my_rounds; ++j) {
      CpAsyncWaitAll();
      GroupBarrier<P::kCopyThreads>(group);  // the group's X tile of this round is complete
      compute(j, acc);
      // Refill the W registers just consumed: this strip's next round, or the next strip's
      // first (in flight during the reduction below); the X tile once the group is done with it.
      const bool more = j + 1 < my_rounds, next_strip = next < a.strips;
      if (more) {
        load_w(strip, j + 1);
      } else if (next_strip) {
        load_w(next, 0);
      }
      GroupBarrier<P::kCopyThreads>(group);  // every warp of the group has read the tile
      if (more) {
        issue_x(j + 1);
      } else if (next_strip) {
        issue_x(0);
      }
    }
    // This warp's partials (its class, its 16 rows), then the cluster's sum in class order.
    float* red = red_base + parity * P::kRedFloats + group * P::kXRows * P::kRedPitch + 16 * part + g;
#pragma unroll
    for (int j = 0; j < G; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int mm = 8 * j + 2 * q + (c & 1);
        if (mm < a.m) red[mm * P::kRedPitch + 8 * (c >> 1)] = acc[j][c];
      }
    }
    if (fetch_next) {
      if (taken == a.fetches - 1u) *a.strip_counter = 0u;  // the call's last fetch: ready for the next call
      const int fetched = 2 * clusters + static_cast<int>(taken);
      s_next[(i + 1) & 1] = fetched < a.strips ? fetched : a.strips;
    }
    // CTA `rank` sums strip rows 16·rank + (tid & 15) for X rows (tid >> 4) + 16u; class c is
    // group c % kGroups of CTA c / kGroups. Every load is issued before the first sum.
    const int row = P::kOutRows * rank + (tid & 15);
    const int out = strip * R + row;
    // The residual epilogue's operands, in flight during the cluster barrier.
    float old[P::kOutPerThread], prenorm_weight = 0.0f;
    if (kEpilogues && a.residual != nullptr) {
#pragma unroll
      for (int u = 0; u < P::kOutPerThread; ++u) {
        const int mm = (tid >> 4) + 16 * u;
        old[u] = mm < a.m && out < a.n ? __ldcg(a.residual + static_cast<int64_t>(mm) * a.n + out) : 0.0f;
      }
      if (a.prenorm_out != nullptr && out < a.n) prenorm_weight = __ldg(a.prenorm_weight + out);
    }
    ClusterSync();  // (the other parity's buffers are free: their readers passed this barrier)
    const uint32_t red_addr = SharedAddress(red_base) + 4u * static_cast<uint32_t>(parity * P::kRedFloats + row);
    float v[P::kOutPerThread][kWarps];
#pragma unroll
    for (int u = 0; u < P::kOutPerThread; ++u) {
      const int mm = (tid >> 4) + 16 * u;
#pragma unroll
      for (int c = 0; c < kWarps; ++c) {
        const uint32_t addr = red_addr + 4u * static_cast<uint32_t>(((c % P::kGroups) * P::kXRows + mm) * P::kRedPitch);
        v[u][c] = mm < a.m ? LoadSharedCluster(MapShared(addr, c / P::kGroups)) : 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < P::kOutPerThread; ++u) {
      const int mm = (tid >> 4) + 16 * u;
      float sum = 0.0f;
#pragma unroll
      for (int c = 0; c < kWarps; ++c) sum += v[u][c];
      const bool valid = mm < a.m && out < a.n;  // (uniform over each half-warp where n % 16 == 0)
      if constexpr (kEpilogues) {
        if (a.deferred_sumsq != nullptr) sum *= s_inv[mm];
        if (StoreFusedOutput<T>(a, sum, mm, out, tid & 15, valid, old[u], prenorm_weight)) continue;
      }
      if (valid) static_cast<TY*>(a.y)[static_cast<int64_t>(mm) * a.n + out] = OutCvt<TY>::FromFloat(sum);
    }
    parity ^= 1;
    strip = next;
  }
  ClusterSync();  // no CTA exits while another may still read its partials (and s_next)
}

// ---- Host side ------------------------------------------------------------------------------

using KernelFn = void (*)(const GemvArgs);

// A kernel instance and how to launch it: C CTAs per cluster (1: DenseGemvKernel, no cluster
// attribute), rows of W per strip, dynamic shared memory.
struct KernelChoice {
  KernelFn fn;
  int cluster;
  int rows;
  int smem;
};

template <typename T, typename TY, int G, int R>
KernelChoice ClusterChoice() {
  return {DenseGemvClusterKernel<T, TY, G, R>, ClusterPlan<G, R>::kCluster, R, ClusterPlan<G, R>::kSmemBytes};
}

// cluster: 2, 4 or 8 (never 0 here: LaunchDenseGemv resolves the launcher's choice).
template <typename T, typename TY>
KernelChoice ChooseForType(int64_t m, int cluster, int variant) {
  if (m <= kMaxM) return {DenseGemvKernel<T, TY, 1, kBatchSteps>, 1, kStripRows, 0};
  if (variant == 2) return {DenseGemvKernel<T, TY, 2, kBatchSteps / 2>, 1, kStripRows, 0};  // m <= 16
  if (m <= 16) {
    return cluster == 2 ? ClusterChoice<T, TY, 2, 32>()
                        : cluster == 4 ? ClusterChoice<T, TY, 2, 64>() : ClusterChoice<T, TY, 2, 128>();
  }
  return cluster == 8 ? ClusterChoice<T, TY, 4, 128>() : ClusterChoice<T, TY, 4, 64>();
}

KernelChoice SelectKernel(ActivationType dtype, bool y_fp32, int64_t m, int cluster, int variant) {
  if (dtype == ActivationType::kBFloat16) {
    return y_fp32 ? ChooseForType<__nv_bfloat16, float>(m, cluster, variant)
                  : ChooseForType<__nv_bfloat16, __nv_bfloat16>(m, cluster, variant);
  }
  return y_fp32 ? ChooseForType<__half, float>(m, cluster, variant)
                : ChooseForType<__half, __half>(m, cluster, variant);
}

// The smallest percentage of the SM's shared memory that holds 2 blocks of kernel k (static +
// dynamic shared memory + the 1 KB reserved per block): its preferred carveout for L1.
cudaError_t SmallestCarveout(const KernelChoice& k, int device, int* percent) {
  cudaFuncAttributes attributes;
  int smem_per_sm = 0;
  cudaError_t err = cudaFuncGetAttributes(&attributes, k.fn);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
  if (err != cudaSuccess) return err;
  const int needed = 2 * (static_cast<int>(attributes.sharedSizeBytes) + k.smem + 1024);
  *percent = smem_per_sm > 0 ? std::min(100, (100 * needed + smem_per_sm - 1) / smem_per_sm) : 100;
  return cudaSuccess;
}

// Units of kernel `k` resident on the current device at once: blocks (SM count x blocks per SM) for
// DenseGemvKernel, clusters (cudaOccupancyMaxActiveClusters) for the cluster kernel, whose
// shared-memory attributes are set here, before its first launch on the device. Cached per
// (device, kernel): the occupancy query costs microseconds of host time and a decode step that
// is not replayed from a graph launches hundreds of these.
struct Residency {
  int units = 0;            // blocks or clusters resident at once
  int l1_carveout = 100;    // SmallestCarveout (DenseGemvParams::prefer_l1)
};
absl::StatusOr<Residency> ResidentUnits(const KernelChoice& k) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("dense GEMV: cudaGetDevice: ", cudaGetErrorString(err)));
  static std::mutex mu;
  static std::map<std::pair<int, KernelFn>, Residency>* cache = new std::map<std::pair<int, KernelFn>, Residency>();
  const std::pair<int, KernelFn> key{device, k.fn};
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto it = cache->find(key);
    if (it != cache->end()) return it->second;
  }
  int units = 0, percent = 100;
  err = SmallestCarveout(k, device, &percent);
  if (k.cluster == 1) {
    // The smallest shared-memory carveout that holds the 2 blocks per SM of __launch_bounds__
    // (256, 2): the rest of the SM's 256 KB stays L1, where X (re-read by every strip) lives.
    // With the carveout the LUT kernels before it leave (the largest), the 8B decode step's LM
    // head took 368 us after its release instead of 334 (H100, traces:
    // bench/results/ab-2026-11-26-h100/session11/carveout/). Its blocks then start on an SM
    // only once the previous kernel's blocks have left it (a carveout change), not earlier.
    if (err == cudaSuccess) err = cudaFuncSetAttribute(k.fn, cudaFuncAttributePreferredSharedMemoryCarveout, percent);
    int sms = 0, per_sm = 0;
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k.fn, kThreads, 0);
    units = sms * (per_sm > 0 ? per_sm : 1);
  } else {
    if (err == cudaSuccess) err = cudaFuncSetAttribute(k.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, k.smem);
    if (err == cudaSuccess) {
      err = MaxActiveClusters(k.fn, k.cluster, kThreads, k.smem, &units);
    }
    if (err == cudaSuccess && units < 1) {
      return absl::InternalError(absl::StrCat("dense GEMV: no cluster of ", k.cluster, " CTAs with ", k.smem,
                                              " bytes of shared memory fits this device"));
    }
  }
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("dense GEMV: occupancy query failed: ", cudaGetErrorString(err)));
  }
  const Residency residency{units, percent};
  std::lock_guard<std::mutex> lock(mu);
  cache->emplace(key, residency);
  return residency;
}

}  // namespace

absl::Status LaunchDenseGemv(const DenseGemvParams& p, CUstream_st* stream) {
  const absl::Status valid = CheckDenseGemvParams(p);
  if (!valid.ok()) return valid;
  if (DenseGemvRunsWgmma(p)) return LaunchDenseGemvWgmma(p, p.splits, stream);
  // (Here: m <= 8 without epilogues, or variants 1 and 2; the launcher runs the rest on the
  // wgmma kernel.) The launcher's cluster size: 4 (strips of 64 rows), or 2 (32 rows) at m <= 16 where strips of
  // 64 rows would give the co-resident clusters about one each (n <= 64 x 5/4 x clusters: the 8B
  // O and down projections, n = 4096, 64 strips for 62 clusters). Then the two clusters with a
  // second strip, or a cluster placed late (4 free slots in one GPC; after the decode attention
  // 1-6 of them started only once others had ended), doubled the call (8B bf16 batch 16: the O
  // projection's last exit 20 us after its release instead of 11); with clusters of 2, the late
  // ones have half as much to do. Elsewhere, 32-row strips cost more than they save (twice the
  // X traffic per byte of W, twice the strip ends: gate/up 88 us instead of 83, the LM head 364
  // instead of 344). H100 traces and A/B: bench/results/ab-2026-11-26-h100/session16/.
  int cluster = p.cluster;
  if (cluster == 0) {
    cluster = 4;
    if (p.m > kMaxM && p.m <= 16 && p.variant != 2) {
      const absl::StatusOr<Residency> four = ResidentUnits(SelectKernel(p.dtype, p.y_fp32, p.m, 4, p.variant));
      if (!four.ok()) return four.status();
      if (4 * ((p.n + 63) / 64) <= 5 * static_cast<int64_t>(four->units)) cluster = 2;
    }
  }
  const KernelChoice kernel = SelectKernel(p.dtype, p.y_fp32, p.m, cluster, p.variant);
  const absl::StatusOr<Residency> resident = ResidentUnits(kernel);
  if (!resident.ok()) return resident.status();
  GemvArgs a;
  CopyCallArgs(p, &a);
  a.strips = static_cast<int>((p.n + kernel.rows - 1) / kernel.rows);
  a.batches = static_cast<int>((p.k + kBatchK - 1) / kBatchK);
  a.strip_counter = p.strip_counter;
  // Dynamic strips: blocks with two static strips (block + grid < strips) fetch the rest, each
  // until its first miss: the strips past the first 2·grid plus one miss per fetching block.
  const int grid = std::min(a.strips, resident->units);
  a.fetches = static_cast<unsigned int>(std::max(0, a.strips - 2 * grid) +
                                        std::min(grid, std::max(0, a.strips - grid)));
  cudaLaunchConfig_t cfg = {};
  // DenseGemvKernel: blocks; the cluster kernel: C CTAs per strip-owning cluster.
  cfg.gridDim = dim3(static_cast<unsigned>(grid * kernel.cluster));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = static_cast<size_t>(kernel.smem);
  cfg.stream = stream;
  LaunchAttributes attributes;
  if (p.prefer_l1) attributes.Carveout(resident->l1_carveout);
  if (p.pdl) attributes.Pdl();
  if (kernel.cluster > 1) attributes.Cluster(kernel.cluster);
  attributes.ApplyTo(&cfg);
  return LaunchOutcome(cudaLaunchKernelEx(&cfg, kernel.fn, a), "dense GEMV", p, "cluster", kernel.cluster);
}

}  // namespace flute::gpu

namespace flute::trace {
FLUTE_TRACE_SETTER(SetBufferDenseGemv)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
