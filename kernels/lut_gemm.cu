// The fused LUT-GEMM kernel for sm_90 (H100): see lut_gemm.h for the contract and
// kernels/README.md for the design. One block = 8 warps = 128 output features (one 16-row
// strip of W per warp) x MT rows of X x a range of 128-wide k-tiles (split-K).
//
// mma.m16n8k16 with W as the A operand ("swap AB"): A = Ŵ tile [16 n x 16 k] dequantized in
// registers through the pair table, B = Xᵀ [16 k x 8 m] from shared memory, C = Yᵀ [16 n x 8 m].
// Per stage, cp.async brings each warp's packed tile (16 x 128 codes, 256 * bits bytes), the
// X tile [MT x 128] and (register-staged) the scales of the 128 rows.
#include "kernels/lut_gemm.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace flute::lut {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockN = kWarps * 16;  // output features per block
constexpr int kTileK = 128;
constexpr int kXStride = kTileK + 8;  // halves per X row in smem: +16 B kills ldmatrix conflicts
constexpr int kTableCopies = 32;      // one pair-table copy per lane: no bank conflicts
// 2-bit: one packed byte (four codes = two pairs) indexes a "quad" entry of two half2 words,
// so one 64-bit shared load replaces two 32-bit ones and their offset arithmetic. 64-bit
// loads are served per half-warp, so 16 copies (lane & 15) keep them conflict-free.
constexpr int kQuadEntries = 256;
constexpr int kQuadCopies = 16;

template <typename T> struct Act;
template <> struct Act<__half> {
  using T2 = __half2;
  static __device__ __forceinline__ __half FromFloat(float f) { return __float2half_rn(f); }
  static __device__ __forceinline__ __half FromHalf(__half h) { return h; }
};
template <> struct Act<__nv_bfloat16> {
  using T2 = __nv_bfloat162;
  static __device__ __forceinline__ __nv_bfloat16 FromFloat(float f) { return __float2bfloat16_rn(f); }
  static __device__ __forceinline__ __nv_bfloat16 FromHalf(__half h) {
    return __float2bfloat16_rn(__half2float(h));
  }
};

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
};

// ---- PTX helpers -------------------------------------------------------------------------
__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// (An L2::cache_hint evict_first variant raised "illegal instruction" on the H100 with
// CUDA 13.0 here; weights are streamed once anyway.)
__device__ __forceinline__ void CpAsync16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(SmemAddr(dst)), "l"(src));
}
__device__ __forceinline__ void CpAsync8(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(SmemAddr(dst)), "l"(src));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void LdMatrixX2(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(SmemAddr(p)));
}
__device__ __forceinline__ void LdMatrixX4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}

template <typename T>
__device__ __forceinline__ void Mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void Mma<__half>(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void Mma<__nv_bfloat16>(float* c, const uint32_t* a, uint32_t b0,
                                                   uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

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
  static constexpr int kPairEntries = 1 << (2 * kBits);       // 256 / 64 / 16
  // 2-bit uses a quad table instead (QuadTable): 256 entries x 16 copies x 8 bytes.
  static constexpr int kTableBytes =
      kBits == 2 ? kQuadEntries * kQuadCopies * 8 : kPairEntries * kTableCopies * 4;
  static constexpr int kWStageBytes = kWarps * kTileBytes;
  static constexpr int kXStageBytes = kMT * kXStride * 2;
  // Without the two scale buffers, which depend on G (ScaleBufferBytes).
  static constexpr int kSmemBytes = kTableBytes + kStages * (kWStageBytes + kXStageBytes);
};

// Value pair of pair-table entry e: the kernel's pair index of codes (c0, c1).
// 4/2-bit: e = c0 | c1 << b. 3-bit: e = lo4 | hi2 << 4 (the two planes of lut_format.cc).
template <int kBits>
__device__ __forceinline__ void PairCodes(int e, int* c0, int* c1) {
  if (kBits == 3) {
    *c0 = (e & 3) | ((e >> 4) & 1) << 2;
    *c1 = ((e >> 2) & 3) | ((e >> 5) & 1) << 2;
  } else {
    *c0 = e & ((1 << kBits) - 1);
    *c1 = e >> kBits;
  }
}

// (x >> shift) & mask for a compile-time shift of either sign: one SHF + one LOP3.
template <int kShift>
__device__ __forceinline__ uint32_t ShiftMask(uint32_t x, uint32_t mask) {
  return (kShift >= 0 ? (x >> (kShift >= 0 ? kShift : 0)) : (x << (kShift < 0 ? -kShift : 0))) & mask;
}

// Byte offset (entry * 32 copies * 4 bytes = entry << 7) in the pair table of pair p, built
// straight from the packed words without first extracting the index.
template <int kBits, int kP>
__device__ __forceinline__ uint32_t PairOffset(const uint32_t* w, const uint32_t* hw) {
  // 4-bit: PRMT isolates the byte and LEA scales it and adds the table base (2 instructions
  // before the LDS, where shift + mask + add took 3).
  if (kBits == 4) return __byte_perm(w[kP >> 2], 0u, 0x4440u | (kP & 3)) << 7;
  const uint32_t lo = ShiftMask<4 * (kP & 7) - 7>(w[kP >> 3], 0xfu << 7);
  if (kBits == 2) return lo;
  return lo | ShiftMask<2 * (kP & 15) - 11>(hw[kP >> 4], 0x3u << 11);
}

// The 4 table words (A registers r = 0..3) of 16-wide sub-tile kKK.
template <int kBits, int kKK>
__device__ __forceinline__ void LookupPairsT(const uint32_t* w, const uint32_t* hw,
                                             const unsigned char* table, uint32_t* pair) {
  if constexpr (kBits == 2) {
    // Sub-tile kk = bytes 2kk (pairs 0, 1 = A registers 0, 1) and 2kk + 1 (registers 2, 3);
    // quad entry = byte, at byte offset entry * 16 copies * 8 = byte << 7.
    constexpr int kB0 = 2 * kKK, kB1 = 2 * kKK + 1;
    const uint2 lo = *reinterpret_cast<const uint2*>(
        table + ShiftMask<8 * (kB0 & 3) - 7>(w[kB0 >> 2], 0xffu << 7));
    const uint2 hi = *reinterpret_cast<const uint2*>(
        table + ShiftMask<8 * (kB1 & 3) - 7>(w[kB1 >> 2], 0xffu << 7));
    pair[0] = lo.x;
    pair[1] = lo.y;
    pair[2] = hi.x;
    pair[3] = hi.y;
    return;
  }
  pair[0] = *reinterpret_cast<const uint32_t*>(table + PairOffset<kBits, 4 * kKK + 0>(w, hw));
  pair[1] = *reinterpret_cast<const uint32_t*>(table + PairOffset<kBits, 4 * kKK + 1>(w, hw));
  pair[2] = *reinterpret_cast<const uint32_t*>(table + PairOffset<kBits, 4 * kKK + 2>(w, hw));
  pair[3] = *reinterpret_cast<const uint32_t*>(table + PairOffset<kBits, 4 * kKK + 3>(w, hw));
}
// kk is a constant once the caller's loop is unrolled, so the switch folds away.
template <int kBits>
__device__ __forceinline__ void LookupPairs(int kk, const uint32_t* w, const uint32_t* hw,
                                            const unsigned char* table, uint32_t* pair) {
  switch (kk) {
    case 0: LookupPairsT<kBits, 0>(w, hw, table, pair); break;
    case 1: LookupPairsT<kBits, 1>(w, hw, table, pair); break;
    case 2: LookupPairsT<kBits, 2>(w, hw, table, pair); break;
    case 3: LookupPairsT<kBits, 3>(w, hw, table, pair); break;
    case 4: LookupPairsT<kBits, 4>(w, hw, table, pair); break;
    case 5: LookupPairsT<kBits, 5>(w, hw, table, pair); break;
    case 6: LookupPairsT<kBits, 6>(w, hw, table, pair); break;
    default: LookupPairsT<kBits, 7>(w, hw, table, pair); break;
  }
}

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

  auto load_tiles = [&](int kt, int buf) {
    if (warp_active) {
      const unsigned char* src =
          args.packed + (static_cast<int64_t>(strip) * num_ktiles + kt) * C::kTileBytes;
      unsigned char* dst = s_w + buf * C::kWStageBytes + warp * C::kTileBytes;
      CpAsync16(dst + 16 * lane, src + 16 * lane);
      if (kBits == 4) CpAsync16(dst + 512 + 16 * lane, src + 512 + 16 * lane);
      if (kBits == 3) CpAsync8(dst + 512 + 8 * lane, src + 512 + 8 * lane);
    }
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

  // Prologue: start the first stages, then build the pair table and zero the X rows >= M
  // while they fly.
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < num_iters) load_tiles(kt_begin + s, s);
    CpAsyncCommit();
  }
  // Table: entry e, copy c at word e * 32 + c; thread i writes the 16 bytes i (contiguous).
  // 2-bit quad table: entry b (a packed byte), copy c at 8-byte slot b * 16 + c, holding the
  // pair words of its low and high nibble (PairCodes<2> of each).
  if constexpr (kBits == 2) {  // (the pair-table loop below then runs no iteration)
    for (int i = tid; i < kQuadEntries * (kQuadCopies / 2); i += kThreads) {
      const int b = i / (kQuadCopies / 2);
      uint32_t words[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int c0, c1;
        PairCodes<2>((b >> (4 * h)) & 15, &c0, &c1);
        T2 v;
        v.x = Act<T>::FromFloat(__ldg(args.table + c0));
        v.y = Act<T>::FromFloat(__ldg(args.table + c1));
        words[h] = *reinterpret_cast<uint32_t*>(&v);
      }
      reinterpret_cast<uint4*>(s_table)[i] = make_uint4(words[0], words[1], words[0], words[1]);
    }
  }
  for (int i = tid; i < (kBits == 2 ? 0 : C::kPairEntries) * (kTableCopies / 4); i += kThreads) {
    const int e = i / (kTableCopies / 4);
    int c0, c1;
    PairCodes<kBits>(e, &c0, &c1);
    T2 v;
    v.x = Act<T>::FromFloat(__ldg(args.table + c0));
    v.y = Act<T>::FromFloat(__ldg(args.table + c1));
    const uint32_t word = *reinterpret_cast<uint32_t*>(&v);
    reinterpret_cast<uint4*>(s_table)[i] = make_uint4(word, word, word, word);
  }
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

  float acc[kNT][4];
#pragma unroll
  for (int j = 0; j < kNT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

  const unsigned char* my_table =
      kBits == 2 ? reinterpret_cast<const unsigned char*>(s_table + 2 * (lane & (kQuadCopies - 1)))
                 : reinterpret_cast<const unsigned char*>(s_table + lane);
  for (int it = 0; it < num_iters; ++it) {
    CpAsyncWait<C::kStages - 2>();
    __syncthreads();
    const int next = it + C::kStages - 1;
    if (next < num_iters) load_tiles(kt_begin + next, next % C::kStages);
    CpAsyncCommit();

    const int buf = it % C::kStages;
    const int chunk = it / kScaleChunkTiles;
    if (warp_active) {
      const unsigned char* wt = s_w + buf * C::kWStageBytes + warp * C::kTileBytes;
      uint32_t w[8], hw[2];
      *reinterpret_cast<uint4*>(w) = *reinterpret_cast<const uint4*>(wt + 16 * lane);
      if (kBits == 4) *reinterpret_cast<uint4*>(w + 4) = *reinterpret_cast<const uint4*>(wt + 512 + 16 * lane);
      if (kBits == 3) *reinterpret_cast<uint2*>(hw) = *reinterpret_cast<const uint2*>(wt + 512 + 8 * lane);
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
          LookupPairs<kBits>(kk, w, hw, my_table, a);
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
      if (kNT <= 2 && args.group_size >= kTileK) {  // (MT <= 16: registers allow it)
        // One group per row in this tile: Σ table·x in fp32, then one FFMA by the scale per
        // output (instead of an HMUL2 per weight pair, and without rounding table·scale).
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
  T* y = static_cast<T*>(args.y);
  if (args.splits == 1) {
    if (!warp_active) return;
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
  const int rows = min(kMT, args.m - m0);
  for (int e = tid; e < rows * kBlockN; e += kThreads) {
    const int m = m0 + e / kBlockN, n = col_block * kBlockN + e % kBlockN;
    if (n >= args.n) continue;
    float sum = 0.0f;
    for (int s = 0; s < args.splits; ++s) {
      sum += __ldcg(args.partials + (static_cast<int64_t>(s) * args.m + m) * args.n + n);
    }
    y[static_cast<int64_t>(m) * args.n + n] = Act<T>::FromFloat(sum);
  }
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

int DeviceSmCount() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    return 132;
  }
  return sms;
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
    int64_t best_cost = -1;
    const int max_splits = std::max(1, std::min(32, num_ktiles / 4));
    for (int sp = 1; sp <= max_splits; ++sp) {
      const int64_t waves = (base * sp + slots - 1) / slots;
      // + 2: a block's fixed cost (pair table, pipeline fill, reduction) in k-tiles.
      const int64_t cost = waves * ((num_ktiles + sp - 1) / sp + 2);
      if (best_cost < 0 || cost < best_cost) {
        best_cost = cost;
        best = sp;
      }
    }
  }
  p.ktiles_per_split = (num_ktiles + best - 1) / best;
  p.splits = (num_ktiles + p.ktiles_per_split - 1) / p.ktiles_per_split;  // no empty split
  return p;
}

size_t CounterBytes(const Plan& p) {
  return (static_cast<size_t>(p.num_col_blocks) * p.num_m_tiles * sizeof(int) + 255) / 256 * 256;
}

size_t WorkspaceBytesFor(const Plan& p, const LutShape& s, int64_t m) {
  if (p.splits == 1) return 0;
  return CounterBytes(p) + static_cast<size_t>(p.splits) * m * s.n * sizeof(float);
}

template <typename T, int kBits, int kMT>
cudaError_t LaunchInstance(const KernelArgs& args, const Plan& p, cudaStream_t stream) {
  auto kernel = LutGemmKernel<T, kBits, kMT>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, p.smem_bytes);
  if (err != cudaSuccess) return err;
  const int grid = p.num_col_blocks * p.splits * p.num_m_tiles;
  kernel<<<grid, kThreads, p.smem_bytes, stream>>>(args);
  return cudaGetLastError();
}

template <typename T, int kBits>
cudaError_t LaunchForBits(const KernelArgs& args, const Plan& p, cudaStream_t stream) {
  switch (p.mt) {
    case 8: return LaunchInstance<T, kBits, 8>(args, p, stream);
    case 16: return LaunchInstance<T, kBits, 16>(args, p, stream);
    case 32: return LaunchInstance<T, kBits, 32>(args, p, stream);
    default: return LaunchInstance<T, kBits, 64>(args, p, stream);
  }
}

template <typename T>
cudaError_t LaunchForType(const KernelArgs& args, int bits, const Plan& p, cudaStream_t stream) {
  switch (bits) {
    case 2: return LaunchForBits<T, 2>(args, p, stream);
    case 3: return LaunchForBits<T, 3>(args, p, stream);
    default: return LaunchForBits<T, 4>(args, p, stream);
  }
}

}  // namespace

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
  return WorkspaceBytesFor(MakePlan(shape, m, 0, DeviceSmCount()), shape, m);
}

int LutGemmPlannedSplits(const LutShape& shape, int64_t m) {
  return MakePlan(shape, m, 0, DeviceSmCount()).splits;
}

size_t LutGemmWorkspaceBytesForSplits(const LutShape& shape, int64_t m, int split_k) {
  return WorkspaceBytesFor(MakePlan(shape, m, split_k, DeviceSmCount()), shape, m);
}

absl::Status LaunchLutGemm(const LutGemmParams& p, CUstream_st* stream) {
  absl::Status supported = IsSupportedByCuda(p.shape);
  if (!supported.ok()) return supported;
  if (p.m < 1 || p.m > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("LUT-GEMM: m must be in [1, 2^30], got ", p.m));
  }
  if (!p.x || !p.packed || !p.scales || !p.table || !p.y) {
    return absl::InvalidArgumentError("LUT-GEMM: x, packed, scales, table and y must all be set");
  }
  if (reinterpret_cast<uintptr_t>(p.x) % 16 != 0 || reinterpret_cast<uintptr_t>(p.packed) % 16 != 0) {
    return absl::InvalidArgumentError("LUT-GEMM: x and packed must be 16-byte aligned");
  }
  const Plan plan = MakePlan(p.shape, p.m, p.split_k, DeviceSmCount());
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
  const cudaError_t err =
      p.dtype == ActivationType::kBFloat16
          ? LaunchForType<__nv_bfloat16>(args, p.shape.bits, plan, stream)
          : LaunchForType<__half>(args, p.shape.bits, plan, stream);
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("LUT-GEMM launch failed: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace flute::lut
