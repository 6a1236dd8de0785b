// The persistent-strip LUT-GEMM: the decode path (M <= 8). See lut_gemm_strip.h.
//
// Work: the S = N / 16 strips of W (16 output features x all of K each). A block of 8 warps
// takes one strip at a time, strips blockIdx.x, blockIdx.x + grid, ... (grid = resident
// blocks, at most S), so the pair table is built once per block, not once per tile. (With strip
// groups a block of 2-3 x 8 warps runs that many such pipelines, sharing the table: kGroups.)
// Within a strip the 8 warps split K: a stage is 8 * TPW consecutive k-tiles of the strip
// (TPW = tiles per warp, 1 or 2), one contiguous run of packed codes, and warp w dequantizes
// tiles w * TPW ... w * TPW + TPW - 1 of it. At the end of a strip each warp leaves its
// partial 16 x 8 sums in shared memory and the block adds them in warp order: no split-K
// workspace, no second pass through global memory, and a summation order that depends only
// on (N, K), never on M or the grid (deterministic and batch-invariant for M <= 8; except plain
// calls of 7-8 rows at 4 bits whose resident X leaves no room for two tiles per warp, as at
// K = 8192: OneTilePerWarpForResidentX).
//
// Per stage, cp.async brings the codes (8 * TPW * 256 * bits bytes), the scales of the 16
// rows for the stage's k range, and the M rows of X for that range (rows >= M are never
// loaded: the ldmatrix addresses of those lanes repeat row M - 1, whose products land in
// output columns that are not stored).
#include "kernels/lut_gemm_strip.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/lut_gemm_device.cuh"

namespace flute::lut {
namespace {

constexpr int kStripRows = 16;
// The pair table's shared memory: 3 bits uses the wide layout (LookupPairsWide3), 16 KB.
__host__ __device__ constexpr int StripTableBytes(int bits) {
  return bits == 2 ? TableBytes<2>() : bits == 3 ? kWide3TableBytes : TableBytes<4>();
}
// A warp's partial sums at the end of a strip: [m columns][kRedPitch floats]; a pitch of 20
// puts the four lanes q of a row group in different banks. Double-buffered by strip parity.
constexpr int kRedPitch = 20;
int RedBytes(int64_t m) { return static_cast<int>(2 * kWarps * m * kRedPitch * 4); }

struct StripArgs {
  const void* x;          // [m, k]
  const uint8_t* packed;  // strip-major packed tiles (lut_format.h)
  const __half* scales;   // [n, k / G]
  const float* table;     // [2^bits]
  void* y;                // [m, n]
  int m, n, k;
  int log2_group;
  int strips;             // n / 16
  bool swiglu;            // SwiGLU epilogue: rows 0-7 of a strip gate, 8-15 up; y [m, n / 2]
  int early_stages;       // prologue stages whose weights load before the PDL wait (>= 1)
  int stages_per_strip;   // k / (8 * TPW * 128)
  int num_stages;         // pipeline depth, 2..4
  int stage_bytes;
  int x_offset;           // bytes from a stage's start to its X rows [m][x_pitch halves]
  int x_pitch;
  int sc_offset;          // bytes from a stage's start to its scales [16 rows][sc_row_bytes]
  int sc_row_bytes;       // 2 * (k per stage) / G
  int sc_units_log2;      // log2 of the 16- (or 8-) byte copies per scale row and stage
  int red_offset;         // bytes from the start of shared memory to the reduction buffers
  int x1_loaders;         // kM1: lanes 0 .. x1_loaders - 1 load the X fragments (4; 32 for A/B runs)
  // Residual epilogue (LutGemmParams::residual_out): residual [m, n] += Y, sumsq [m, strips].
  float* res_out;
  float* sumsq_out;
  // Norm prologue (LutGemmParams::residual_in): X = RMSNorm(norm_res) built once per block in
  // shared memory at xres_offset, [m][k + 8] (the +8: ldmatrix rows in distinct banks).
  const float* norm_res;   // [m, k]
  const float* norm_sumsq; // [m, k / 16]
  const float* norm_w;     // [k]
  float norm_eps;
  int xres_offset;
};

struct StageLayout {
  int x_offset, x_pitch, sc_offset, sc_row_bytes, bytes;
};

int RoundUp16(int v) { return (v + 15) & ~15; }

// m_staged: the rows of X each stage carries (0 when X is resident in shared memory).
StageLayout MakeStageLayout(int bits, int tpw, int m_staged, int group_size) {
  StageLayout l;
  const int stage_k = 8 * tpw * kTileK;
  l.x_offset = 8 * tpw * 256 * bits;
  l.x_pitch = stage_k + 8;  // +16 bytes: the 8 rows one ldmatrix reads fall in distinct banks
  l.sc_offset = RoundUp16(l.x_offset + m_staged * l.x_pitch * 2);
  l.sc_row_bytes = 2 * stage_k / group_size;
  l.bytes = RoundUp16(l.sc_offset + kStripRows * l.sc_row_bytes);
  return l;
}

// Position in the block's sequence of stages: the strip, the stage within it, the ring slot.
struct Cursor {
  int strip, kstage, buf;
  __device__ __forceinline__ void Advance(int stages_per_strip, int num_stages, int strip_stride) {
    if (++kstage == stages_per_strip) {
      kstage = 0;
      strip += strip_stride;
    }
    if (++buf == num_stages) buf = 0;
  }
};

__device__ __forceinline__ void CpAsyncWaitPending(int pending) {
  if (pending <= 0) {
    CpAsyncWait<0>();
  } else if (pending == 1) {
    CpAsyncWait<1>();
  } else {
    CpAsyncWait<2>();
  }
}

// The staged X of a plain one-row call (kM1): in each 32-element block (the sub-tiles kk, kk + 1,
// kk even) the element pairs (words) are reordered so that a lane's X fragments of both
// sub-tiles, b0 / b1 of kk and of kk + 1 (pairs q and q + 4 of each: the mma.m16n8k16 B registers
// of column n = 0), are its 16 bytes at 16q (q = lane % 4; the other lanes' columns are not stored
// and read the same bytes). One LDS.128 then replaces two ldmatrix.x2, and the stage's X arrives by
// 4-byte copies in that order. H100, same call against the ldmatrix loads (bench/results/
// ab-2026-11-26-h100/session41/, call 11): M = 1 0.85-1.00 of the time on 6 of the 8 playbook
// shapes, medians 0.93 at 4 bits G128 and 0.97 at 3 and 2 bits (4096x6144 4-bit G128 7.16 -> 6.55
// us, 4096x28672 2-bit 24.1 -> 20.5), even on 8192x57344 and 28672x8192; ncu there: 4 % fewer
// instructions, as many shared-memory wavefronts.
// Word r of a block (sub-tile kk + (r >> 3), pair p = r & 7) goes to word 4 (p & 3) + 2 (r >> 3)
// + (p >> 2); X1SourceWord(d) is the row's word that lands in word d.
__device__ __forceinline__ int X1SourceWord(int d) {
  const int r = d & 15;
  return (d & ~15) | (((r >> 1) & 1) << 3) | ((r & 1) << 2) | (r >> 2);
}
__device__ __forceinline__ void CpAsync4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(SmemAddr(dst)), "l"(src));
}

// kM1: only lanes 0-3 (g = 0: the B column n = 0 of mma.m16n8k16) load a one-row call's X
// fragments; the other lanes' B registers are zero. They feed output columns 1-7, which are
// never stored (column j of D depends on column j of B only). A 16-byte shared load is served 8
// lanes per wavefront, so the tile's 4 X loads take 4 wavefronts instead of 16 (the X fragments
// had been 16 of the ~60 wavefronts of a 2-bit tile). H100, same call, against 25aa717's binary
// (bench/results/ab-2026-11-26-h100/session44/, call 5): M = 1 on the 8 playbook shapes, fp16
// and bf16, 2-bit G128 0.945-0.989 of the time (8192x57344 74.4 -> 71.6 us), 3-bit 0.98-1.00,
// 4-bit 0.98-1.00. (The same predicate in inline asm, the other lanes keeping their registers,
// freed registers but lost the loads' scheduling: 1-7 % slower than 25aa717, calls 2 and 4.)
// FLUTE_LUT_STRIP_M1X=all (StripArgs::x1_loaders = 32) has every lane load, for A/B runs.
// Plain calls only: the same loads in fused one-row instances (the norm prologue writing its row in
// the one-row order) were bitwise alike but no faster in the 8B decode step at batch 1 (W4 2.161
// against 2.165 ms, W2 2.116 against 2.123, medians of 6 alternating processes; call 8).

// The 8 sub-tiles (16 k each) of one 16 x 128 tile, in scale groups of kSubs sub-tiles (8:
// G >= 128, one group per tile; 4: G = 64; 2: G = 32): per group the raw table values go into
// the MMAs, summed in fp32 from zero, and the group's sums are multiplied by the rows' scales
// into acc (acc[0], acc[1]: row g; acc[2], acc[3]: row g + 8). sc_lo / sc_hi: the tile's first
// group scale of rows g and g + 8 in the stage (the tile's groups are consecutive).
// Why not scale A (an HMUL2 per A register, as the split-K kernel does at G < 128): that is 32
// HMUL2 and 8 scale conversions per tile and lane (more in bf16, whose scales are fp16) against
// 8 (G = 64) or 16 (G = 32) FFMAs here; G = 64 at M <= 4 was up to 16 % slower, a median 9 % (H100).
// table: this lane's table address (LaneTable), or at 3 bits the wide table's base with the
// lane's copy in lane_bits (LookupPairsWide3).
// kM1: X in the one-row order above (xs: this lane's 16 bytes of the tile's first block), loaded
// where x_loader holds (lanes 0-3; see above).
template <typename T, int kBits, int kSubs, bool kM1>
__device__ __forceinline__ void TileMmasFolded(const uint32_t* w, uint32_t table,
                                               uint32_t lane_bits, const T* xs, const __half* sc_lo,
                                               const __half* sc_hi, float* acc, bool x_loader) {
  static_assert(kSubs == 2 || kSubs == 4 || kSubs == 8, "G = 32, 64 or >= 128");
#pragma unroll
  for (int j = 0; j < 8 / kSubs; ++j) {
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    [[maybe_unused]] uint32_t b4[4];  // kM1: the X fragments of sub-tiles kk and kk + 1 (kk even)
#pragma unroll
    for (int kk = j * kSubs; kk < (j + 1) * kSubs; ++kk) {
      uint32_t a[4];
      if constexpr (kBits == 3) {
        LookupPairsWide3(kk, w, lane_bits, table, a);
      } else {
        LookupPairs<kBits>(kk, w, table, a);
      }
      if constexpr (kM1) {
        if ((kk & 1) == 0) {
          uint4 v = make_uint4(0u, 0u, 0u, 0u);
          if (x_loader) v = *reinterpret_cast<const uint4*>(xs + (kk >> 1) * 32);
          *reinterpret_cast<uint4*>(b4) = v;
        }
        Mma<T>(c, a, b4[2 * (kk & 1)], b4[2 * (kk & 1) + 1]);
      } else {
        uint32_t b[2];
        LdMatrixX2(b, xs + kk * 16);
        Mma<T>(c, a, b[0], b[1]);
      }
    }
    const float f_lo = __half2float(sc_lo[j]);
    const float f_hi = __half2float(sc_hi[j]);
    acc[0] = fmaf(c[0], f_lo, acc[0]);
    acc[1] = fmaf(c[1], f_lo, acc[1]);
    acc[2] = fmaf(c[2], f_hi, acc[2]);
    acc[3] = fmaf(c[3], f_hi, acc[3]);
  }
}

// The norm prologue: X[r][c] = w[c] * (res[r][c] * inv[r]) rounded to T (gpu::LaunchAddRmsNorm's
// expression) into xres [m][k + 8], 8 columns per item (two float4 of res and of w, one uint4
// of X), items tid, tid + 256, ... inv[r] = 1 / sqrt(sum / k + eps) from the k / 16 partial
// sums of squares of the residual epilogue, summed in a fixed order (thread t: partials t,
// t + 256, ...; then each warp's shuffle tree; then the warps in order), so that every block
// and every run gets the same inv. The first kNormPre items' weights load before the grid
// dependency wait (no kernel writes them) and their residuals with the partial sums, so a
// decode step (m = 1, k <= 4096: 2 items per thread) pays one L2 round trip after the wait.
constexpr int kNormPre = 2;
struct NormPreload {
  float4 w[kNormPre][2];
  float4 v[kNormPre][2];
};

__device__ __forceinline__ void NormItem(const StripArgs& a, int item, int* r, int* c) {
  const int row_items = a.k >> 3;
  *r = item / row_items;
  *c = (item - *r * row_items) * 8;
}

// Before the wait: the weights of the first kNormPre items.
__device__ __forceinline__ void PreloadNormWeights(const StripArgs& a, int tid, NormPreload* pre) {
#pragma unroll
  for (int j = 0; j < kNormPre; ++j) {
    int r, c;
    NormItem(a, tid + j * kThreads, &r, &c);
    if (r < a.m) {
      pre->w[j][0] = __ldg(reinterpret_cast<const float4*>(a.norm_w + c));
      pre->w[j][1] = __ldg(reinterpret_cast<const float4*>(a.norm_w + c) + 1);
    }
  }
}

template <typename T>
__device__ __forceinline__ void StoreNormed(const StripArgs& a, T* xres, int r, int c, float inv, const float4* v,
                                            const float4* w) {
  using T2 = typename Act<T>::T2;
  T2 out[4];
  out[0].x = Act<T>::FromFloat(w[0].x * (v[0].x * inv));
  out[0].y = Act<T>::FromFloat(w[0].y * (v[0].y * inv));
  out[1].x = Act<T>::FromFloat(w[0].z * (v[0].z * inv));
  out[1].y = Act<T>::FromFloat(w[0].w * (v[0].w * inv));
  out[2].x = Act<T>::FromFloat(w[1].x * (v[1].x * inv));
  out[2].y = Act<T>::FromFloat(w[1].y * (v[1].y * inv));
  out[3].x = Act<T>::FromFloat(w[1].z * (v[1].z * inv));
  out[3].y = Act<T>::FromFloat(w[1].w * (v[1].w * inv));
  *reinterpret_cast<uint4*>(xres + r * (a.k + 8) + c) = *reinterpret_cast<const uint4*>(out);
}

// After the wait. scratch: 9 * 8 floats of shared memory. With strip groups (kGroups > 1) every
// thread of the block calls it (its barriers are block-wide): group 0 alone preloads, sums the
// squares in the one-group order (so inv, and X, have the bits of one group) and stores the
// preloaded items; all groups share the other items.
template <typename T, int kGroups>
__device__ __forceinline__ void BuildNormedX(const StripArgs& a, T* xres, float* scratch, int tid, int group,
                                             NormPreload* pre) {
  const int warp = tid >> 5, lane = tid & 31;
  const int parts = a.k >> 4;
  if (kGroups == 1 || group == 0) {
#pragma unroll
  for (int j = 0; j < kNormPre; ++j) {  // residuals of the preloaded items, with the partials
    int r, c;
    NormItem(a, tid + j * kThreads, &r, &c);
    if (r < a.m) {
      const float4* res = reinterpret_cast<const float4*>(a.norm_res + static_cast<int64_t>(r) * a.k + c);
      pre->v[j][0] = __ldg(res);
      pre->v[j][1] = __ldg(res + 1);
    }
  }
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    if (r >= a.m) break;
    float sum = 0.0f;
    for (int i = tid; i < parts; i += kThreads) sum += __ldg(a.norm_sumsq + r * parts + i);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) scratch[warp * 8 + r] = sum;
  }
  }
  __syncthreads();
  if ((kGroups == 1 || group == 0) && tid < a.m) {
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += scratch[w * 8 + tid];
    scratch[kWarps * 8 + tid] = 1.0f / sqrtf(total / static_cast<float>(a.k) + a.norm_eps);
  }
  __syncthreads();
  if (kGroups == 1 || group == 0) {
#pragma unroll
  for (int j = 0; j < kNormPre; ++j) {
    int r, c;
    NormItem(a, tid + j * kThreads, &r, &c);
    if (r < a.m) StoreNormed<T>(a, xres, r, c, scratch[kWarps * 8 + r], pre->v[j], pre->w[j]);
  }
  }
  for (int item = tid + group * kThreads + kNormPre * kThreads; item < a.m * (a.k >> 3); item += kThreads * kGroups) {
    int r, c;
    NormItem(a, item, &r, &c);
    const float4* res = reinterpret_cast<const float4*>(a.norm_res + static_cast<int64_t>(r) * a.k + c);
    const float4* w = reinterpret_cast<const float4*>(a.norm_w + c);
    const float4 v[2] = {__ldg(res), __ldg(res + 1)}, wv[2] = {__ldg(w), __ldg(w + 1)};
    StoreNormed<T>(a, xres, r, c, scratch[kWarps * 8 + r], v, wv);
  }
}

// The resident X of a plain call (StripFusion::copy_x): cp.async of x [m][k] into xres
// [m][k + 8], 16 bytes per copy, issued after the grid dependency wait (x is the previous
// kernel's output) into the oldest cp.async group, so the main loop's first wait and barrier
// cover them as they cover the first stage's X in the staged layout. Every thread of the block
// (thread of threads: all strip groups) copies its share; the loop's first barrier is block-wide.
template <typename T>
__device__ __forceinline__ void IssueResidentXCopy(const StripArgs& a, T* xres, int thread, int threads) {
  const int row_vecs = a.k >> 3;
  const T* x = static_cast<const T*>(a.x);
  for (int i = thread; i < a.m * row_vecs; i += threads) {
    const int r = i / row_vecs, c = (i - r * row_vecs) * 8;
    CpAsync16(xres + r * (a.k + 8) + c, x + static_cast<int64_t>(r) * a.k + c);
  }
}

// The resident X of a plain one-row call on the one-row instances (kM1 with copy_x): the row's
// k / 2 words in the one-row order (X1SourceWord, within each 32-element block, so a stage's
// words are where the staged layout puts them), 4 bytes per copy; otherwise as IssueResidentXCopy.
__device__ __forceinline__ void IssueResidentXCopyOneRow(const StripArgs& a, unsigned char* xres, int thread,
                                                         int threads) {
  uint32_t* dst = reinterpret_cast<uint32_t*>(xres);
  const uint32_t* src = static_cast<const uint32_t*>(a.x);
  for (int d = thread; d < (a.k >> 1); d += threads) CpAsync4(dst + d, src + X1SourceWord(d));
}

// At most 80 registers at 2 and 4 bits (fp16 needs exactly that; bf16 had grown to 88), so
// that 3 blocks fit an SM where the plan wants them (4096x6144 at M = 1: 384 strips in one
// round of 396 instead of two of 264; bf16 at 88 registers: 8.4 us against fp16's 7.0).
// (A __launch_bounds__ minimum of 3 blocks capped them at 72 and slowed the largest shapes by
// 5-10 %.) 3 bits: two instances, 128 registers (2 blocks per SM) and kLowRegs 80 (3 blocks,
// no spills with CUDA 13), the plan choosing per call (StripPlan::low_regs): with 80 the
// larger shapes run 2-5 % slower (less overlap per warp), but 4096x6144 at M = 1 takes one
// round instead of two, 10.1 -> 7.3 us (H100; bench/results/ab-2026-11-26-h100/session31/).
// kFused: the instances with the residual epilogue and the norm prologue (chosen at run time by
// their pointers); the plain instances compile without them (1-3 % faster at M = 1, H100).
// kMode: the instance family. kModePlain: no fused code. kModeFused: the residual epilogue and
// the norm prologue, chosen at run time by their pointers (the plain instances compile without
// them: 1-3 % faster at M = 1). kModeCopyX: a plain call with X resident (StripPlan::copy_x);
// separate instances, so that the others' code is unchanged (in the fused instances the extra
// run-time branch cost 0.01-0.03 ms per 8B decode step at batches 1-4).
enum StripMode : int { kModePlain = 0, kModeFused = 1, kModeCopyX = 2 };

// Strip groups (StripPlan::groups): a block of groups x 8 warps runs `groups` independent strip
// pipelines (group j of block b is virtual block b * groups + j of a grid of gridDim.x * groups,
// each with its own stage ring, barrier and reduction buffers) that share one pair table and,
// with X resident, one copy of X. The 4-bit pair table is 32 KB and a resident X of 4 rows at
// k = 8192 is 64 KB per block: sharing them is what lets 2-3 strip pipelines run per SM where
// one block of each would not fit. The sums are those of one group per block (same warps, same
// tiles per warp, same order). Not the one-row (kM1) instances. With the norm prologue the
// groups share its X, built once per block (BuildNormedX).
constexpr int kMaxGroups = 3;
// The instance families that have instances of 2-3 groups (all but the one-row instances); the
// one-group instances compile exactly as before groups existed.
constexpr bool TakesGroups(int mode, bool m1) { return !m1; }
// Group j syncs its 8 warps on named barrier j + 1 (barrier 0 is __syncthreads).
__device__ __forceinline__ void GroupBarrier(int group) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(group + 1), "r"(kThreads) : "memory");
}

// kM1: the instances of plain one-row calls (a.m == 1), X in the one-row order (X1SourceWord),
// staged (kModePlain) or resident (kModeCopyX: IssueResidentXCopyOneRow).
// kGroups: strip groups per block (3 at 80 registers: 61440 of 65536 per SM; 2 at 128).
template <typename T, int kBits, int kTpw, int kMode, bool kLowRegs, bool kM1, int kGroups>
__global__ void __launch_bounds__(kThreads * kGroups)
    __maxnreg__(kBits == 3 && !kLowRegs ? 128 : 80) LutGemmStripKernel(const StripArgs a) {
  static_assert(!kM1 || kMode == kModePlain || kMode == kModeCopyX, "the one-row order: plain calls");
  static_assert(kGroups == 1 || (TakesGroups(kMode, kM1) && kGroups * (kBits == 3 && !kLowRegs ? 128 : 80) <= 256),
                "strip groups: calls of 2-8 rows, within the SM's registers");
  const trace::Scope trace_scope(trace::kLutStrip, a.n, a.k);
  constexpr bool kFused = kMode == kModeFused;
  constexpr bool kCopyX = kMode == kModeCopyX;
  constexpr int kStageTiles = 8 * kTpw;
  constexpr int kStageK = kStageTiles * kTileK;
  constexpr int kTileBytes = 256 * kBits;
  constexpr int kStageCodeBytes = kStageTiles * kTileBytes;
  constexpr int kCodeCopies = kStageCodeBytes / 16;  // 16-byte copies per stage
  constexpr int kXRowCopies = kStageK / 8;           // 16-byte copies per X row and stage
  extern __shared__ __align__(16) unsigned char smem[];
  // This thread's strip group, its stages and reduction buffers (kGroups == 1: the block's; the
  // statements keep the order they had before groups, so that those instances compile as then).
  const int group = kGroups == 1 ? 0 : static_cast<int>(threadIdx.x) / kThreads;
  uint32_t* s_table = reinterpret_cast<uint32_t*>(smem);
  unsigned char* s_stages =
      smem + StripTableBytes(kBits) + (kGroups == 1 ? 0 : group * a.num_stages * a.stage_bytes);
  float* s_red = reinterpret_cast<float*>(smem + a.red_offset) +
                 (kGroups == 1 ? 0 : group * 2 * kWarps * a.m * kRedPitch);
  const int red_warp_floats = a.m * kRedPitch;

  const int tid = kGroups == 1 ? static_cast<int>(threadIdx.x) : static_cast<int>(threadIdx.x) - group * kThreads,
            warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int num_stages = a.num_stages;
  // Virtual block vblock of a grid of vgrid (<= strips: every group has a strip).
  const int vblock = static_cast<int>(blockIdx.x) * kGroups + group;
  const int vgrid = static_cast<int>(gridDim.x) * kGroups;
  const int total = ((a.strips - 1 - vblock) / vgrid + 1) * a.stages_per_strip;
  const T* x = static_cast<const T*>(a.x);
  const int64_t strip_code_bytes = static_cast<int64_t>(a.stages_per_strip) * kStageCodeBytes;
  const int64_t scale_row_bytes_global = static_cast<int64_t>(a.k >> a.log2_group) * 2;
  const int sc_unit = a.sc_row_bytes < 16 ? a.sc_row_bytes : 16;
  const int sc_copies = kStripRows << a.sc_units_log2;

  auto stage_ptr = [&](int buf) { return s_stages + buf * a.stage_bytes; };
  // The per-thread parts of every stage's copies, computed once (this address arithmetic in
  // the loop was ~75 instructions per tile, more than half the dequantization's).
  // Codes: 16-byte copies tid, tid + 256, ... of the stage's contiguous run.
  const unsigned char* w_thread = a.packed + 16 * tid;
  // Scales: thread tid < sc_copies copies unit `part` of row `row` of the strip.
  const int sc_row = tid >> a.sc_units_log2, sc_part = tid & ((1 << a.sc_units_log2) - 1);
  const unsigned char* sc_thread = reinterpret_cast<const unsigned char*>(a.scales) +
                                   sc_row * scale_row_bytes_global + sc_part * sc_unit;
  const int sc_dst = a.sc_offset + sc_row * a.sc_row_bytes + sc_part * sc_unit;
  const int64_t sc_strip_bytes = kStripRows * scale_row_bytes_global;
  // X: 16-byte column x_col of rows x_row0, x_row0 + kXRowStep, ... (< m).
  constexpr int kXRowStep = kThreads / kXRowCopies;  // rows one pass of the block copies: 1 or 2
  const int x_row0 = tid / kXRowCopies, x_col = (tid % kXRowCopies) * 8;
  const T* x_thread = x + static_cast<int64_t>(x_row0) * a.k + x_col;
  const int x_dst = a.x_offset + 2 * (x_row0 * a.x_pitch + x_col);
  const int64_t x_step = static_cast<int64_t>(kXRowStep) * a.k;  // elements between copied rows
  // Codes and scales: weights, safe to load before the previous kernel has finished.
  auto issue_weights = [&](const Cursor& c) {
    unsigned char* dst = stage_ptr(c.buf) + 16 * tid;
    const unsigned char* src = w_thread + c.strip * strip_code_bytes + c.kstage * kStageCodeBytes;
#pragma unroll
    for (int i = 0; i < (kCodeCopies + kThreads - 1) / kThreads; ++i) {
      if (kCodeCopies % kThreads == 0 || tid + i * kThreads < kCodeCopies) {
        CpAsync16(dst + 16 * kThreads * i, src + 16 * kThreads * i);
      }
    }
    if (tid < sc_copies) {
      const unsigned char* src_sc = sc_thread + c.strip * sc_strip_bytes + c.kstage * a.sc_row_bytes;
      unsigned char* dst_sc = stage_ptr(c.buf) + sc_dst;
      if (sc_unit == 16) {
        CpAsync16(dst_sc, src_sc);
      } else {
        CpAsync8(dst_sc, src_sc);
      }
    }
  };
  auto issue_x = [&](const Cursor& c) {
    if ((kFused && a.norm_res != nullptr) || kCopyX) return;  // X is resident
    T* dst = reinterpret_cast<T*>(stage_ptr(c.buf) + x_dst);
    const T* src = x_thread + c.kstage * kStageK;
    // m = 1 (a decode step at batch 1) on its own path: the loop below, unrolled over the 8
    // possible rows, computes 8 predicated copies' addresses every stage (~60 instructions per
    // thread), where the threads of row 0 copy one piece and the others none. H100, 8B W4 batch 1:
    // 2.34 -> 2.29 ms per step (bench/results/ab-2026-11-26-h100/session9/README.md). (A run-time
    // loop for every m cost batch 4 0.03 ms.) In the plain instances (kM1) the row goes in the
    // one-row order (X1SourceWord), 4 bytes per copy, each thread's copies consecutive words.
    if (kM1) {
      uint32_t* dst_row = reinterpret_cast<uint32_t*>(stage_ptr(c.buf) + a.x_offset);
      const uint32_t* src_row = reinterpret_cast<const uint32_t*>(x + c.kstage * kStageK);
#pragma unroll
      for (int i = 0; i < kStageK / 2 / kThreads; ++i) {
        const int d = i * kThreads + tid;
        CpAsync4(dst_row + d, src_row + X1SourceWord(d));
      }
      return;
    }
    if (a.m == 1) {  // (the fused instances; plain one-row calls run kM1 above)
      if (x_row0 == 0) CpAsync16(dst, src);
      return;
    }
#pragma unroll
    for (int i = 0; i < 8 / kXRowStep; ++i) {  // m <= 8 rows
      if (x_row0 + kXRowStep * i < a.m) CpAsync16(dst + kXRowStep * i * a.x_pitch, src + i * x_step);
    }
  };
  // Sums the 8 warps' partials of a finished strip in warp order and stores 16 x m outputs;
  // with the SwiGLU epilogue 8 x m outputs y[m, n / 2] = silu(gate) * up from rows 0-7 (gate)
  // and 8-15 (up), both rounded to T first: exactly the plain GEMM followed by SwiGLU.
  auto sum_warps = [&](int parity, int mm, int row) {
    const float* r = s_red + parity * (kWarps * red_warp_floats) + mm * kRedPitch + row;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += r[w * red_warp_floats];
    return sum;
  };
  // Residual epilogue: this thread's residual value of the strip being computed, loaded when
  // the strip starts so that its latency hides behind the strip's stages.
  float res_pre = 0.0f;
  auto load_residual = [&](int strip) {
    if (kFused && a.res_out != nullptr && tid < kStripRows * a.m) {
      res_pre = a.res_out[static_cast<int64_t>(tid >> 4) * a.n + strip * kStripRows + (tid & (kStripRows - 1))];
    }
  };
  auto store_strip = [&](int parity, int strip) {
    T* y = static_cast<T*>(a.y);
    if (kFused && a.res_out != nullptr) {  // residual += Y rounded to T; sums of squares per strip
      if (warp * 32 >= kStripRows * a.m) return;
      const bool active = tid < kStripRows * a.m;
      const int row = tid & (kStripRows - 1), mm = tid >> 4;
      float sq = 0.0f;
      if (active) {
        const float v = res_pre + Act<T>::ToFloat(Act<T>::FromFloat(sum_warps(parity, mm, row)));
        a.res_out[static_cast<int64_t>(mm) * a.n + strip * kStripRows + row] = v;
        sq = v * v;
      }
#pragma unroll
      for (int o = 8; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);  // the 16 rows
      if (active && row == 0) a.sumsq_out[mm * a.strips + strip] = sq;
      return;
    }
    if (!a.swiglu) {
      if (tid >= kStripRows * a.m) return;
      const int row = tid & (kStripRows - 1), mm = tid >> 4;
      y[static_cast<int64_t>(mm) * a.n + strip * kStripRows + row] = Act<T>::FromFloat(sum_warps(parity, mm, row));
    } else {
      if (tid >= 8 * a.m) return;
      const int row = tid & 7, mm = tid >> 3;
      y[static_cast<int64_t>(mm) * (a.n / 2) + strip * 8 + row] =
          SwiGluOfSums<T>(sum_warps(parity, mm, row), sum_warps(parity, mm, row + 8));
    }
  };

  // Every block is resident from the start (grid <= resident blocks), so the next kernel may
  // be scheduled now: its blocks take the SMs this grid leaves, and wait for it before they
  // read its output (griddepcontrol.wait in that kernel).
  LaunchDependents();

  // Prologue: the codes and scales of the first `early` stages fly while the pair table is
  // built and while the previous kernel (launched with PDL) finishes; X (that kernel's output)
  // only after the grid dependency is resolved. early = all num_stages - 1 prologue stages
  // with LutGemmParams::early_weights: in a decode step the kernels before a projection are a
  // chain of small ones, long enough to stream up to 2 x 48 KB per SM of its weights. Else one:
  // behind another GEMM (whose blocks hold the SM until they end) the window is short, and
  // the first stage's compute would wait for the whole shared group below.
  // The early stages share the oldest cp.async group, the later prologue stages have one group
  // each, and empty groups pad the count to num_stages - 1, so the main loop's accounting
  // (num_stages - 2 groups in flight; stage s complete by iteration s) holds.
  const Cursor start{vblock, 0, 0};
  const int prologue = min(num_stages - 1, total);
  const int early = min(a.early_stages, prologue);
  Cursor ld = start;
  for (int s = 0; s < early; ++s) {
    issue_weights(ld);
    ld.Advance(a.stages_per_strip, num_stages, vgrid);
  }
  NormPreload norm_pre;
  if (kFused && a.norm_res != nullptr && group == 0) PreloadNormWeights(a, tid, &norm_pre);
  if (group == 0) BuildPairTable<T, kBits, kBits == 3 ? kWideRowBytes : 128>(a.table, s_table, tid);
  GridDependencyWait();
  if constexpr (kCopyX) {  // with the oldest cp.async group
    if constexpr (kM1) {
      IssueResidentXCopyOneRow(a, smem + a.xres_offset, threadIdx.x, kThreads * kGroups);
    } else {
      IssueResidentXCopy<T>(a, reinterpret_cast<T*>(smem + a.xres_offset), threadIdx.x, kThreads * kGroups);
    }
  }
  Cursor lx = start;
  for (int s = 0; s < early; ++s) {
    issue_x(lx);
    lx.Advance(a.stages_per_strip, num_stages, vgrid);
  }
  CpAsyncCommit();
  for (int s = 1; s < num_stages - 1; ++s) {
    if (s >= early && s < prologue) {
      issue_weights(ld);
      issue_x(ld);
      ld.Advance(a.stages_per_strip, num_stages, vgrid);
    }
    CpAsyncCommit();
  }

  // The norm prologue's X, once per block (its rows are read by every strip's stages).
  const bool resident_x = (kFused && a.norm_res != nullptr) || kCopyX;
  T* s_xres = reinterpret_cast<T*>(smem + a.xres_offset);
  if (kFused && a.norm_res != nullptr) {  // (visible after the loop's first barrier; group 0's scratch)
    float* scratch = kGroups == 1 ? s_red : reinterpret_cast<float*>(smem + a.red_offset);
    BuildNormedX<T, kGroups>(a, s_xres, scratch, tid, group, &norm_pre);
  }

  const uint32_t my_table = kBits == 3 ? SmemAddr(s_table) : LaneTable<kBits>(s_table, lane);
  const uint32_t lane_bits = 4u * lane;  // (3 bits: the lane's copy in the wide table)
  // This lane's ldmatrix row (lanes 0-7: k 0-7 of the sub-tile, 8-15: k 8-15) in its warp's k range.
  const int x_pitch = resident_x ? a.k + 8 : a.x_pitch;
  const int x_lane = kM1 ? warp * kTpw * kTileK + 8 * q
                         : min(lane & 7, a.m - 1) * x_pitch + ((lane >> 3) & 1) * 8 + warp * kTpw * kTileK;
  const bool x1_loader = lane < a.x1_loaders;  // kM1: the lanes that load X (TileMmasFolded)
  const int sc_cols = a.sc_row_bytes >> 1;  // groups per scale row in a stage
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  int parity = 0, pending_strip = -1;
  Cursor cc = start;
  for (int it = 0; it < total; ++it) {
    CpAsyncWaitPending(num_stages - 2);
    // The first barrier is block-wide: it publishes the pair table (group 0's) and the resident X
    // (every group's copies) to every group. After it each group syncs on its own.
    if (kGroups > 1 && it > 0) {
      GroupBarrier(group);
    } else {
      __syncthreads();
    }
    if (pending_strip >= 0) {
      store_strip(parity ^ 1, pending_strip);
      pending_strip = -1;
    }
    if (kFused && cc.kstage == 0) load_residual(cc.strip);
    if (it + num_stages - 1 < total) {
      issue_weights(ld);
      issue_x(ld);
      ld.Advance(a.stages_per_strip, num_stages, vgrid);
    }
    CpAsyncCommit();

    const unsigned char* stage = stage_ptr(cc.buf);
    const __half* sc = reinterpret_cast<const __half*>(stage + a.sc_offset);
    const T* xs = (resident_x ? s_xres + cc.kstage * kStageK : reinterpret_cast<const T*>(stage + a.x_offset)) + x_lane;
#pragma unroll
    for (int t = 0; t < kTpw; ++t) {
      const unsigned char* tile = stage + (warp * kTpw + t) * kTileBytes;
      uint32_t w[8], hw[2];
      *reinterpret_cast<uint4*>(w) = *reinterpret_cast<const uint4*>(tile + 16 * lane);
      if (kBits == 4) *reinterpret_cast<uint4*>(w + 4) = *reinterpret_cast<const uint4*>(tile + 512 + 16 * lane);
      if (kBits == 3) {
        *reinterpret_cast<uint2*>(hw) = *reinterpret_cast<const uint2*>(tile + 512 + 8 * lane);
        Pair3Indices(w, hw);
      }
      const int k_in_stage = (warp * kTpw + t) * kTileK;
      const __half* sc_lo = sc + g * sc_cols + (k_in_stage >> a.log2_group);
      const __half* sc_hi = sc_lo + 8 * sc_cols;
      const T* xt = xs + t * kTileK;
      if (a.log2_group >= 7) {
        TileMmasFolded<T, kBits, 8, kM1>(w, my_table, lane_bits, xt, sc_lo, sc_hi, acc, x1_loader);
      } else if (a.log2_group == 6) {
        TileMmasFolded<T, kBits, 4, kM1>(w, my_table, lane_bits, xt, sc_lo, sc_hi, acc, x1_loader);
      } else {
        TileMmasFolded<T, kBits, 2, kM1>(w, my_table, lane_bits, xt, sc_lo, sc_hi, acc, x1_loader);
      }
    }
    if (cc.kstage == a.stages_per_strip - 1) {  // strip done: leave this warp's partials
      // acc[c]: row g + 8 (c >> 1) of the strip, column m = 2q + (c & 1).
      float* r = s_red + parity * (kWarps * red_warp_floats) + warp * red_warp_floats;
      if (2 * q < a.m) {
        r[(2 * q) * kRedPitch + g] = acc[0];
        r[(2 * q) * kRedPitch + g + 8] = acc[2];
      }
      if (2 * q + 1 < a.m) {
        r[(2 * q + 1) * kRedPitch + g] = acc[1];
        r[(2 * q + 1) * kRedPitch + g + 8] = acc[3];
      }
      acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
      pending_strip = cc.strip;
      parity ^= 1;
    }
    cc.Advance(a.stages_per_strip, num_stages, vgrid);
  }
  CpAsyncWait<0>();
  if (kGroups > 1) {
    GroupBarrier(group);
  } else {
    __syncthreads();
  }
  if (pending_strip >= 0) store_strip(parity ^ 1, pending_strip);
}

// ---- Host side ------------------------------------------------------------------------------

// Calls f(kernel) with the instance for (dtype, bits, tpw, fused, low_regs, kM1, kG); low_regs
// selects the 80-register instance at 3 bits and nothing at 2 and 4 (theirs are 80 already).
// Three groups exist at 80 registers only (the plan never asks the 128-register 3-bit instance).
template <int kMode, bool kM1, int kG, typename F>
auto WithKernelT(ActivationType dtype, int bits, int tpw, bool low_regs, F f) {
#define FLUTE_STRIP_CASE(T, B, P) \
  if (bits == B && tpw == P) return f(LutGemmStripKernel<T, B, P, kMode, false, kM1, kG>);
#define FLUTE_STRIP_CASE3(T, P)                                                      \
  if (bits == 3 && tpw == P) {                                                       \
    if constexpr (kG <= 2) {                                                         \
      if (!low_regs) return f(LutGemmStripKernel<T, 3, P, kMode, false, kM1, kG>);  \
    }                                                                                \
    return f(LutGemmStripKernel<T, 3, P, kMode, true, kM1, kG>);                     \
  }
  if (dtype == ActivationType::kBFloat16) {
    FLUTE_STRIP_CASE(__nv_bfloat16, 2, 1) FLUTE_STRIP_CASE(__nv_bfloat16, 2, 2)
    FLUTE_STRIP_CASE3(__nv_bfloat16, 1) FLUTE_STRIP_CASE3(__nv_bfloat16, 2)
    FLUTE_STRIP_CASE(__nv_bfloat16, 4, 1) return f(LutGemmStripKernel<__nv_bfloat16, 4, 2, kMode, false, kM1, kG>);
  }
  FLUTE_STRIP_CASE(__half, 2, 1) FLUTE_STRIP_CASE(__half, 2, 2)
  FLUTE_STRIP_CASE3(__half, 1) FLUTE_STRIP_CASE3(__half, 2)
  FLUTE_STRIP_CASE(__half, 4, 1) return f(LutGemmStripKernel<__half, 4, 2, kMode, false, kM1, kG>);
#undef FLUTE_STRIP_CASE3
#undef FLUTE_STRIP_CASE
}

template <int kMode, typename F>
auto WithGroups(ActivationType dtype, int bits, int tpw, bool low_regs, int groups, F f) {
  if (groups == 3) return WithKernelT<kMode, false, 3>(dtype, bits, tpw, low_regs, f);
  if (groups == 2) return WithKernelT<kMode, false, 2>(dtype, bits, tpw, low_regs, f);
  return WithKernelT<kMode, false, 1>(dtype, bits, tpw, low_regs, f);
}

// one_row: StripPlan::one_row, a plain call of one row on the kM1 instances (X staged, or
// resident in copy-X mode; one group per block). (The fused
// instances keep the ldmatrix loads: in the 8B decode step at batch 1, whose LUT calls are all
// fused, the one-row order in them gave W4 2.166-2.175 against 2.170-2.177 ms and W2 2.137-2.167
// against 2.119-2.128, H100, session 41; with lanes 0-3 loading, W4 2.161 against 2.165 and W2
// 2.116 against 2.123, session 44.)
template <typename F>
auto WithKernel(ActivationType dtype, int bits, int tpw, int mode, bool low_regs, bool one_row, int groups, F f) {
  if (mode == kModeCopyX) {
    return one_row ? WithKernelT<kModeCopyX, true, 1>(dtype, bits, tpw, low_regs, f)
                   : WithGroups<kModeCopyX>(dtype, bits, tpw, low_regs, groups, f);
  }
  if (mode == kModeFused) return WithGroups<kModeFused>(dtype, bits, tpw, low_regs, groups, f);
  return one_row ? WithKernelT<kModePlain, true, 1>(dtype, bits, tpw, low_regs, f)
                 : WithGroups<kModePlain>(dtype, bits, tpw, low_regs, groups, f);
}

int SmemPerSm() { return CurrentDeviceAttribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor, 228 * 1024); }
int MaxSmemOptin() { return CurrentDeviceAttribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, 227 * 1024); }

// X resident in shared memory (norm prologue): [m][k + 8] 16-bit values.
int ResidentXBytes(const LutShape& s, int64_t m) { return RoundUp16(static_cast<int>(m * (s.k + 8) * 2)); }

// Shared memory: pair table | each group's stages | resident X | each group's reduction buffers.
int SmemBytesFor(const LutShape& s, int64_t m, bool resident_x, int tpw, int stages, int groups) {
  const StageLayout l = MakeStageLayout(s.bits, tpw, resident_x ? 0 : static_cast<int>(m), s.group_size);
  return RoundUp16(StripTableBytes(s.bits) + groups * stages * l.bytes) + (resident_x ? ResidentXBytes(s, m) : 0) +
         groups * RedBytes(m);
}

// The instance family of a call (StripMode).
int ModeOf(const StripFusion& f) {
  if (f.copy_x) return kModeCopyX;
  return (f.norm_prologue || f.residual_epilogue) ? kModeFused : kModePlain;
}

// Resident blocks per SM of an instance with this much dynamic shared memory (0 when the
// runtime cannot tell).
int BlocksPerSm(ActivationType dtype, int bits, int tpw, int mode, bool low_regs, bool one_row, int smem,
                int groups) {
  return WithKernel(dtype, bits, tpw, mode, low_regs, one_row, groups, [&](auto kernel) {
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess) return 0;
    int blocks = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads * groups, smem) != cudaSuccess) {
      return 0;
    }
    return blocks;
  });
}

// FLUTE_LUT_STRIP="tpw,stages" (every call) or "tpw,stages@KxN" (calls of that shape only).
bool ForcedConfig(const LutShape& s, int* tpw, int* stages) {
  const char* env = std::getenv("FLUTE_LUT_STRIP");
  if (env == nullptr) return false;
  long long k = 0, n = 0;
  const int fields = std::sscanf(env, "%d,%d@%lldx%lld", tpw, stages, &k, &n);
  if (fields == 4 && (k != s.k || n != s.n)) return false;
  return (fields == 2 || fields == 4) && (*tpw == 1 || *tpw == 2) && *stages >= 2 && *stages <= 4;
}

}  // namespace

// The lanes that load a one-row call's X fragments (TileMmasFolded): 4 (lanes 0-3, the only
// ones whose products are stored); FLUTE_LUT_STRIP_M1X=all, read on every call, has all 32 load
// them, as before (A/B runs, tests).
static int OneRowXLoaders() {
  const char* env = std::getenv("FLUTE_LUT_STRIP_M1X");
  return env != nullptr && std::string(env) == "all" ? 32 : 4;
}

bool StripKernelApplies(const LutShape& shape, int64_t m, const void* scales) {
  return m >= 1 && m <= 8 && shape.k % 1024 == 0 && shape.n % kStripRows == 0 &&
         reinterpret_cast<uintptr_t>(scales) % 16 == 0;
}


// Tiles per warp depend on the shape only (2 when k % 2048 == 0), never on m: they fix which
// warp sums which k-tiles, so every m <= 8 sums a row in the same order. The pipeline depth
// is chosen per call: the one whose grid wastes the fewest block slots, among those with at
// least 2 blocks per SM when any has, then the deepest. (Preferring 3 blocks per SM on a tie
// chose 2 stages for 14336x4096 at M = 1: 17.5 us against 15.3 at M = 2 with 3 stages.)
// The occupancy comes from the instance of the call's dtype: the bf16 instances use more
// registers (88 against 80 at 4 bits), so 3 blocks per SM can fit fp16 and not bf16; a grid
// sized for 3 would then run in two waves (4096x6144 bf16 at M = 1: 8.5 us against 7.0).
// coresident_smem > 0: only the blocks that fit beside the previous kernel's count (1 KB of
// each block's shared memory is reserved by the system).
//
// Early weights (the engine's decode launches): the deepest pipeline of at most 3 stages that
// keeps 2 blocks per SM, whatever the fill of the last round. In a decode step the prologue
// stages stream during the kernels before, and there the fill rule's choice for the fused qkv
// at M = 1 (2 stages, 3 blocks, one round) cost 2.5 us per call against 3 stages, 2 blocks,
// two rounds (8B batch 1: 2.49 -> 2.41 ms per step, H100; 4 stages: 2.46).
//
// Plain calls of 2-8 rows (no norm prologue): X resident in shared memory, copied once per
// block, where that still leaves 2 blocks per SM and the blocks take 1.5 strips or more on
// average. Staged, each stage carries m x 2048 x 2 bytes of X next to 16 KB of codes (at m = 4
// as many bytes as the codes), re-read for every strip. H100, 4-bit G128, PDL back to back
// (bench/results/ab-2026-11-26-h100/session9/README.md): 4096x28672 m = 2 31.2 -> 25.3 us,
// m = 4 36.3 -> 26.6; 8192x57344 m = 2 92.9 -> 87.8. With one strip per block the whole X
// must arrive before the first stage's MMAs: 4096x4096 m = 4 6.8 -> 7.5 us (hence the rule).
// FLUTE_LUT_STRIP_X=staged keeps X staged, =resident makes it resident wherever 2 blocks per
// SM fit (tests, A/B runs).
enum class ResidentXRule { kAuto, kNever, kWhereItFits };
static ResidentXRule ResidentXForPlainCalls() {
  const char* env = std::getenv("FLUTE_LUT_STRIP_X");
  if (env == nullptr) return ResidentXRule::kAuto;
  if (std::string(env) == "staged") return ResidentXRule::kNever;
  return std::string(env) == "resident" ? ResidentXRule::kWhereItFits : ResidentXRule::kAuto;
}

// 3 bits: the plan of a call without early weights also weighs the 80-register instance
// (StripPlan::low_regs; 3 blocks per SM where the 128-register one fits 2), taken only where its
// grid fills the block slots better by more than kLowRegsMargin (of the fill score below), since
// it runs 2-5 % slower per block. H100, 3-bit G128, same process, against the 128-register
// instance (bench/results/ab-2026-11-26-h100/session31/): 4096x6144 at M = 1 / 2 / 4 10.2 /
// 11.3 / 10.9 -> 7.3 / 8.9 / 9.6 us (one round of 396 slots instead of two of 264); on the other
// playbook shapes the fills tie and the 128-register instance stays. Calls with early weights
// (the engine's decode steps) keep the 128-register instance: there the same choice made the
// 8B W3 step at batch 1 ~1 % slower (2.49-2.51 -> 2.53 ms), although the qkv call alone was
// 1.13x faster. FLUTE_LUT_STRIP_LOWREGS=on|off forces either everywhere (tests, A/B runs).
constexpr double kLowRegsMargin = 0.05;
static std::vector<bool> LowRegsCandidates(int bits, bool early_weights) {
  if (bits != 3) return {false};
  const char* env = std::getenv("FLUTE_LUT_STRIP_LOWREGS");
  const std::string v = env == nullptr ? "" : env;
  if (v == "on") return {true};
  if (v == "off" || early_weights) return {false};
  return {false, true};
}

// 2- and 3-bit pipelines of 2 stages first (StripPlan::stages): with early weights at 2 and 3
// bits (else 3 stages first), and for plain 3-bit calls of one row (else the deepest of equal
// fill). The blocks per SM are the same (2, at 110-128 registers), every stall a little shorter
// (ncu); the mechanism was not isolated. H100, FLUTE_LUT_STRIP=2,2 against the plan, same process
// (bench/results/ab-2026-11-26-h100/session36/, calls 14-16): plain 3-bit G128 at M = 1 0.85-1.00
// of the time on the 8 playbook shapes (4096x28672 27.7 -> 23.6 us; plain M = 4 mostly slower,
// 2-bit mixed, 0.86-1.20); 8B decode step at batch 1 W3 -0.5 to -1.5 %, W2 -3 %, batch 4 even,
// but W4 +10 % (2.18 -> 2.40 ms), so 4 bits keep 3 stages. With X resident in the one-row order
// too (session 48, H200, call 3: FLUTE_LUT_STRIP=2,2 0.97-1.00 of the time of 3 or 4 stages, 3-bit
// G128 and G64 on the 8 playbook shapes). FLUTE_LUT_STRIP_SHALLOW=off restores the deeper first
// choice (A/B runs).
static bool ShallowFirst(const LutShape& s, int64_t m, const StripLaunch& launch) {
  const char* env = std::getenv("FLUTE_LUT_STRIP_SHALLOW");
  if (env != nullptr && std::string(env) == "off") return false;
  if (launch.early_weights) return s.bits == 2 || s.bits == 3;
  return s.bits == 3 && m == 1 && !launch.fusion.norm_prologue && !launch.fusion.residual_epilogue;
}

// 4-bit plain calls of 3-4 rows without early weights, X staged (DeepFirst): a plan of 2 stages
// gets almost nothing for its second block per SM (kShallowBlockBonus of the fill score below,
// not 1), so that the fill decides between it and 3-4 stages at one block. Staged X is read from
// L2 again for every strip, as many bytes as the codes at 4 rows, which 2 stages do not cover.
// H100, 4-bit, same binary against FLUTE_LUT_STRIP_DEEP=off (bench/results/ab-2026-11-26-h100/
// session39/, call 5: every such call at 4 stages, one block): M = 3-4 4096x6144 0.91-0.92 of the
// time, 8192x10240 0.86-0.91 (G128 M = 3 28.3 -> 24.8 us), fp16 and bf16, G128 and G64; but where
// two blocks of 2 stages fill the SMs as well (4096x4096, 14336x4096, 8192x8192, 8192x57344,
// 28672x8192: 256-3584 strips) 0.95 to 1.11, so those keep 2 stages. 2 bits already take 3 stages
// at 2 blocks there (their stages are half the size); 3 bits were not measured. The depth
// changes no bits (tiles per warp stay the shape's). (One tile per warp with X resident was
// faster still at M = 3 on the k = 8192 shapes, 8192x57344 126.8 -> 88.4 us (call 4), but tiles
// per warp set the summation order, which must not depend on M.) FLUTE_LUT_STRIP_DEEP=off
// restores the plan without it (A/B runs).
constexpr double kShallowBlockBonus = 0.1;
static bool DeepFirst(const LutShape& s, int64_t m, const StripLaunch& launch) {
  const char* env = std::getenv("FLUTE_LUT_STRIP_DEEP");
  if (env != nullptr && std::string(env) == "off") return false;
  return s.bits == 4 && m >= 3 && m <= 4 && !launch.early_weights && !launch.fusion.norm_prologue &&
         !launch.fusion.residual_epilogue;
}

// Plain one-row calls (FLUTE_LUT_STRIP_ONE_ROW, A/B runs and tests): kAuto (unset) X resident in
// the one-row order (copied once per block, 2k bytes) wherever one group per block keeps 2 blocks
// per SM, else staged; "staged" always staged (the rule before session 48); "resident" also the
// strip groups of 2-8 rows (one group: the one-row instances; 2-3 groups: the ldmatrix layout);
// "ldmatrix" the same plans, never the one-row instances. The staged X costs every stage 4-byte
// copies and a deeper stage: with it resident the larger shapes get a stage more (8192x57344 at
// 3 stages, 4096x28672 at 4). H200, fp16 G128, M = 1, same binary, alternating processes
// (bench/results/ab-2026-11-28-h200/session48/, calls 2-3), against "staged": 4-bit 8192x57344
// 86.9 -> 75.8 us, 4096x28672 23.1 -> 20.9, 8192x10240 19.9 -> 17.9, 8192x8192 14.0 -> 12.8; 3- and
// 2-bit 0.91-0.97 on those shapes; 4096x6144 / 4096x4096 / 14336x4096 0.96-1.01; 28672x8192 4-bit
// (X 56 KB: one block per SM) stays staged. The ldmatrix layout with X resident ran 0-3 % slower
// than the one-row order, and strip groups at M = 1 (2 or 3 per block) 0.95-1.95x the time.
enum class OneRowRule { kAuto, kStaged, kResident, kLdmatrix };
static OneRowRule OneRowRuleFromEnv() {
  const char* env = std::getenv("FLUTE_LUT_STRIP_ONE_ROW");
  const std::string v = env == nullptr ? "" : env;
  if (v == "staged") return OneRowRule::kStaged;
  if (v == "resident") return OneRowRule::kResident;
  return v == "ldmatrix" ? OneRowRule::kLdmatrix : OneRowRule::kAuto;
}
// The fewest rows of a plain call that take the plans with strip groups.
static int64_t MinPlainGroupRows() {
  const OneRowRule r = OneRowRuleFromEnv();
  return r == OneRowRule::kResident || r == OneRowRule::kLdmatrix ? 1 : 2;
}
// Whether a plain call of m rows may keep X resident with `groups` groups per block.
static bool PlainResidentXRows(int64_t m, int groups) {
  return m >= MinPlainGroupRows() || (m == 1 && groups == 1 && OneRowRuleFromEnv() == OneRowRule::kAuto);
}

// FLUTE_LUT_STRIP_GROUPS=1..kMaxGroups forces the strip groups per block (StripPlan::groups) of
// the calls of 2-8 rows (tuning runs, tests).
static int ForcedGroups(int64_t m) {
  const char* env = std::getenv("FLUTE_LUT_STRIP_GROUPS");
  if (env == nullptr || m < MinPlainGroupRows()) return 0;
  const int groups = std::atoi(env);
  return groups >= 1 && groups <= kMaxGroups ? groups : 0;
}

// Plain calls whose X is resident in 2-3 strip groups, where no stage ring of two tiles per warp
// (16 KB stages at 4 bits) fits beside X: one tile per warp (8 KB stages). That is 4 bits at 7-8
// rows of K = 8192 (X 112-128 KB beside the 32 KB pair table: 2 groups x 2 stages of 8 KB, 218 KB
// at 8 rows), which the plan otherwise stages (X re-read from L2 for every strip). H200, fp16, same
// process (bench/results/ab-2026-11-28-h200/session49/, call 4): 8192x57344 M = 8 4-bit G128
// 146.9 us staged, 118.5 on the tensor-core kernel (auto's choice until then), 98.6 with this plan;
// G64 150.4 / 129.4 / 102.1; 8192x10240 and 8192x8192 (fewer than 1024 strips, where auto keeps the
// tensor-core kernel) 25.9 against 30.0 staged and 23.7 on the tensor-core kernel. The summation
// order follows the tiles per warp, so these rows' bits differ from those of the same shape at
// 2-6 rows (as they already did on the tensor-core kernel). ComputeStripPlan takes such plans of 2
// groups, or of 3 where they hold every strip in one round (OneRoundGroupedPlan: 4096x6144 4-bit
// G64 M = 8). FLUTE_LUT_STRIP_TPW1=off leaves them staged (A/B runs).
static bool OneTilePerWarpForResidentX(const StripFusion& fusion, int groups, int shape_tpw) {
  const char* env = std::getenv("FLUTE_LUT_STRIP_TPW1");
  if (env != nullptr && std::string(env) == "off") return false;
  return fusion.copy_x && groups >= 2 && shape_tpw == 2;
}

// The plan with `groups` strip groups per block (1 for the calls that cannot take more).
static StripPlan ComputeStripPlanOfGroups(const LutShape& s, ActivationType dtype, int64_t m,
                                          const StripLaunch& launch, int sm_count, int groups) {
  const ResidentXRule rule = ResidentXForPlainCalls();
  if (!launch.fusion.any() && PlainResidentXRows(m, groups) && rule != ResidentXRule::kNever) {  // plain calls only
    StripLaunch resident = launch;
    resident.fusion.copy_x = true;
    const StripPlan p = ComputeStripPlanOfGroups(s, dtype, m, resident, sm_count, groups);
    const bool several_strips = 2 * (s.n / kStripRows) >= 3 * static_cast<int64_t>(p.grid) * p.groups;
    if (p.grid > 0 && p.blocks_per_sm * p.groups >= 2 &&
        (several_strips || m == 1 || rule == ResidentXRule::kWhereItFits)) {
      return p;
    }
  }
  const int strips = static_cast<int>(s.n / kStripRows);
  const int max_smem = MaxSmemOptin();
  const int sm_smem = SmemPerSm();
  const StripFusion fusion = launch.fusion;
  const bool deep_first = DeepFirst(s, m, launch);
  StripPlan best;
  double best_score = -1.0;
  const std::vector<bool> low_regs_candidates = LowRegsCandidates(s.bits, launch.early_weights);
  auto make = [&](int tpw, int stages, bool low_regs, StripPlan* p) {
    if (s.k % (1024 * tpw) != 0 || strips < groups) return false;
    if (groups > 2 && s.bits == 3 && !low_regs) return false;  // 128 registers: 2 groups at most
    p->tiles_per_warp = tpw;
    p->stages = stages;
    p->low_regs = low_regs;
    p->groups = groups;
    p->smem_bytes = SmemBytesFor(s, m, fusion.resident_x(), tpw, stages, groups);
    p->copy_x = fusion.copy_x;
    p->one_row = m == 1 && groups == 1 && !fusion.norm_prologue && !fusion.residual_epilogue &&
                 OneRowRuleFromEnv() != OneRowRule::kLdmatrix;
    if (p->smem_bytes > max_smem) return false;
    p->blocks_per_sm =
        std::max(1, BlocksPerSm(dtype, s.bits, tpw, ModeOf(fusion), low_regs, p->one_row, p->smem_bytes, groups));
    if (launch.coresident_smem > 0) {
      const int beside = (sm_smem - launch.coresident_smem) / (p->smem_bytes + 1024);
      if (beside < 1) return false;
      p->blocks_per_sm = std::min(p->blocks_per_sm, beside);
    }
    p->grid = static_cast<int>(std::min<int64_t>(strips / groups, static_cast<int64_t>(sm_count) * p->blocks_per_sm));
    return true;
  };
  // The share of the grid's strip slots (groups) over all rounds that hold a strip (1: no idle slot).
  auto fill = [&](const StripPlan& p) {
    const int64_t vgrid = static_cast<int64_t>(p.grid) * p.groups;
    const int64_t rounds = (strips + vgrid - 1) / vgrid;
    return static_cast<double>(strips) / static_cast<double>(rounds * vgrid);
  };
  auto consider = [&](int tpw, int stages) {
    for (const bool low_regs : low_regs_candidates) {
      StripPlan p;
      if (!make(tpw, stages, low_regs, &p)) continue;
      double score = fill(p) - (low_regs ? kLowRegsMargin : 0.0);
      if (p.blocks_per_sm * p.groups >= 2) score += 1.0;  // latency hiding first
      if (deep_first && !fusion.copy_x && stages == 2) score -= 1.0 - kShallowBlockBonus;
      if (score > best_score + 0.001) {
        best_score = score;
        best = p;
      }
    }
  };
  int tpw = 0, stages = 0;
  if (ForcedConfig(s, &tpw, &stages)) {
    consider(tpw, stages);
    if (best_score >= 0) return best;
  }
  const int shape_tpw = s.k % 2048 == 0 ? 2 : 1;
  const bool shallow_first = ShallowFirst(s, m, launch);
  if (launch.early_weights) {
    const int early_depths[2] = {shallow_first ? 2 : 3, shallow_first ? 3 : 2};
    for (int depth : early_depths) {
      StripPlan pick;
      double pick_score = -1.0;
      for (const bool low_regs : low_regs_candidates) {
        StripPlan p;
        if (!make(shape_tpw, depth, low_regs, &p) || p.blocks_per_sm * p.groups < 2) continue;
        const double score = fill(p) - (low_regs ? kLowRegsMargin : 0.0);
        if (score > pick_score + 0.001) {
          pick_score = score;
          pick = p;
        }
      }
      if (pick_score >= 0) return pick;
    }
  }
  const int depths[3] = {shallow_first ? 2 : 4, 3, shallow_first ? 4 : 2};
  for (int depth : depths) consider(shape_tpw, depth);
  if (best_score < 0 && OneTilePerWarpForResidentX(fusion, groups, shape_tpw)) {
    for (int depth : depths) consider(1, depth);
  }
  if (best_score < 0 && launch.coresident_smem > 0) {
    StripLaunch alone = launch;
    alone.coresident_smem = 0;
    return ComputeStripPlanOfGroups(s, dtype, m, alone, sm_count, groups);
  }
  return best;
}

// Strip groups (StripPlan::groups) for plain calls of 2-8 rows without early weights: 2 or 3
// groups per block where the one-group plan cannot keep X resident with 2 blocks per SM (X
// staged, re-read from L2 for every strip, or one block per SM) and a grouped plan can (the
// groups share one copy of X and one pair table): 3 groups where they keep 3 stages or more,
// else 2. H100, fp16 G128, same process, against one group (bench/results/ab-2026-11-26-h100/
// session45/, call 2): 8192x57344 4-bit M = 3 / 4 127.2 / 116.0 -> 87.7 / 86.5 us, 2-bit M = 4
// 93.5 -> 72.5, 8192x8192 4-bit M = 3 / 4 21.2 / 19.6 -> 16.5 / 16.3, 8192x10240 4-bit M = 3 / 4
// 24.3 / 23.6 -> 21.8 / 21.8, 28672x8192 4-bit M = 2 49.0 -> 46.7. Where the one-group plan
// already keeps X resident beside a second block, groups were slower (8192x57344 2-bit M = 2
// 68.6 -> 75.1 at 2 groups) or even; grouped plans with X staged lost on every shape.
// Calls with the norm prologue (whose X is resident by construction; the engine's qkv and
// gate/up) take 2 or 3 groups, by the same preference, where the one-group plan has one block per
// SM: a resident X of 3-4 rows at k = 8192 (the 70B's decode at batches 3-4; 8B's k = 4096 keeps
// 2 blocks). FLUTE_LUT_STRIP_GROUPS=1..3 forces the count (tests, A/B runs); forced groups that
// fit nowhere fall back to one group per block.
static bool PlainGroupsApply(int64_t m, const StripLaunch& launch) {
  return m >= MinPlainGroupRows() && !launch.fusion.norm_prologue && !launch.fusion.residual_epilogue &&
         !launch.early_weights && launch.coresident_smem == 0;
}

// Strip groups that take every strip in one round (session 46), plain calls of 2-8 rows without
// early weights (PlainGroupsApply): where the one-group plan stages X or needs a second round of
// strips, a plan of 3 (else 2) groups with X resident whose pipelines hold all the strips at once
// (grid x groups >= strips) on at least kOneRoundMinSms of the SMs. That is the k = 4096 and 14336
// shapes of 4096-6144 features (256-384 strips: 128 blocks of 2-3 groups), which the rule above
// leaves with X staged, since their pipelines take fewer than 1.5 strips each; the groups read X
// once per block, not once per strip, and 384 strips run in one round of 24 warps per SM instead of
// two of 16. H100, same binary against FLUTE_LUT_STRIP_ONEROUND=off, alternating processes
// (bench/results/ab-2026-11-26-h100/session46/, call 2): 4096x6144 M = 2-4 4-bit G128 9.7-9.9 ->
// 8.1 us, 2-bit M = 3-4 0.76-0.79 of the time; 4096x4096 (2 groups) 0.89-0.97; 14336x4096 4-bit
// M = 3-4 17.7 / 18.3 -> 14.6 / 15.8, but 2-bit M = 4 14.3 -> 14.7; a median 0.996 over 240 rows of
// M = 2-8. Plans of two rounds (8192x8192 at 3 groups: 512 strips on 396 pipelines) were 1.2-1.3x
// slower (call 1). Not the engine's launches (norm prologue, early weights): there the one block of
// ~200 KB per SM cannot start beside the previous kernel's blocks, and the 8B decode step at
// batches 2-4 was 4-5 % slower with the qkv on 3 groups (W4 2.37-2.61 -> 2.49-2.71 ms, call 3).
// FLUTE_LUT_STRIP_ONEROUND=off leaves them out (A/B runs).
constexpr double kOneRoundMinSms = 0.9;
static bool OneRound(const StripPlan& p, int64_t strips) {
  return p.grid > 0 && static_cast<int64_t>(p.grid) * p.groups >= strips;
}
static StripPlan OneRoundGroupedPlan(const LutShape& s, ActivationType dtype, int64_t m, const StripLaunch& launch,
                                     int sm_count, const StripPlan& one) {
  const char* env = std::getenv("FLUTE_LUT_STRIP_ONEROUND");
  if (env != nullptr && std::string(env) == "off") return {};
  if (!PlainGroupsApply(m, launch) || ResidentXForPlainCalls() == ResidentXRule::kNever) return {};
  const int64_t strips = s.n / kStripRows;
  if (one.copy_x && one.blocks_per_sm >= 2 && OneRound(one, strips)) return {};
  StripLaunch resident = launch;
  resident.fusion.copy_x = true;
  for (const int groups : {3, 2}) {
    const StripPlan p = ComputeStripPlanOfGroups(s, dtype, m, resident, sm_count, groups);
    if (OneRound(p, strips) && p.blocks_per_sm * p.groups >= 2 && p.grid >= kOneRoundMinSms * sm_count) return p;
  }
  return {};
}

static StripPlan ComputeStripPlan(const LutShape& s, ActivationType dtype, int64_t m, const StripLaunch& launch,
                                  int sm_count) {
  const int forced_groups = ForcedGroups(m);
  if (forced_groups > 1) {
    const StripPlan p = ComputeStripPlanOfGroups(s, dtype, m, launch, sm_count, forced_groups);
    if (p.grid > 0) return p;
  }
  const StripPlan one = ComputeStripPlanOfGroups(s, dtype, m, launch, sm_count, 1);
  if (forced_groups > 0) return one;
  const StripPlan one_round = OneRoundGroupedPlan(s, dtype, m, launch, sm_count, one);
  if (one_round.grid > 0) return one_round;
  const bool norm = m >= 2 && launch.fusion.norm_prologue;
  if (norm ? one.grid > 0 && one.blocks_per_sm >= 2
           : !PlainGroupsApply(m, launch) || (one.copy_x && one.blocks_per_sm >= 2)) {
    return one;
  }
  auto resident = [norm](const StripPlan& p) {
    return p.grid > 0 && (norm || p.copy_x) && p.blocks_per_sm * p.groups >= 2;
  };
  // One tile per warp (OneTilePerWarpForResidentX) at 2 groups only here: 3 groups of one tile
  // per warp were slower than 2 of two (H200, session 49: 8192x57344 4-bit M = 6 98.9 against
  // 86.1 us, 4096x28672 4-bit G64 M = 8 2.4 %). The one-round plans above may take them (4096x6144
  // 4-bit G64 M = 8: 128 blocks of 3 groups, 8.9 us against 10.2 on the tensor-core kernel).
  const int shape_tpw = s.k % 2048 == 0 ? 2 : 1;
  const StripPlan three = ComputeStripPlanOfGroups(s, dtype, m, launch, sm_count, 3);
  const bool three_resident = resident(three) && three.tiles_per_warp == shape_tpw;
  if (three_resident && three.stages >= 3) return three;
  const StripPlan two = ComputeStripPlanOfGroups(s, dtype, m, launch, sm_count, 2);
  if (resident(two)) return two;
  return three_resident ? three : one;
}

// Plans are cached per (device, shape, dtype, m, fusion, early weights, co-resident shared
// memory, SM count, FLUTE_LUT_STRIP, _X, _LOWREGS, _SHALLOW, _DEEP, _GROUPS, _ONEROUND, _ONE_ROW, _TPW1): the occupancy queries
// cost microseconds of host time, and a decode step that is not replayed from a CUDA graph
// launches hundreds of these GEMMs.
StripPlan MakeStripPlan(const LutShape& s, ActivationType dtype, int64_t m, const StripLaunch& launch,
                        int sm_count) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) device = -1;
  const char* env = std::getenv("FLUTE_LUT_STRIP");
  const char* env_x = std::getenv("FLUTE_LUT_STRIP_X");
  const char* env_low = std::getenv("FLUTE_LUT_STRIP_LOWREGS");
  const char* env_shallow = std::getenv("FLUTE_LUT_STRIP_SHALLOW");
  const char* env_deep = std::getenv("FLUTE_LUT_STRIP_DEEP");
  const char* env_groups = std::getenv("FLUTE_LUT_STRIP_GROUPS");
  const char* env_one_round = std::getenv("FLUTE_LUT_STRIP_ONEROUND");
  const char* env_one_row = std::getenv("FLUTE_LUT_STRIP_ONE_ROW");
  const char* env_tpw1 = std::getenv("FLUTE_LUT_STRIP_TPW1");
  using Key = std::tuple<int, int64_t, int64_t, int, int, int, int64_t, bool, bool, bool, int, int, std::string>;
  const Key key{device, s.n, s.k, s.bits, s.group_size, static_cast<int>(dtype), m, launch.fusion.norm_prologue,
                launch.fusion.residual_epilogue, launch.early_weights, launch.coresident_smem, sm_count,
                std::string(env != nullptr ? env : "") + "|" + (env_x != nullptr ? env_x : "") + "|" +
                    (env_low != nullptr ? env_low : "") + "|" + (env_shallow != nullptr ? env_shallow : "") + "|" +
                    (env_deep != nullptr ? env_deep : "") + "|" + (env_groups != nullptr ? env_groups : "") + "|" +
                    (env_one_round != nullptr ? env_one_round : "") + "|" + (env_one_row != nullptr ? env_one_row : "") +
                    "|" + (env_tpw1 != nullptr ? env_tpw1 : "")};
  static std::mutex mu;
  static std::map<Key, StripPlan>* cache = new std::map<Key, StripPlan>();
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto it = cache->find(key);
    if (it != cache->end()) return it->second;
  }
  const StripPlan plan = ComputeStripPlan(s, dtype, m, launch, sm_count);
  if (std::getenv("FLUTE_LUT_STRIP_PLAN_LOG") != nullptr) {  // tuning runs: each new plan, once
    std::fprintf(stderr, "strip plan k=%lld n=%lld b=%d G=%d m=%lld early=%d: tpw %d stages %d groups %d blocks/SM %d "
                 "grid %d copy_x %d low_regs %d one_row %d smem %d\n", static_cast<long long>(s.k), static_cast<long long>(s.n),
                 s.bits, s.group_size, static_cast<long long>(m), launch.early_weights ? 1 : 0, plan.tiles_per_warp,
                 plan.stages, plan.groups, plan.blocks_per_sm, plan.grid, plan.copy_x ? 1 : 0, plan.low_regs ? 1 : 0,
                 plan.one_row ? 1 : 0, plan.smem_bytes);
  }
  std::lock_guard<std::mutex> lock(mu);
  cache->emplace(key, plan);
  return plan;
}

int LaunchStripKernel(const LutGemmParams& p, const StripPlan& plan, bool pdl, CUstream_st* stream) {
  const LutShape& s = p.shape;
  const bool resident_x = p.norm_prologue() || plan.copy_x;
  const StageLayout l =
      MakeStageLayout(s.bits, plan.tiles_per_warp, resident_x ? 0 : static_cast<int>(p.m), s.group_size);
  StripArgs a;
  a.x = p.x;
  a.packed = p.packed;
  a.scales = reinterpret_cast<const __half*>(p.scales);
  a.table = p.table;
  a.y = p.y;
  a.m = static_cast<int>(p.m);
  a.n = static_cast<int>(s.n);
  a.k = static_cast<int>(s.k);
  a.log2_group = __builtin_ctz(static_cast<unsigned>(s.group_size));
  a.strips = static_cast<int>(s.n / kStripRows);
  a.swiglu = p.swiglu;
  a.early_stages = (pdl && p.early_weights) ? plan.stages - 1 : 1;
  a.stages_per_strip = static_cast<int>(s.k / (8 * plan.tiles_per_warp * kTileK));
  a.num_stages = plan.stages;
  a.stage_bytes = l.bytes;
  a.x_offset = l.x_offset;
  a.x_pitch = l.x_pitch;
  a.sc_offset = l.sc_offset;
  a.sc_row_bytes = l.sc_row_bytes;
  a.sc_units_log2 = l.sc_row_bytes <= 16 ? 0 : __builtin_ctz(static_cast<unsigned>(l.sc_row_bytes / 16));
  a.red_offset = plan.smem_bytes - plan.groups * RedBytes(p.m);
  a.x1_loaders = OneRowXLoaders();
  a.res_out = p.residual_out;
  a.sumsq_out = p.sumsq_out;
  a.norm_res = p.residual_in;
  a.norm_sumsq = p.sumsq_in;
  a.norm_w = p.norm_weight;
  a.norm_eps = p.norm_eps;
  a.xres_offset = resident_x ? a.red_offset - ResidentXBytes(s, p.m) : 0;
  StripFusion fusion;
  fusion.norm_prologue = p.norm_prologue();
  fusion.residual_epilogue = p.residual_epilogue();
  fusion.copy_x = plan.copy_x;
  return WithKernel(p.dtype, s.bits, plan.tiles_per_warp, ModeOf(fusion), plan.low_regs, plan.one_row, plan.groups,
                    [&](auto kernel) -> int {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.smem_bytes);
    if (err != cudaSuccess) return static_cast<int>(err);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(plan.grid);
    cfg.blockDim = dim3(kThreads * plan.groups);
    cfg.dynamicSmemBytes = plan.smem_bytes;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    err = cudaLaunchKernelEx(&cfg, kernel, a);
    if (err != cudaSuccess) return static_cast<int>(err);
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace flute::lut

namespace flute::trace {
FLUTE_TRACE_SETTER(SetBufferLutStrip)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
