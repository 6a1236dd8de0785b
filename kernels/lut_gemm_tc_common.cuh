// What the tensor-core LUT-GEMM's files share (lut_gemm_tc.cu lists them; the kernel is
// described in lut_gemm_tc_kernel.cuh): the kernels' arguments (TcArgs, TcNormArgs, which cross
// into the launchers' files: flute::lut::tc_detail), and, in an anonymous namespace (one copy
// per file, like lut_gemm_device.cuh), TcConfig (shared-memory layout; the host side plans with
// its sizes), the wgmma and proxy-fence wrappers, the residual epilogue and the deferred norm's
// factors of the fused kernel, the fragment order of the split-K partials and the fold of the
// scale-after-the-sums loop. Included only by .cu files (and lut_gemm_tc_launch.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/lut_gemm_device.cuh"

namespace flute::lut::tc_detail {

constexpr int kBlockN = kTileBlockN;  // output features per block (two warpgroups)

struct TcArgs {
  const void* x;          // [M, K]
  const uint8_t* packed;  // packed tiles
  const __half* scales;   // [N, K / G]
  const float* table;     // [2^bits]
  void* y;                // [M, N] (swiglu: [M, N / 2])
  float* partials;        // fp32, split-K only: fragment order (own_reduce) or [splits, M, N]
  int* counters;          // [num_col_blocks * num_m_tiles] (split-K only)
  int m, n, k, group_size;
  // splits = 0: Stream-K (MT = 128, own_reduce; StreamKSegment), the grid sharing the tiles'
  // k-tiles evenly. (Encoded so, not as a field: one more field in TcArgs had changed the
  // MT = 16 kernel's schedule, 28672x8192 at M = 16 55.0 -> 60.4 us on the H100.)
  int splits, ktiles_per_split, num_m_tiles;
  bool swiglu;
  bool early_weights;  // every prologue stage's codes before the PDL wait
  // The last split sums the partials of its own accumulator elements, each thread those it
  // wrote (fragment order); false: SumPartialsInSplitOrder over [splits, M, N]
  // (FLUTE_LUT_TC=old). Both add in split order from 0.0f: bitwise equal.
  bool own_reduce;
  // The reduction spread over the tile's split blocks (SpreadReduce, MT = 128 plain calls of a
  // classic plan): 0 = off (the last block sums), kSpreadBounded = each block waits up to
  // kSpreadWaitNs for the others, kSpreadNoWait = no wait (tests: the hand-off to the last block).
  // One byte in the bools' padding: TcArgs keeps its size and offsets.
  unsigned char spread_reduce;
};

enum TcSpread : unsigned char { kSpreadOff = 0, kSpreadBounded = 1, kSpreadNoWait = 2 };

// The fused norms (LutGemmParams; nullptr = off), a parameter of the fused kernel only (one
// more field in TcArgs changed the plain kernel's register allocation and schedule).
// Residual epilogue: residual[M, N] += Y rounded, sumsq_out[M, N / 16], and with prenorm_out
// [M, N] = round(prenorm_weight[n] * residual). Deferred norm: the sums of row r times
// 1 / sqrt(sum of deferred_sumsq[r, 0 .. K / 16) / K + norm_eps). Both need own_reduce where K
// is split.
struct TcNormArgs {
  float* residual = nullptr;
  float* sumsq_out = nullptr;
  void* prenorm_out = nullptr;
  const float* prenorm_weight = nullptr;
  const float* deferred_sumsq = nullptr;
  float norm_eps = 0.0f;
  bool any() const { return residual != nullptr || deferred_sumsq != nullptr; }
};

namespace {

template <int kBits, int kMT>
struct TcConfig {
  // MT = 16 / 32 / 64: 3 stages, 2 blocks per SM (77.6 / 90.1 / 107.3 KB at 4 bits, the wide
  // table at MT <= 32: kSmemBytes); MT = 128: 4 stages, 1 block. MT = 16 and 32 had 4 stages
  // until session 15: with the split-K tail shortened, 3 stages were 1-9 % faster alone
  // (flute-bench-kernel, 8 LLaMA shapes) and the 8B W4 decode step 0.12-0.13 ms faster at
  // batches 8-16, batches 24-32 unchanged (H100, bench/results/ab-2026-11-26-h100/session15/).
  // 3 stages with 3 blocks per SM were 1.3-1.6x slower at M = 16, and 6 stages 3-14 % slower
  // (session 12). With the wide table, 4 stages at MT = 16 (the deferred norm's sums then out of
  // the table rows: 86 KB) were as fast alone and slower in the 8B W4 step (batch 16 3.11-3.15 ->
  // 3.27-3.30 ms; session 28). 3 blocks per SM at MT = 16, 4 bits (80 registers: no spills once
  // the split reduction loads 2 splits per round trip; the narrow table for 75 KB) were 1.3-1.5x
  // slower alone and the 8B W4 step at batch 16 3.12-3.16 -> 3.59-3.62 ms; the same 80-register
  // code padded to 2 blocks per SM was 5-10 % slower than this one (session 35).
  static constexpr int kStages = kMT == 128 ? 4 : 3;
  static constexpr int kMinBlocksPerSm = kMT == 128 ? 1 : 2;
  static constexpr int kTileBytes = 256 * kBits;  // one warp's packed 16 x 128 tile
  static constexpr int kWStageBytes = kWarps * kTileBytes;
  static constexpr int kXHalfBytes = kMT * 128;  // one 64-wide k half: [MT rows][128 B]
  static constexpr int kXStageBytes = 2 * kXHalfBytes;
  // Wide pair table (4 and 2 bits, MT != 64): entry rows of 256 bytes instead
  // of 128, so that one PRMT builds a lookup's whole offset (the code byte as bits 8-15 beside
  // the lane's copy in bits 0-7) and the load adds the table base from a uniform register:
  // PRMT -> LDS per lookup, where PRMT -> LEA -> LDS took three. The second 128 bytes of each
  // row hold the W stages (kStages * kWStageBytes <= 32 KB), so the table region is 64 KB and
  // the stages need no memory of their own. (MT = 64 keeps the narrow table: its 48 KB of X
  // stages + 64 KB would not fit 2 blocks per SM.)
  // At 3 bits the wide table is the strip kernel's (64 rows, 16 KB: LookupPairsWide3 on the
  // index bytes of Pair3Indices), whose rows' halves (8 KB) cannot hold the W stages, so those
  // keep their own memory (kStagesInTable false).
  static constexpr bool kWideTable = kMT != 64;
  static constexpr bool kStagesInTable = kWideTable && kBits != 3;
  static constexpr int kTableBytes =
      kWideTable ? (kBits == 3 ? kWide3TableBytes : kWideTableBytes) : TableBytes<kBits>();
  static_assert(!kStagesInTable || kStages * kWStageBytes + (kMT <= 32 ? kMT * 64 * 4 : 0) <= kWideTableBytes / 2,
                "W stages and the deferred norm's sums must fit the table rows");
  // W tile (stage s, warp w) starts (s * kWarps + w) * kWTileStride bytes into the W region;
  // byte o of a tile lies at (o / 128) * 256 + o % 128 from there when in the table (WOffset).
  static constexpr int kWTileStride = kStagesInTable ? 2 * kTileBytes : kTileBytes;
  // (+ [kMT][64] floats for MT <= 32: the deferred norm's sums of squares, copied into shared
  // memory with the first X stage: kAsyncSumsqCols)
  // (With the wide table those sums live in the table rows' second halves, after the W stages:
  // 28 / 32 KB of the 32 at MT = 16 / 32. Kept out of kSmemBytes, they leave the L1 cache its
  // size: at MT = 32 another 8 KB had shrunk it to 28 KB for 2 blocks per SM, and the group
  // scales' loads (one 128-byte line per row and block, 32 KB per SM at K > 8192) missed.)
  static constexpr bool kSumsqInTable = kMT <= 32 && kStagesInTable;
  static constexpr int kSumsqBytes = kMT <= 32 ? kMT * 64 * 4 : 0;
  static constexpr int kNormBytes = (1 + kWarps) * kMT * 4 + (kSumsqInTable ? 0 : kSumsqBytes);
  // + 1024: the X stages must start 1024-aligned (the 128-byte swizzle pattern repeats every
  // 8 rows of 128 B and is computed from address bits), and dynamic shared memory is only
  // guaranteed 16-byte aligned.
  // + the fused norms' scratch (TcLutGemmFusedKernel): the deferred norm's kMT row factors and
  // the residual epilogue's [8 warps][kMT] strip sums (dynamic, so that the plain kernel
  // compiles exactly as without them).
  static constexpr int kSmemBytes =
      1024 + kStages * kXStageBytes + (kStagesInTable ? 0 : kStages * kWStageBytes) + kTableBytes + kNormBytes;
  // Byte o of a W tile from the tile's start (o a multiple of 16 below 128 · (o / 128 + 1)).
  static __device__ __forceinline__ int WOffset(int o) { return kStagesInTable ? (o >> 7) * 256 + (o & 127) : o; }
};

// ---- wgmma and proxy fences ------------------------------------------------------------------
__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Generic-proxy writes (cp.async, st.shared) -> async-proxy reads (wgmma's B operand).
__device__ __forceinline__ void FenceProxyAsyncShared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps the compiler from moving register accesses across the wgmma fences (an empty asm that
// "reads and writes" the register).
__device__ __forceinline__ void FenceOperand(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void FenceOperand(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }

// cp.async of 16 bytes, of which the first src_bytes (16 or 0) come from src, the rest are zero.
__device__ __forceinline__ void CpAsync16ZeroFill(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(dst)), "l"(src), "r"(src_bytes));
}

// Shared-memory matrix descriptor (sm_90 wgmma): start address >> 4 in bits 0-13, leading
// byte offset >> 4 in 16-29 (unused for a K-major swizzled operand whose k16 slice lies in one
// 128-byte row; 1 by convention), stride byte offset >> 4 in 32-45 (1024 B between 8-row
// groups), base offset 0 in 49-51 (atoms 1024-aligned), swizzle mode in 62-63 (1 = 128 B).
__device__ __forceinline__ uint64_t SwizzledKMajorDesc(uint32_t smem_addr) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// wgmma.mma_async m64nNk16 with A from registers, for TY = "f16" or "bf16" (the asm string
// must be a literal, so each N is a macro that Wgmma and WgmmaN16 below expand once per type).
// The operands: N / 2 accumulators, 4 A registers, the B descriptor, then scale-d (an immediate,
// 1 = accumulate, where the macro takes it), imm-scale-a = 1, imm-scale-b = 1, tnsp-b = 0.
#define FLUTE_WGMMA_M64N16K16(TY, SCALE_D) \
  asm volatile("wgmma.mma_async.sync.aligned.m64n16k16.f32." TY "." TY "\n" \
      "{%0, %1, %2, %3, %4, %5, %6, %7},\n" \
      "{%8, %9, %10, %11}, %12, %13, 1, 1, 0;\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(SCALE_D))

#define FLUTE_WGMMA_M64N32K16(TY) \
  asm volatile("wgmma.mma_async.sync.aligned.m64n32k16.f32." TY "." TY "\n" \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15},\n" \
      "{%16, %17, %18, %19}, %20, 1, 1, 1, 0;\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b))

#define FLUTE_WGMMA_M64N64K16(TY) \
  asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY "\n" \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,\n" \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31},\n" \
      "{%32, %33, %34, %35}, %36, 1, 1, 1, 0;\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b))

#define FLUTE_WGMMA_M64N128K16(TY) \
  asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY "\n" \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,\n" \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,\n" \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,\n" \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63},\n" \
      "{%64, %65, %66, %67}, %68, 1, 1, 1, 0;\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b))

// D[64 x MT] += A[64 x 16] (registers: this warp's 16 rows, mma.m16n8k16 A layout) ·
// B[16 x MT] (shared memory, K-major, descriptor). d: MT / 2 floats per thread; d[4i + c] is
// row 16 · (warp % 4) + g + 8 · (c >> 1), column 8i + 2q + (c & 1) (g = lane / 4, q = lane % 4).
// scale-d = 1 (accumulate), A and B unscaled and unnegated, B not transposed.
// The MT = 16 wgmma with scale-d as a template argument: kAccumulate = false computes D = A · B
// (the previous contents of d are ignored), the first k step of a commit group in the
// scale-after-the-sums path (kFold).
template <typename T, bool kAccumulate>
__device__ __forceinline__ void WgmmaN16(float* d, const uint32_t* a, uint64_t desc_b) {
  if constexpr (std::is_same_v<T, __half>) {
    FLUTE_WGMMA_M64N16K16("f16", kAccumulate ? 1 : 0);
  } else {
    FLUTE_WGMMA_M64N16K16("bf16", kAccumulate ? 1 : 0);
  }
}
template <typename T, int kN>
__device__ __forceinline__ void Wgmma(float* d, const uint32_t* a, uint64_t desc_b) {
  static_assert(kN == 16 || kN == 32 || kN == 64 || kN == 128, "wgmma N: 16, 32, 64 or 128");
  constexpr bool kHalf = std::is_same_v<T, __half>;
  if constexpr (kN == 16) {
    WgmmaN16<T, true>(d, a, desc_b);
  } else if constexpr (kN == 32 && kHalf) {
    FLUTE_WGMMA_M64N32K16("f16");
  } else if constexpr (kN == 32) {
    FLUTE_WGMMA_M64N32K16("bf16");
  } else if constexpr (kN == 64 && kHalf) {
    FLUTE_WGMMA_M64N64K16("f16");
  } else if constexpr (kN == 64) {
    FLUTE_WGMMA_M64N64K16("bf16");
  } else if constexpr (kHalf) {
    FLUTE_WGMMA_M64N128K16("f16");
  } else {
    FLUTE_WGMMA_M64N128K16("bf16");
  }
}
#undef FLUTE_WGMMA_M64N16K16
#undef FLUTE_WGMMA_M64N32K16
#undef FLUTE_WGMMA_M64N64K16
#undef FLUTE_WGMMA_M64N128K16

// k16 steps per wgmma commit group (kGroup): 4 for every MT. H100, 4-bit G128 fp16, groups of
// 1 / 2 / 4 steps: M = 32 gate/up 43.3 / 42.1 / 41.1 µs (session 12). MT = 64 and 128 had groups
// of 2 until session 17, where ptxas serialized the wgmmas (warning C7513: "non wgmma
// instructions defining input registers of a wgmma between start and end of the pipeline
// stage"); with 4 it does not, and on the H100 (same call, 8 LLaMA shapes) M = 64 went 2-13 %
// and M = 128 9-16 % faster (4096x28672 M = 128: 87.1 -> 73.5 us, below cuBLAS's 88.5).
// (Session 12 had measured 2 as best at M = 64: 28672x8192 112.0 / 102.2 / 107.4 µs for 1 / 2 / 4.)
constexpr int TcGroupFor(int) { return 4; }

// The residual epilogue of a block's [kMT x 128] tile, run by every thread of the block (with
// prenorm_out it has a barrier): residual[m, n] += acc rounded to T, prenorm_out[m, n] =
// round(prenorm_weight[n] * residual[m, n]) when asked, and the sums of squares of the new
// residual in a fixed order: per thread its columns g and g + 8, then a fixed xor tree over the
// 8 lanes of g (lane 4g + q) gives a warp's 16-column strip sum; without prenorm_out lane g = 0
// stores it to sumsq_out[m, n / 16] (the strip kernel's layout), with it the 8 strips of the
// block are added in warp order into sumsq_out[m, ceil(n / 128)] (the deferred norm then reads
// 8x fewer sums). Warps past the last strip (warp_active false) store nothing and add 0.
// acc[4i + c]: n = strip * 16 + g + 8 * (c >> 1), m = m0 + 8i + 2q + (c & 1) (the kernel's layout).
// The loads come first (LoadResidualOperands: the compiler cannot tell that the stores do not
// alias later loads; interleaved, each element would cost a round trip).
// s_red: [kWarps][kMT] floats of shared memory.
// The residual values under this thread's accumulators and its two prenorm weights (columns
// g and g + 8 of its strip; 0 where nothing is stored), loaded as soon as the main loop ends
// so that the round trip overlaps the split reduction.
template <int kMT>
struct ResidualOperands {
  float old[kMT / 2];
  float weight[2];
};
template <int kMT>
__device__ __forceinline__ void LoadResidualOperands(const TcNormArgs& norm, int total_m, int total_n, int m0,
                                                     int strip, bool warp_active, ResidualOperands<kMT>* ops) {
  const int lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int i = 0; i < kMT / 2; ++i) {
    const int m = m0 + 8 * (i / 4) + 2 * q + (i & 1), n = strip * 16 + g + 8 * ((i >> 1) & 1);
    ops->old[i] = warp_active && m < total_m ? __ldcg(norm.residual + static_cast<int64_t>(m) * total_n + n) : 0.0f;
  }
  const bool weights = norm.prenorm_out != nullptr && warp_active;
  ops->weight[0] = weights ? __ldg(norm.prenorm_weight + strip * 16 + g) : 0.0f;
  ops->weight[1] = weights ? __ldg(norm.prenorm_weight + strip * 16 + g + 8) : 0.0f;
}

template <typename T, int kMT>
__device__ __forceinline__ void ResidualEpilogue(const float (&acc)[kMT / 2], const ResidualOperands<kMT>& ops,
                                                 const TcNormArgs& norm, int total_m, int total_n, int m0, int strip,
                                                 int col_block, bool warp_active, float* s_red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
  T* prenorm = static_cast<T*>(norm.prenorm_out);
  const float(&old)[kMT / 2] = ops.old;
  const float(&weight)[2] = ops.weight;
#pragma unroll
  for (int i = 0; i < kMT / 8; ++i) {
#pragma unroll
    for (int c0 = 0; c0 < 2; ++c0) {
      const int row = 8 * i + 2 * q + c0, m = m0 + row;
      const bool valid = warp_active && m < total_m;
      float sumsq = 0.0f;
      if (valid) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t at = static_cast<int64_t>(m) * total_n + strip * 16 + g + 8 * h;
          const float r = old[4 * i + c0 + 2 * h] + Act<T>::ToFloat(Act<T>::FromFloat(acc[4 * i + c0 + 2 * h]));
          norm.residual[at] = r;
          if (prenorm != nullptr) prenorm[at] = Act<T>::FromFloat(weight[h] * r);
          sumsq += r * r;
        }
      }
      sumsq += __shfl_xor_sync(0xffffffffu, sumsq, 4);
      sumsq += __shfl_xor_sync(0xffffffffu, sumsq, 8);
      sumsq += __shfl_xor_sync(0xffffffffu, sumsq, 16);
      if (prenorm == nullptr) {
        if (g == 0 && valid) norm.sumsq_out[static_cast<int64_t>(m) * (total_n / 16) + strip] = sumsq;
      } else if (g == 0) {
        s_red[warp * kMT + row] = sumsq;
      }
    }
  }
  if (prenorm == nullptr) return;
  __syncthreads();
  const int m = m0 + static_cast<int>(threadIdx.x);
  if (threadIdx.x < kMT && m < total_m) {
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += s_red[w * kMT + threadIdx.x];
    norm.sumsq_out[static_cast<int64_t>(m) * ((total_n + kTileBlockN - 1) / kTileBlockN) + col_block] = total;
  }
}

// Float f of an array that skips kGap bytes after every 128 (the wide table's row halves).
template <int kGap>
__device__ __forceinline__ const float* GappedFloat(const float* base, int f) {
  return reinterpret_cast<const float*>(reinterpret_cast<const unsigned char*>(base) + 4 * f + ((4 * f) >> 7) * kGap);
}

// The deferred norm's row factors: s_inv[r] = 1 / sqrt(sum of sumsq[m0 + r, 0 .. k / 128) / k +
// eps) for the block's kMT rows (0 past the last row; sumsq: the per-128-column sums of a
// residual epilogue with prenorm_out), as gpu::LaunchAddRmsNorm computes it. kThreads / kMT
// consecutive lanes per row; lane p sums the elements p, p + lanes, ... of the row, 4 loads in
// flight, then a fixed xor tree over the row's lanes: the same order in every block and run.
// kShared: sumsq is the block's rows copied to shared memory ([kMT][k / 128], row 0 = m0), with
// kGap bytes skipped after every 128 (GappedFloat).
template <int kMT, bool kShared = false, int kGap = 0>
__device__ __forceinline__ void DeferredNormFactors(const float* sumsq, int m0, int valid_rows, int k, float eps,
                                                    float* s_inv) {
  constexpr int kLanesPerRow = kThreads / kMT;  // 16, 8, 4, 2
  const int r = threadIdx.x / kLanesPerRow, part = threadIdx.x % kLanesPerRow;
  const int cols = k / kTileK;
  float sum = 0.0f;
  if (r < valid_rows) {
    const float* row = sumsq + static_cast<int64_t>(kShared ? r : m0 + r) * cols;
    for (int j0 = part; j0 < cols; j0 += 4 * kLanesPerRow) {
      float v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int j = j0 + u * kLanesPerRow;
        v[u] = j < cols ? (kShared ? *GappedFloat<kGap>(sumsq, r * cols + j) : __ldcg(row + j)) : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) sum += v[u];
    }
  }
#pragma unroll
  for (int offset = kLanesPerRow / 2; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (part == 0) s_inv[r] = r < valid_rows ? 1.0f / sqrtf(sum / static_cast<float>(k) + eps) : 0.0f;
}

// Split-K partials of the per-thread reduction (TcArgs::own_reduce), in fragment order:
// [splits][column blocks][8-row groups of M][kThreads][4] floats, where thread t's 16 bytes of
// row group i are its accumulators acc[4i .. 4i + 3] (rows m0 + 8i + 2q + {0, 1}, columns g and
// g + 8 of its strip). A warp's store or load of a row group is 512 contiguous bytes, and the
// last split reads a whole partial with kMT / 8 16-byte loads per thread. Padded to whole
// column blocks and 8-row groups (PartialBytes).
constexpr int kFragmentGroupFloats = kThreads * 4;
__host__ __device__ inline int64_t FragmentSplitFloats(int64_t m, int64_t n) {
  return ((n + kTileBlockN - 1) / kTileBlockN) * ((m + 7) / 8) * kFragmentGroupFloats;
}
__device__ __forceinline__ int64_t FragmentTileOffset(int m, int n, int col_block, int m0) {
  return (static_cast<int64_t>(col_block) * ((m + 7) / 8) + m0 / 8) * kFragmentGroupFloats;
}

// kFold: acc += the retired commit group's unscaled sums times its group scales (rows g and g + 8
// of the warp's strip: acc[4i + c] is row g + 8 (c >> 1)), in fp32.
template <int kAcc>
__device__ __forceinline__ void FoldGroup(float (&part)[kAcc], __half scale_lo, __half scale_hi, float (&acc)[kAcc]) {
  const float lo = __half2float(scale_lo), hi = __half2float(scale_hi);
#pragma unroll
  for (int i = 0; i < kAcc; ++i) {
    FenceOperand(part[i]);  // (read after the wait that retired the group)
    acc[i] = fmaf(part[i], (i & 2) ? hi : lo, acc[i]);
  }
}

}  // namespace
}  // namespace flute::lut::tc_detail
