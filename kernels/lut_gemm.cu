// The fused LUT-GEMM kernel for sm_90 (H100): see lut_gemm.h for the contract and
// kernels/README.md for the design. One block = 8 warps = 128 output features (one 16-row
// strip of W per warp) x MT rows of X x a range of 128-wide k-tiles (split-K).
//
// mma.m16n8k16 with W as the A operand ("swap AB"): A = Ŵ tile [16 n x 16 k] dequantized in
// registers through the pair table, B = Xᵀ [16 k x 8 m] from shared memory, C = Yᵀ [16 n x 8 m].
// Per stage, cp.async brings each warp's packed tile (16 x 128 codes, 256 * bits bytes), the
// X tile [MT x 128] and (register-staged) the scales of the 128 rows.
#include "kernels/lut_gemm.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "kernels/lut_gemm_device.cuh"
#include "kernels/lut_gemm_rows16.h"
#include "kernels/lut_gemm_strip.h"
#include "kernels/lut_gemm_tc.h"

namespace flute::lut {
namespace {

constexpr int kBlockN = kTileBlockN;  // output features per block
constexpr int kXStride = kTileK + 8;  // halves per X row in smem: +16 B kills ldmatrix conflicts

struct KernelArgs {
  const void* x;          // [M, K]
  const uint8_t* packed;  // packed tiles
  const __half* scales;   // [N, K / G]
  const float* table;     // [2^bits]
  void* y;                // [M, N]
  float* partials;        // [splits, M, N]
  int* counters;          // [num_col_blocks * num_m_tiles]
  int m, n, k, group_size;
  int splits, ktiles_per_split, num_m_tiles;
  bool swiglu;            // SwiGLU epilogue: rows 0-7 of each 16-row strip gate, 8-15 up; y [M, N / 2]
  bool early_weights;     // LutGemmParams::early_weights
};

// Scales are staged per chunk of 4 k-tiles (512 k): [128 rows][chunk_cols] with chunk_cols =
// 512 / G + 1 (one more when the chunk starts inside a group of 256), double-buffered.
constexpr int kScaleChunkTiles = 4;
__host__ __device__ constexpr int ScaleChunkCols(int group_size) {
  return kScaleChunkTiles * kTileK / group_size + 1;
}
constexpr int kScaleRegs = (kBlockN * (kScaleChunkTiles * kTileK / 32 + 1) + kThreads - 1) / kThreads;
int ScaleBufferBytes(int group_size) { return 2 * kBlockN * ScaleChunkCols(group_size) * 2; }

// ---- Layout constants per configuration ----------------------------------------------------
template <int kBits, int kMT>
struct Config {
  // MT = 16: 4 stages, 2 blocks per SM measured faster at M = 1 than 3 stages x 3 blocks.
  static constexpr int kStages = kMT <= 16 ? 4 : 3;
  // Caps registers (85 / 128) so that 3 / 2 blocks fit an SM. Only 3-bit at MT = 8 has the
  // shared memory for 3 blocks (its pair table is 8 KB); a cap nothing else can use would
  // only force the compiler to recompute addresses in the main loop.
  static constexpr int kMinBlocksPerSm = (kBits == 3 && kMT <= 8) ? 3 : 2;
  static constexpr int kTileBytes = 256 * kBits;              // one warp's packed tile
  static constexpr int kTableBytes = TableBytes<kBits>();
  static constexpr int kWStageBytes = kWarps * kTileBytes;
  static constexpr int kXStageBytes = kMT * kXStride * 2;
  // Without the two scale buffers, which depend on G (ScaleBufferBytes).
  static constexpr int kSmemBytes = kTableBytes + kStages * (kWStageBytes + kXStageBytes);
};

template <typename T, int kBits, int kMT>
__global__ void __launch_bounds__(kThreads, (Config<kBits, kMT>::kMinBlocksPerSm))
LutGemmKernel(const KernelArgs args) {
  using C = Config<kBits, kMT>;
  using T2 = typename Act<T>::T2;
  constexpr int kNT = kMT / 8;  // mma n8 tiles (rows of X) per block
  extern __shared__ __align__(16) unsigned char smem[];
  uint32_t* s_table = reinterpret_cast<uint32_t*>(smem);
  unsigned char* s_w = smem + C::kTableBytes;
  T* s_x = reinterpret_cast<T*>(s_w + C::kStages * C::kWStageBytes);
  T* s_scale = s_x + C::kStages * kMT * kXStride;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, q = lane & 3;
  const int m_tile = blockIdx.x % args.num_m_tiles;
  const int rest = blockIdx.x / args.num_m_tiles;
  const int split = rest % args.splits, col_block = rest / args.splits;
  const int num_ktiles = args.k / kTileK;
  const int kt_begin = split * args.ktiles_per_split;
  const int kt_end = min(num_ktiles, kt_begin + args.ktiles_per_split);
  const int num_iters = kt_end - kt_begin;
  const int m0 = m_tile * kMT;
  const int strip = col_block * kWarps + warp;
  const bool warp_active = strip < args.n / 16;
  const T* x = static_cast<const T*>(args.x);
  const int groups_per_row = args.k / args.group_size;
  const int log2_group = __ffs(args.group_size) - 1;
  const int valid_rows = min(kMT, args.m - m0);  // rows of X in this m tile
  const int chunk_cols = ScaleChunkCols(args.group_size);
  const int chunk_entries = kBlockN * chunk_cols;
  const int num_chunks = (num_iters + kScaleChunkTiles - 1) / kScaleChunkTiles;

  // Codes of k-tile kt (weights: may load before the previous kernel has finished).
  auto load_w = [&](int kt, int buf) {
    if (warp_active) {
      const unsigned char* src =
          args.packed + (static_cast<int64_t>(strip) * num_ktiles + kt) * C::kTileBytes;
      unsigned char* dst = s_w + buf * C::kWStageBytes + warp * C::kTileBytes;
      CpAsync16(dst + 16 * lane, src + 16 * lane);
      if (kBits == 4) CpAsync16(dst + 512 + 16 * lane, src + 512 + 16 * lane);
      if (kBits == 3) CpAsync8(dst + 512 + 8 * lane, src + 512 + 8 * lane);
    }
  };
  auto load_x = [&](int kt, int buf) {
    for (int c = tid; c < valid_rows * 16; c += kThreads) {  // rows >= M stay zero
      const int r = c >> 4, col = (c & 15) * 8;
      CpAsync16(s_x + (buf * kMT + r) * kXStride + col,
                x + static_cast<int64_t>(m0 + r) * args.k + kt * kTileK + col);
    }
  };
  // Scales of a chunk of kScaleChunkTiles k-tiles for the block's 128 rows, [row][chunk_cols]
  // starting at group g0 of the chunk: consecutive threads read consecutive groups of a row.
  auto chunk_group0 = [&](int chunk) {
    return ((kt_begin + chunk * kScaleChunkTiles) * kTileK) >> log2_group;
  };
  auto fetch_scales = [&](int chunk, __half* regs) {
    const int g0 = chunk_group0(chunk);
#pragma unroll
    for (int i = 0; i < kScaleRegs; ++i) {
      const int e = tid + i * kThreads;
      const int row = e / chunk_cols, j = e - row * chunk_cols;
      const int n = col_block * kBlockN + row;
      regs[i] = __float2half(0.0f);
      if (e < chunk_entries && n < args.n && g0 + j < groups_per_row) {
        regs[i] = args.scales[static_cast<int64_t>(n) * groups_per_row + g0 + j];
      }
    }
  };
  auto store_scales = [&](int buf, const __half* regs) {
#pragma unroll
    for (int i = 0; i < kScaleRegs; ++i) {
      const int e = tid + i * kThreads;
      if (e < chunk_entries) s_scale[buf * chunk_entries + e] = Act<T>::FromHalf(regs[i]);
    }
  };

  // Prologue. With PDL (LutGemmParams::pdl) the next kernel may be scheduled at once; the
  // codes of the first `early` stages (LutGemmParams::early_weights: all kStages - 1 prologue
  // stages at MT <= 16, where registers allow it; else one), the pair table and the first
  // scales load before the wait for the previous kernel, X after it. The early stages share
  // the oldest cp.async group; the later prologue stages have one group each, and empty groups
  // pad the count to kStages - 1, so that the main loop's accounting (kStages - 2 groups in
  // flight; stage s complete by iteration s) holds.
  const int early = (kMT <= 16 && args.early_weights) ? C::kStages - 1 : 1;
  LaunchDependents();
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < early && s < num_iters) load_w(kt_begin + s, s);
  }
  BuildPairTable<T, kBits>(args.table, s_table, tid);
  for (int i = tid; i < C::kStages * (kMT - valid_rows) * (kXStride / 8); i += kThreads) {
    const int per_stage = (kMT - valid_rows) * (kXStride / 8);
    const int buf = i / per_stage, rest = i - buf * per_stage;
    const int r = valid_rows + rest / (kXStride / 8), col = (rest % (kXStride / 8)) * 8;
    *reinterpret_cast<uint4*>(s_x + (buf * kMT + r) * kXStride + col) = make_uint4(0, 0, 0, 0);
  }
  __half scale_regs[kScaleRegs];
  fetch_scales(0, scale_regs);
  store_scales(0, scale_regs);
  if (num_chunks > 1) fetch_scales(1, scale_regs);
  GridDependencyWait();
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < early && s < num_iters) load_x(kt_begin + s, s);
  }
  CpAsyncCommit();
#pragma unroll
  for (int s = 1; s < C::kStages - 1; ++s) {
    if (s >= early && s < num_iters) {
      load_w(kt_begin + s, s);
      load_x(kt_begin + s, s);
    }
    CpAsyncCommit();  // with the early stages' empty groups: kStages - 1 groups in all
  }

  float acc[kNT][4];
#pragma unroll
  for (int j = 0; j < kNT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

  const uint32_t my_table = LaneTable<kBits>(s_table, lane);
  for (int it = 0; it < num_iters; ++it) {
    CpAsyncWait<C::kStages - 2>();
    __syncthreads();
    const int next = it + C::kStages - 1;
    if (next < num_iters) {
      load_w(kt_begin + next, next % C::kStages);
      load_x(kt_begin + next, next % C::kStages);
    }
    CpAsyncCommit();

    const int buf = it % C::kStages;
    const int chunk = it / kScaleChunkTiles;
    if (warp_active) {
      const unsigned char* wt = s_w + buf * C::kWStageBytes + warp * C::kTileBytes;
      uint32_t w[8], hw[2];
      *reinterpret_cast<uint4*>(w) = *reinterpret_cast<const uint4*>(wt + 16 * lane);
      if (kBits == 4) *reinterpret_cast<uint4*>(w + 4) = *reinterpret_cast<const uint4*>(wt + 512 + 16 * lane);
      if (kBits == 3) {
        *reinterpret_cast<uint2*>(hw) = *reinterpret_cast<const uint2*>(wt + 512 + 8 * lane);
        Pair3Indices(w, hw);
      }
      const T* sc = s_scale + (chunk & 1) * chunk_entries + (warp * 16 + g) * chunk_cols;
      const int k_tile0 = (kt_begin + it) * kTileK;
      const int g0 = chunk_group0(chunk);
      const T* xs = s_x + buf * kMT * kXStride;
      // The 8 sub-tiles' lookups and MMAs into dst; with kScaleA the A operands are scaled
      // per 32-wide quarter (G = 32, 64), else they are raw table values (G >= 128).
      auto tile_mmas = [&](const bool kScaleA, float* dst_flat) {  // inlined: kScaleA folds
        float (&dst)[kNT][4] = *reinterpret_cast<float (*)[kNT][4]>(dst_flat);
        T2 s_lo4[4], s_hi4[4];
        if (kScaleA) {
#pragma unroll
          for (int h = 0; h < 4; ++h) {
            const int grp = ((k_tile0 + h * 32) >> log2_group) - g0;
            s_lo4[h].x = s_lo4[h].y = sc[grp];
            s_hi4[h].x = s_hi4[h].y = sc[8 * chunk_cols + grp];
          }
        }
#pragma unroll
        for (int kk = 0; kk < 8; ++kk) {
          uint32_t a[4];
          // kk is a compile-time constant after unrolling; the 4 pairs of this sub-tile.
          LookupPairs<kBits>(kk, w, my_table, a);
          if (kScaleA) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
              T2 v = *reinterpret_cast<const T2*>(&a[r]);
              v = __hmul2(v, (r & 1) ? s_hi4[kk >> 1] : s_lo4[kk >> 1]);
              a[r] = *reinterpret_cast<uint32_t*>(&v);
            }
          }
          if (kNT == 1) {  // M <= 8: one n8 tile of X
            uint32_t b[2];
            LdMatrixX2(b, xs + (lane & 7) * kXStride + kk * 16 + ((lane >> 3) & 1) * 8);
            Mma<T>(dst[0], a, b[0], b[1]);
          }
#pragma unroll
          for (int j = 0; j + 1 < kNT; j += 2) {
            uint32_t b[4];
            const int mi = lane >> 3;
            LdMatrixX4(b, xs + (8 * (j + (mi >> 1)) + (lane & 7)) * kXStride + kk * 16 + (mi & 1) * 8);
            Mma<T>(dst[j], a, b[0], b[1]);
            Mma<T>(dst[j + 1], a, b[2], b[3]);
          }
        }
      };
      if (args.group_size >= kTileK) {
        // One group per row in this tile: Σ table·x in fp32, then one FFMA by the scale per
        // output (instead of an HMUL2 per weight pair, and without rounding table·scale).
        // At every MT, so that an output element's arithmetic does not depend on the m tile:
        // the engine's batch-invariant mode runs this kernel at every M with one split count,
        // and a row's bits must not change with M (test ForcedSplitsRowsDoNotDependOnM; with
        // the fold at MT <= 16 only, rows of M <= 16 calls differed from M > 16). MT = 64 then
        // spills 80-112 bytes: 8B W4 batch-invariant prefill 1.3 % slower, decode unchanged (H100).
        float tile_acc[kNT][4];
#pragma unroll
        for (int j = 0; j < kNT; ++j) tile_acc[j][0] = tile_acc[j][1] = tile_acc[j][2] = tile_acc[j][3] = 0.0f;
        tile_mmas(false, &tile_acc[0][0]);
        const int grp = (k_tile0 >> log2_group) - g0;
        const float f_lo = static_cast<float>(sc[grp]), f_hi = static_cast<float>(sc[8 * chunk_cols + grp]);
#pragma unroll
        for (int j = 0; j < kNT; ++j) {
          acc[j][0] = fmaf(tile_acc[j][0], f_lo, acc[j][0]);
          acc[j][1] = fmaf(tile_acc[j][1], f_lo, acc[j][1]);
          acc[j][2] = fmaf(tile_acc[j][2], f_hi, acc[j][2]);
          acc[j][3] = fmaf(tile_acc[j][3], f_hi, acc[j][3]);
        }
      } else {
        tile_mmas(true, &acc[0][0]);
      }
    }
    // End of a chunk: publish the next chunk's scales (buffer last read two chunks ago) and
    // start fetching the one after, a whole chunk of latency ahead.
    const bool chunk_ends = (it % kScaleChunkTiles == kScaleChunkTiles - 1) || it == num_iters - 1;
    if (chunk_ends && chunk + 1 < num_chunks) {
      store_scales((chunk + 1) & 1, scale_regs);
      if (chunk + 2 < num_chunks) fetch_scales(chunk + 2, scale_regs);
    }
  }
  CpAsyncWait<0>();

  // Epilogue. acc[j][c]: n = strip * 16 + g + 8 * (c >> 1), m = m0 + 8 j + 2 q + (c & 1).
  // With SwiGLU, c and c + 2 are the gate and up rows of output strip * 8 + g.
  T* y = static_cast<T*>(args.y);
  if (args.splits == 1) {
    if (!warp_active) return;
    if (args.swiglu) {
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int m = m0 + 8 * j + 2 * q + c;
          if (m < args.m) {
            y[static_cast<int64_t>(m) * (args.n / 2) + strip * 8 + g] = SwiGluOfSums<T>(acc[j][c], acc[j][c + 2]);
          }
        }
      }
      return;
    }
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int n = strip * 16 + g + 8 * (c >> 1), m = m0 + 8 * j + 2 * q + (c & 1);
        if (m < args.m) y[static_cast<int64_t>(m) * args.n + n] = Act<T>::FromFloat(acc[j][c]);
      }
    }
    return;
  }
  if (warp_active) {
    float* part = args.partials + static_cast<int64_t>(split) * args.m * args.n;
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int n = strip * 16 + g + 8 * (c >> 1), m = m0 + 8 * j + 2 * q + (c & 1);
        if (m < args.m) __stcg(part + static_cast<int64_t>(m) * args.n + n, acc[j][c]);
      }
    }
  }
  // The last split of this (column block, m tile) to finish sums all partials in split order.
  __shared__ int s_is_last;
  __threadfence();
  __syncthreads();
  int* counter = args.counters + col_block * args.num_m_tiles + m_tile;
  if (tid == 0) s_is_last = atomicAdd(counter, 1) == args.splits - 1;
  __syncthreads();
  if (!s_is_last) return;
  __threadfence();
  SumPartialsInSplitOrder<T>(args.partials, args.splits, args.m, args.n, args.swiglu, m0, min(kMT, args.m - m0),
                             col_block, y);
  if (tid == 0) *counter = 0;  // ready for the next call
}

// ---- Host side ------------------------------------------------------------------------------
struct Plan {
  int mt;           // 8, 16, 32 or 64 rows of X per block
  int num_m_tiles;
  int num_col_blocks;
  int splits;
  int ktiles_per_split;
  int smem_bytes;
};

template <int kBits>
int SmemBytesFor(int mt) {
  if (mt <= 8) return Config<kBits, 8>::kSmemBytes;
  return mt <= 16 ? Config<kBits, 16>::kSmemBytes
                  : mt <= 32 ? Config<kBits, 32>::kSmemBytes : Config<kBits, 64>::kSmemBytes;
}

int SmemBytes(int bits, int mt, int group_size) {
  return (bits == 2 ? SmemBytesFor<2>(mt) : bits == 3 ? SmemBytesFor<3>(mt) : SmemBytesFor<4>(mt)) +
         ScaleBufferBytes(group_size);
}

size_t CounterBytes(const Plan&) { return kSplitCounterBytes; }

bool CountersFit(const Plan& p) {
  return static_cast<int64_t>(p.num_col_blocks) * p.num_m_tiles * sizeof(int) <= kSplitCounterBytes;
}

// Splits K when the grid is under one wave (blocks per SM from shared memory), choosing the
// split count that minimizes waves x (k-tiles per block + fixed cost), with >= 4 k-tiles per
// block so the pipeline has work.
Plan MakePlan(const LutShape& s, int64_t m, int forced_splits, int sm_count) {
  Plan p;
  p.mt = m <= 8 ? 8 : m <= 16 ? 16 : m <= 32 ? 32 : 64;
  p.num_m_tiles = static_cast<int>((m + p.mt - 1) / p.mt);
  p.num_col_blocks = static_cast<int>((s.n + kBlockN - 1) / kBlockN);
  p.smem_bytes = SmemBytes(s.bits, p.mt, s.group_size);
  const int num_ktiles = static_cast<int>(s.k / kTileK);
  // Resident blocks per SM: shared memory, and registers (launch bounds: 85 registers for
  // MT = 8 -> 3 blocks, 128 above -> 2; the 2-bit quad table alone would suggest more).
  const int reg_blocks = (s.bits == 3 && p.mt <= 8) ? 3 : 2;
  const int blocks_per_sm =
      std::max(1, std::min(reg_blocks, (227 * 1024) / (p.smem_bytes + 1024)));
  const int64_t slots = static_cast<int64_t>(sm_count) * blocks_per_sm;
  const int64_t base = static_cast<int64_t>(p.num_m_tiles) * p.num_col_blocks;
  int best = 1;
  if (forced_splits > 0) {
    best = std::min(forced_splits, num_ktiles);
  } else if (base < slots) {
    best = CheapestSplitCount(base, slots, num_ktiles);
  }
  p.ktiles_per_split = (num_ktiles + best - 1) / best;
  p.splits = (num_ktiles + p.ktiles_per_split - 1) / p.ktiles_per_split;  // no empty split
  if (forced_splits <= 0 && !CountersFit(p)) {  // (never: automatic splits need a grid under one wave)
    p.ktiles_per_split = num_ktiles;
    p.splits = 1;
  }
  return p;
}

// Counters, then [splits][M][N] fp32 partials with M rounded up to 8 and N to 128: the
// tensor-core kernel's fragment-ordered partials (lut_gemm_tc_common.cuh) fill whole 8-row groups of
// whole 128-column blocks.
size_t WorkspaceBytesFor(const Plan& p, const LutShape& s, int64_t m) {
  if (p.splits == 1) return 0;
  const int64_t padded_m = (m + 7) / 8 * 8, padded_n = (s.n + kBlockN - 1) / kBlockN * kBlockN;
  return CounterBytes(p) + static_cast<size_t>(p.splits) * padded_m * padded_n * sizeof(float);
}

template <typename T, int kBits, int kMT>
cudaError_t LaunchInstance(const KernelArgs& args, const Plan& p, bool pdl, cudaStream_t stream) {
  auto kernel = LutGemmKernel<T, kBits, kMT>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, p.smem_bytes);
  if (err != cudaSuccess) return err;
  const int grid = p.num_col_blocks * p.splits * p.num_m_tiles;
  if (pdl) {
    LaunchWithPdl(kernel, grid, kThreads, p.smem_bytes, stream, args);
  } else {
    kernel<<<grid, kThreads, p.smem_bytes, stream>>>(args);
  }
  return cudaGetLastError();
}

template <typename T, int kBits>
cudaError_t LaunchForBits(const KernelArgs& args, const Plan& p, bool pdl, cudaStream_t stream) {
  switch (p.mt) {
    case 8: return LaunchInstance<T, kBits, 8>(args, p, pdl, stream);
    case 16: return LaunchInstance<T, kBits, 16>(args, p, pdl, stream);
    case 32: return LaunchInstance<T, kBits, 32>(args, p, pdl, stream);
    default: return LaunchInstance<T, kBits, 64>(args, p, pdl, stream);
  }
}

template <typename T>
cudaError_t LaunchForType(const KernelArgs& args, int bits, const Plan& p, bool pdl, cudaStream_t stream) {
  switch (bits) {
    case 2: return LaunchForBits<T, 2>(args, p, pdl, stream);
    case 3: return LaunchForBits<T, 3>(args, p, pdl, stream);
    default: return LaunchForBits<T, 4>(args, p, pdl, stream);
  }
}

// Auto: the strip kernel re-reads X for every strip (M x K x 2 bytes against the strip's
// 16 x K x bits / 8 of codes), so from M = 5 it loses to the tensor-core kernel except on small
// matrices, where the tensor-core kernel's pipeline fill and split-K reduction cost more. H100,
// same run, M = 5-8, bf16 and fp16, 4/3/2-bit G128 and 4-bit G64 (bench/results/ab-2026-11-26-
// h100/session29/call14-kbench-m5-8-small-shapes.txt): tensor-core time / strip time 0.78-0.91
// on 4096x4096 and 0.71-0.93 on 4096x6144 (3-bit 0.85-1.07), 1.15-1.77 on 1024x4096 and
// 4096x1024. (Until session 29 the strip kernel kept N·K <= 4096·6144, a rule measured against
// the split-K kernel before the tensor-core kernel took M = 5-8.)
constexpr int64_t kStripMaxWeightsFromM5 = int64_t{4096} * 4096 - 1;  // N·K below 4096·4096

// From M = 5 the strip kernel also takes plain calls of n >= 16384 (1024 strips or more), without
// early weights, whose plan keeps X resident with 2 strip pipelines per SM or more (strip groups,
// lut_gemm_strip.cu): X is then read from L2 once per block, not once per strip. H100, fp16 G128, same process,
// against the tensor-core kernel (bench/results/ab-2026-11-26-h100/session45/, call 2):
// 4096x28672 M = 5-8 4-bit 29.0 -> 24.8-27.3 us, 2-bit 25.6 -> 22.3-23.2, 3-bit 30.1 -> 24.9-26.6;
// 8192x57344 M = 5-6 4-bit 115.5 -> 87.0-89.6, 2-bit 106.6 -> 74.2-78.6, 3-bit 126.9 -> 84.3-85.0,
// M = 8 2-bit 78.4, 3-bit 85.9 (4 bits at M = 7-8: since session 49 one tile per warp keeps X
// resident in 2 groups, OneTilePerWarpForResidentX; H200, 118.5 -> 98.5 us at M = 8). On the
// shapes of fewer strips (8192x10240, 8192x8192: 512-640) the same plans were even or slower from
// M = 6; 28672x8192 cannot keep X resident. Also (session 46) plain calls whose plan takes every
// strip in one round of 3 groups per block with X resident (lut_gemm_strip.cu, OneRoundGroupedPlan:
// 4096x6144, 384 strips on 128 blocks): H100, fp16 G128, against the tensor-core kernel (session46/,
// call 1) M = 5-8 4-bit 9.4-9.5 -> 8.5-8.8 us, 2- and 3-bit 0.90-0.95 of the time. With 2 groups
// (4096x4096, 256 strips) it was even (0.97-1.05), so those stay on the tensor-core kernel.
constexpr int64_t kStripGroupsMinN = 16384;

StripLaunch StripLaunchOf(const LutGemmParams& p) {
  StripLaunch launch;
  launch.fusion = {p.norm_prologue(), p.residual_epilogue()};
  launch.early_weights = p.pdl && p.early_weights;
  launch.coresident_smem = p.pdl ? p.coresident_smem : 0;
  return launch;
}

bool StripWinsFromM5(const LutGemmParams& p) {
  // Not the engine's launches (early weights, co-resident shared memory: not measured there).
  if (p.norm_prologue() || p.residual_epilogue()) return false;
  if (p.pdl && (p.early_weights || p.coresident_smem > 0)) return false;
  const StripPlan plan = MakeStripPlan(p.shape, p.dtype, p.m, StripLaunchOf(p), DeviceSmCount());
  if (plan.grid == 0 || !plan.copy_x) return false;
  if (p.shape.n >= kStripGroupsMinN) return plan.blocks_per_sm * plan.groups >= 2;
  return plan.groups == 3 && static_cast<int64_t>(plan.grid) * plan.groups * 16 >= p.shape.n;
}
}  // namespace

bool UsesStripKernel(const LutGemmParams& p) {
  if (p.split_k != 0 || p.tensor_core_fusion() || !StripKernelApplies(p.shape, p.m, p.scales)) return false;
  // The norm prologue keeps all of X in shared memory ([m][k + 8] 16-bit values): m * k * 2 at
  // most 128 KB (8 rows of k = 8192), leaving room for a 2-stage pipeline and the pair table.
  if (p.norm_prologue() && p.m * p.shape.k * 2 > 128 * 1024) return false;
  if (p.kernel == LutKernel::kStrip) return true;
  if (p.kernel != LutKernel::kAuto) return false;
  return p.m <= 4 || p.shape.n * p.shape.k <= kStripMaxWeightsFromM5 || StripWinsFromM5(p);
}

absl::Status IsSupportedByCuda(const LutShape& shape) {
  absl::Status format = CheckShape(shape);
  if (!format.ok()) return format;
  if (shape.n > (int64_t{1} << 30) || shape.k > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("LUT-GEMM on CUDA: n and k must be < 2^30, got n=",
                                                   shape.n, " k=", shape.k));
  }
  return absl::OkStatus();
}

size_t LutGemmWorkspaceBytes(const LutShape& shape, int64_t m) {
  return std::max(WorkspaceBytesFor(MakePlan(shape, m, 0, DeviceSmCount()), shape, m),
                  TensorCoreStreamKWorkspaceBytes(shape, m));
}

int LutGemmPlannedSplits(const LutShape& shape, int64_t m) {
  return MakePlan(shape, m, 0, DeviceSmCount()).splits;
}

int64_t LutGemmMaxRowsForForcedSplits(const LutShape& shape) {
  const int64_t col_blocks = (shape.n + kBlockN - 1) / kBlockN;
  return (kSplitCounterBytes / static_cast<int64_t>(sizeof(int))) / col_blocks * 64;
}

size_t LutGemmWorkspaceBytesForSplits(const LutShape& shape, int64_t m, int split_k) {
  return WorkspaceBytesFor(MakePlan(shape, m, split_k, DeviceSmCount()), shape, m);
}

namespace {

// The fused norms (LutGemmParams): complete pointer sets, allowed combinations, and a kernel
// that has them (the norm prologue: strip; prenorm_out and the deferred norm: tensor-core; the
// residual epilogue: either).
absl::Status CheckFusedNorm(const LutGemmParams& p) {
  if (!p.residual_epilogue() && !p.norm_prologue() && !p.deferred_norm() && !p.sumsq_out && !p.sumsq_in &&
      !p.norm_weight && !p.prenorm_out && !p.prenorm_weight) {
    return absl::OkStatus();
  }
  if (p.residual_epilogue() != (p.sumsq_out != nullptr) ||
      (p.norm_prologue() != (p.sumsq_in != nullptr) || p.norm_prologue() != (p.norm_weight != nullptr)) ||
      (p.prenorm_out != nullptr) != (p.prenorm_weight != nullptr) || (p.prenorm_out && !p.residual_epilogue())) {
    return absl::InvalidArgumentError(
        "LUT-GEMM: the residual epilogue needs residual_out and sumsq_out (and prenorm_out needs it and "
        "prenorm_weight), the norm prologue residual_in, sumsq_in and norm_weight (some but not all were set)");
  }
  if (p.residual_epilogue() && p.swiglu) {
    return absl::InvalidArgumentError("LUT-GEMM: the residual epilogue cannot be combined with swiglu");
  }
  // Blocks would read residual rows that others write.
  if (static_cast<int>(p.residual_epilogue()) + p.norm_prologue() + p.deferred_norm() > 1) {
    return absl::InvalidArgumentError(
        "LUT-GEMM: the residual epilogue, the norm prologue and the deferred norm cannot be combined in one call");
  }
  const auto misaligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 != 0; };
  if (misaligned(p.residual_out) || misaligned(p.residual_in) || misaligned(p.norm_weight) ||
      misaligned(p.prenorm_out) || misaligned(p.deferred_sumsq)) {
    return absl::InvalidArgumentError(
        "LUT-GEMM: residual_out, residual_in, norm_weight, prenorm_out and deferred_sumsq must be 16-byte aligned");
  }
  if (p.norm_prologue() && !UsesStripKernel(p)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LUT-GEMM: the fused norm prologue needs the strip kernel, which does not take this call (m=", p.m,
        ", k=", p.shape.k, ", n=", p.shape.n, ", split_k=", p.split_k, "; see UsesStripKernel)"));
  }
  const bool tensor_core_allowed = p.kernel == LutKernel::kAuto || p.kernel == LutKernel::kTensorCore;
  if (p.tensor_core_fusion() && !tensor_core_allowed) {
    return absl::InvalidArgumentError(
        "LUT-GEMM: prenorm_out and the deferred norm need the tensor-core kernel (kernel kAuto or kTensorCore)");
  }
  if (p.residual_epilogue() && !UsesStripKernel(p) && !tensor_core_allowed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LUT-GEMM: the fused residual epilogue needs the strip kernel or the tensor-core kernel; the strip "
        "kernel does not take this call (m=", p.m, ", k=", p.shape.k, ", n=", p.shape.n, ", split_k=", p.split_k,
        "; see UsesStripKernel) and the split-K kernel has none"));
  }
  return absl::OkStatus();
}

// Rows from which kAuto takes the tensor-core kernel: kTensorCoreMinM, or FLUTE_LUT_TC_MIN_M
// (read on every call, so that one process can A/B thresholds; values outside 1..4096 ignored).
int64_t TensorCoreMinM() {
  const char* env = std::getenv("FLUTE_LUT_TC_MIN_M");
  if (env == nullptr) return kTensorCoreMinM;
  const long v = std::strtol(env, nullptr, 10);
  return v >= 1 && v <= 4096 ? v : kTensorCoreMinM;
}

}  // namespace

absl::Status LaunchLutGemm(const LutGemmParams& p, CUstream_st* stream) {
  absl::Status supported = IsSupportedByCuda(p.shape);
  if (!supported.ok()) return supported;
  if (p.m < 1 || p.m > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("LUT-GEMM: m must be in [1, 2^30], got ", p.m));
  }
  if ((!p.x && !p.norm_prologue()) || !p.packed || !p.scales || !p.table || (!p.y && !p.residual_epilogue())) {
    return absl::InvalidArgumentError(
        "LUT-GEMM: x (unless norm prologue), packed, scales, table and y (unless residual epilogue) must be set");
  }
  if (reinterpret_cast<uintptr_t>(p.x) % 16 != 0 || reinterpret_cast<uintptr_t>(p.packed) % 16 != 0) {
    return absl::InvalidArgumentError("LUT-GEMM: x and packed must be 16-byte aligned");
  }
  absl::Status fused = CheckFusedNorm(p);
  if (!fused.ok()) return fused;
  if (p.kernel == LutKernel::kStrip && (!StripKernelApplies(p.shape, p.m, p.scales) || p.split_k > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LUT-GEMM: the strip kernel needs m <= 8 (got ", p.m, "), k % 1024 == 0 (got k=", p.shape.k,
        "), 16-byte aligned scales and split_k = 0 (got ", p.split_k, ")"));
  }
  if (p.kernel == LutKernel::kTensorCore) return LaunchTensorCoreLutGemm(p, stream);
  // (kAuto here: CheckFusedNorm rejected the fusions for the kernels that lack them.)
  if (p.tensor_core_fusion() || (p.residual_epilogue() && !UsesStripKernel(p))) {
    return LaunchTensorCoreLutGemm(p, stream);
  }
  if (p.kernel == LutKernel::kAuto && Rows16KernelApplies(p)) {
    // 9-16 rows at k = 2048 / 4096: X in registers (lut_gemm_rows16.cu).
    const int err = LaunchRows16Kernel(p, stream);
    if (err != 0) {
      return absl::InternalError(absl::StrCat("LUT-GEMM (16 rows) launch failed: ",
                                              cudaGetErrorString(static_cast<cudaError_t>(err))));
    }
    return absl::OkStatus();
  }
  if (p.kernel == LutKernel::kAuto && p.split_k == 0 && p.m >= TensorCoreMinM() && !UsesStripKernel(p)) {
    // From 5 rows, where the strip kernel does not take the call, the wgmma kernel: H100, 4-bit
    // G128, PDL, same run, split-K time / wgmma time on the 6 large LLaMA-3 shapes: 1.01-1.11
    // at M = 8, 1.17-1.36 at M = 16, 1.20-1.49 at M = 32, 1.30-1.76 at M = 64-128 (4096x4096:
    // 0.94-1.12; bench/results/ab-2026-11-26-h100/session12/kbench-nobranch.md). Where it does
    // not apply (Unimplemented) the split-K kernel runs.
    const absl::Status tc = LaunchTensorCoreLutGemm(p, stream);
    if (!absl::IsUnimplemented(tc)) return tc;
  }
  if (UsesStripKernel(p)) {
    const StripPlan strip_plan = MakeStripPlan(p.shape, p.dtype, p.m, StripLaunchOf(p), DeviceSmCount());
    if (strip_plan.grid == 0) {
      return absl::InvalidArgumentError(absl::StrCat("LUT-GEMM (strip): no configuration fits shared memory for m=",
                                                     p.m, ", k=", p.shape.k, p.norm_prologue() ? " with the norm prologue" : ""));
    }
    const int err = LaunchStripKernel(p, strip_plan, p.pdl, stream);
    if (err != 0) {
      return absl::InternalError(absl::StrCat("LUT-GEMM (strip) launch failed: ",
                                              cudaGetErrorString(static_cast<cudaError_t>(err))));
    }
    return absl::OkStatus();
  }
  const Plan plan = MakePlan(p.shape, p.m, p.split_k, DeviceSmCount());
  if (plan.splits > 1 && !CountersFit(plan)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LUT-GEMM: split_k=", plan.splits, " over ", plan.num_col_blocks * plan.num_m_tiles,
        " output tiles needs more than the workspace's ", kSplitCounterBytes / 4, " counters (m=", p.m,
        ", n=", p.shape.n, "): use fewer rows per call"));
  }
  const size_t need = WorkspaceBytesFor(plan, p.shape, p.m);
  if (need > 0 && (p.workspace == nullptr || p.workspace_bytes < need)) {
    return absl::InvalidArgumentError(absl::StrCat("LUT-GEMM: workspace of ", need,
                                                   " bytes needed (LutGemmWorkspaceBytes), got ",
                                                   p.workspace_bytes));
  }
  KernelArgs args;
  args.x = p.x;
  args.packed = p.packed;
  args.scales = reinterpret_cast<const __half*>(p.scales);
  args.table = p.table;
  args.y = p.y;
  args.counters = static_cast<int*>(p.workspace);
  args.partials = need > 0 ? reinterpret_cast<float*>(static_cast<char*>(p.workspace) + CounterBytes(plan))
                           : nullptr;
  args.m = static_cast<int>(p.m);
  args.n = static_cast<int>(p.shape.n);
  args.k = static_cast<int>(p.shape.k);
  args.group_size = p.shape.group_size;
  args.splits = plan.splits;
  args.ktiles_per_split = plan.ktiles_per_split;
  args.num_m_tiles = plan.num_m_tiles;
  args.swiglu = p.swiglu;
  args.early_weights = p.pdl && p.early_weights;
  const cudaError_t err =
      p.dtype == ActivationType::kBFloat16
          ? LaunchForType<__nv_bfloat16>(args, p.shape.bits, plan, p.pdl, stream)
          : LaunchForType<__half>(args, p.shape.bits, plan, p.pdl, stream);
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("LUT-GEMM launch failed: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace flute::lut
