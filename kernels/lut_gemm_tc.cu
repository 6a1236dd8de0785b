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
// Block = 2 warpgroups = 8 warps = 128 output features (warp w: 16-row strip col_block * 8 + w;
// warpgroup h: rows 64h..64h+63 of the block) × MT rows of X (MT = 16, 32, 64 or 128 = the wgmma N) × a
// range of 128-wide k-tiles (split-K only when the grid is under one wave). Both warpgroups read
// the same X tile, so X goes through L2 once per 128 features (N / 128 · M · K · 2 bytes in all).
// Per k-tile stage, cp.async brings each warp's packed tile (256 · bits bytes) and the X tile
// [MT × 128] (rows ≥ M zero-filled by the copy itself). Per 16-wide k step each warp looks up its
// four A registers (one shared load per weight pair), multiplies them by the group scale (HMUL2:
// the product is rounded to the activation type, as the split-K kernel does for G < 128; at
// MT = 16 and G = 64 the scales are applied to fp32 sums instead, kFold), and the warpgroup
// issues one wgmma per k step. The 8 k steps of a tile go in groups
// of kGroup (4: TcGroupFor): a group's 4 · kGroup lookups are independent, its wgmmas
// are issued back to back as one commit group, and A is double-buffered by groups so that the
// lookups of group j + 1 run while the wgmmas of group j are in flight (wgmma.wait_group 1). The
// main loop has no branch (warps past the last strip dequantize the last strip again, into rows
// that are not stored): a branch per k step had kept the compiler from interleaving the lookups,
// and removing it took 4096x28672 at M = 16 from 37.8 to 30.3 µs (H100). Two barriers per
// k-tile: one publishes the stage, the other (after the tile's first wgmma group has retired the
// previous tile's last one) frees the previous stage for the next cp.async, so the tensor cores
// always have a wgmma queued.
//
// X tile in shared memory: K-major ("each X row contiguous in k"), 128-byte swizzle, the layout
// wgmma's descriptor mode 1 expects: two 64-wide k halves of [MT rows × 128 B] each; 16-byte chunk
// c (k = 8c..8c+7 of the half) of row r sits at r · 128 + ((c ^ (r % 8)) · 16). Rows are 128 B
// apart, 8-row groups 1024 B apart (SBO), every half 1024-aligned; the descriptor of k step kk
// starts at half kk / 4 plus 32 · (kk % 4) bytes (the swizzle is applied to the address bits, so
// advancing inside the 128-byte row is how a k16 slice of a swizzled atom is addressed). Writes of
// 8 consecutive threads (one row, 8 chunks) hit 8 distinct 16-byte bank groups: no conflicts.
#include "kernels/lut_gemm_tc.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/arrival.cuh"
#include "kernels/lut_gemm_device.cuh"

namespace flute::lut {
namespace {

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
};

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
  // 3.27-3.30 ms; session 28).
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
  static constexpr bool kWideTable = kBits != 3 && kMT != 64;
  static constexpr int kTableBytes = kWideTable ? kWideTableBytes : TableBytes<kBits>();
  static_assert(!kWideTable || kStages * kWStageBytes + (kMT <= 32 ? kMT * 64 * 4 : 0) <= kWideTableBytes / 2,
                "W stages and the deferred norm's sums must fit the table rows");
  // W tile (stage s, warp w) starts (s * kWarps + w) * kWTileStride bytes into the W region;
  // byte o of a tile lies at (o / 128) * 256 + o % 128 from there when wide (WOffset).
  static constexpr int kWTileStride = kWideTable ? 2 * kTileBytes : kTileBytes;
  // (+ [kMT][64] floats for MT <= 32: the deferred norm's sums of squares, copied into shared
  // memory with the first X stage: kAsyncSumsqCols)
  // (With the wide table those sums live in the table rows' second halves, after the W stages:
  // 28 / 32 KB of the 32 at MT = 16 / 32. Kept out of kSmemBytes, they leave the L1 cache its
  // size: at MT = 32 another 8 KB had shrunk it to 28 KB for 2 blocks per SM, and the group
  // scales' loads (one 128-byte line per row and block, 32 KB per SM at K > 8192) missed.)
  static constexpr bool kSumsqInTable = kMT <= 32 && kBits != 3;  // kWideTable at MT <= 32
  static constexpr int kSumsqBytes = kMT <= 32 ? kMT * 64 * 4 : 0;
  static constexpr int kNormBytes = (1 + kWarps) * kMT * 4 + (kSumsqInTable ? 0 : kSumsqBytes);
  // + 1024: the X stages must start 1024-aligned (the 128-byte swizzle pattern repeats every
  // 8 rows of 128 B and is computed from address bits), and dynamic shared memory is only
  // guaranteed 16-byte aligned.
  // + the fused norms' scratch (TcLutGemmFusedKernel): the deferred norm's kMT row factors and
  // the residual epilogue's [8 warps][kMT] strip sums (dynamic, so that the plain kernel
  // compiles exactly as without them).
  static constexpr int kSmemBytes =
      1024 + kStages * kXStageBytes + (kWideTable ? 0 : kStages * kWStageBytes) + kTableBytes + kNormBytes;
  // Byte o of a W tile from the tile's start (o a multiple of 16 below 128 · (o / 128 + 1)).
  static __device__ __forceinline__ int WOffset(int o) { return kWideTable ? (o >> 7) * 256 + (o & 127) : o; }
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

// D[64 x MT] += A[64 x 16] (registers: this warp's 16 rows, mma.m16n8k16 A layout) ·
// B[16 x MT] (shared memory, K-major, descriptor). d: MT / 2 floats per thread; d[4i + c] is
// row 16 · (warp % 4) + g + 8 · (c >> 1), column 8i + 2q + (c & 1) (g = lane / 4, q = lane % 4).
// scale-d = 1 (accumulate), A and B unscaled and unnegated, B not transposed.
template <typename T, int kN>
__device__ __forceinline__ void Wgmma(float* d, const uint32_t* a, uint64_t desc_b);
// The MT = 16 wgmma with scale-d as a template argument: kAccumulate = false computes D = A · B
// (the previous contents of d are ignored), the first k step of a commit group in the
// scale-after-the-sums path (kFold).
template <typename T, bool kAccumulate>
__device__ __forceinline__ void WgmmaN16(float* d, const uint32_t* a, uint64_t desc_b) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16\n"
        "{%0, %1, %2, %3, %4, %5, %6, %7},\n"
        "{%8, %9, %10, %11}, %12, %13, 1, 1, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(kAccumulate ? 1 : 0));
  } else {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16\n"
        "{%0, %1, %2, %3, %4, %5, %6, %7},\n"
        "{%8, %9, %10, %11}, %12, %13, 1, 1, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(kAccumulate ? 1 : 0));
  }
}

template <>
__device__ __forceinline__ void Wgmma<__half, 16>(float* d, const uint32_t* a, uint64_t desc_b) {
  WgmmaN16<__half, true>(d, a, desc_b);
}
template <>
__device__ __forceinline__ void Wgmma<__nv_bfloat16, 16>(float* d, const uint32_t* a, uint64_t desc_b) {
  WgmmaN16<__nv_bfloat16, true>(d, a, desc_b);
}
template <>
__device__ __forceinline__ void Wgmma<__half, 32>(float* d, const uint32_t* a, uint64_t desc_b) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16\n"
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15},\n"
      "{%16, %17, %18, %19}, %20, 1, 1, 1, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
template <>
__device__ __forceinline__ void Wgmma<__nv_bfloat16, 32>(float* d, const uint32_t* a, uint64_t desc_b) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16\n"
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15},\n"
      "{%16, %17, %18, %19}, %20, 1, 1, 1, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
template <>
__device__ __forceinline__ void Wgmma<__half, 64>(float* d, const uint32_t* a, uint64_t desc_b) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16\n"
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,\n"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31},\n"
      "{%32, %33, %34, %35}, %36, 1, 1, 1, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
template <>
__device__ __forceinline__ void Wgmma<__nv_bfloat16, 64>(float* d, const uint32_t* a, uint64_t desc_b) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16\n"
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,\n"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31},\n"
      "{%32, %33, %34, %35}, %36, 1, 1, 1, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
template <>
__device__ __forceinline__ void Wgmma<__half, 128>(float* d, const uint32_t* a, uint64_t desc_b) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16\n"
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,\n"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,\n"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,\n"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63},\n"
      "{%64, %65, %66, %67}, %68, 1, 1, 1, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
template <>
__device__ __forceinline__ void Wgmma<__nv_bfloat16, 128>(float* d, const uint32_t* a, uint64_t desc_b) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16\n"
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,\n"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,\n"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,\n"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63},\n"
      "{%64, %65, %66, %67}, %68, 1, 1, 1, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

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

// One block's share of the work: k-tiles [kt_begin, kt_begin + num_iters) of output tile
// (m_tile, col_block), piece `split` of the `splits` that cover the tile (1: the whole tile).
struct TcSegment {
  int m_tile, col_block, split, splits, kt_begin, num_iters;
};

// Classic split-K: block b = (column block, split, m tile), m tile fastest.
__device__ __forceinline__ TcSegment ClassicSegment(const TcArgs& args) {
  TcSegment s;
  s.m_tile = blockIdx.x % args.num_m_tiles;
  const int rest = blockIdx.x / args.num_m_tiles;
  s.split = rest % args.splits;
  s.col_block = rest / args.splits;
  s.splits = args.splits;
  const int num_ktiles = args.k / kTileK;
  s.kt_begin = s.split * args.ktiles_per_split;
  s.num_iters = min(num_ktiles, s.kt_begin + args.ktiles_per_split) - s.kt_begin;
  return s;
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

// Main-loop variants, a template argument of the kernels (each its own instances):
//   kPlainLoop: the group scale on the dequantized weights (HMUL2); at MT = 64 the scales of
//     G < 128 by 4 loads per row and k-tile (those instances serve G >= 128 calls);
//   kFoldLoop (MT = 16, G = 64): the scales applied to fp32 sums (kFold below);
//   kSmallGroupLoop (MT = 64, G < 128): kPlainLoop with one scale load per row and k-tile;
//   kTileGroupLoop (MT = 32, G >= 128): kPlainLoop knowing that a k-tile has one group, so each
//     row's scale is loaded and converted to T once per k-tile, not once per quarter.
enum TcLoop : int { kPlainLoop = 0, kFoldLoop = 1, kSmallGroupLoop = 2, kTileGroupLoop = 3 };

// One segment: the pipeline over its k-tiles, then its tile's store, or its partial and, for the
// last piece to arrive, the reduction and store. first: the block's first segment, which also
// signals PDL dependents, builds the pair table and waits for the previous kernel.
template <typename T, int kBits, int kMT, int kGroup, bool kFused, int kLoop, typename Segment>
__device__ __forceinline__ void TcLutGemmSegment(const TcArgs& args, const TcNormArgs& norm, const Segment& seg,
                                                 bool first) {
  using C = TcConfig<kBits, kMT>;
  using T2 = typename Act<T>::T2;
  constexpr int kAcc = kMT / 2;  // fp32 accumulators per thread
  constexpr bool kFold = kLoop == kFoldLoop;
  static_assert(!kFold || (kMT == 16 && kGroup == 4), "kFold: MT = 16, two commit groups per k-tile");
  static_assert(kLoop != kSmallGroupLoop || kMT == 64, "kSmallGroupLoop: MT = 64 only");
  static_assert(kLoop != kTileGroupLoop || kMT == 32, "kTileGroupLoop: MT = 32 only");
  constexpr bool kTileGroup = kLoop == kTileGroupLoop;
  // 4 scale loads per row and k-tile at G < 128 (kPlainLoop at MT = 64; see fetch_scales)
  constexpr bool kScalarScales = kMT == 64 && kLoop == kPlainLoop;
  // Stream-K (MT = 128 only) runs this body in a loop over segments. What the compiler hoists
  // out of that loop (addresses from the thread index and shared memory base, the segment's
  // fields) stays in registers through the main loop, so there the thread index and shared
  // memory base pass through an opaque zero (an asm volatile, never hoisted) and seg is
  // volatile, read where used. (The same loop at MT = 16 / 32 / 64 went past the 128 registers
  // of 2 blocks per SM even so: spills, and 4096x28672 at M = 16 29.9 -> 34.3 us on an H200.)
  const int opaque = kMT == 128 ? OpaqueZero() : 0;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* smem_base = smem_raw + opaque;
  unsigned char* smem = smem_base + ((1024 - (SmemAddr(smem_base) & 1023)) & 1023);
  unsigned char* s_x = smem;                                 // [stages][2 k halves][MT][128 B]
  unsigned char* s_after_x = s_x + C::kStages * C::kXStageBytes;
  // Narrow table: [stages][8 warps][tile bytes] of W, then the table. Wide: the table's 256
  // entry rows, the W tiles in their second halves (kWTileStride, WOffset).
  unsigned char* s_w = C::kWideTable ? s_after_x + 128 : s_after_x;
  uint32_t* s_table =
      reinterpret_cast<uint32_t*>(C::kWideTable ? s_after_x : s_after_x + C::kStages * C::kWStageBytes);

  const int tid = threadIdx.x + opaque, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, q = lane & 3;
  const int num_ktiles = args.k / kTileK;
  const int kt_begin = seg.kt_begin, num_iters = seg.num_iters;
  const bool early_weights = args.early_weights && first;
  const int m0 = seg.m_tile * kMT;
  const int strip = seg.col_block * kWarps + warp;
  // Warps past the last strip (N not a multiple of 128) dequantize the last strip again (so the
  // main loop has no branch: a branch per k step keeps the compiler from interleaving the
  // lookups of a group) into accumulator rows that are never stored (row i of a wgmma's D
  // depends on row i of A only).
  const bool warp_active = strip < args.n / 16;
  const int load_strip = min(strip, args.n / 16 - 1);
  const T* x = static_cast<const T*>(args.x);
  const int valid_rows = min(kMT, args.m - m0);
  const int groups_per_row = args.k / args.group_size;
  const int log2_group = __ffs(args.group_size) - 1;

  auto load_w = [&](int kt, int buf) {
    const unsigned char* src = args.packed + (static_cast<int64_t>(load_strip) * num_ktiles + kt) * C::kTileBytes;
    unsigned char* dst = s_w + (buf * kWarps + warp) * C::kWTileStride;
    CpAsync16(dst + C::WOffset(16 * lane), src + 16 * lane);
    if (kBits == 4) CpAsync16(dst + C::WOffset(512 + 16 * lane), src + 512 + 16 * lane);
    if (kBits == 3) CpAsync8(dst + 512 + 8 * lane, src + 512 + 8 * lane);
  };
  // X rows m0 .. m0 + MT - 1, k = kt * 128 ..: 16 chunks of 16 B per row, 16 threads per row
  // (coalesced 256-byte reads); rows >= M are zero-filled (their outputs are not stored).
  auto load_x = [&](int kt, int buf) {
    unsigned char* dst = s_x + buf * C::kXStageBytes;
#pragma unroll
    for (int i = 0; i < kMT * 16 / kThreads; ++i) {
      const int c = tid + i * kThreads;
      const int r = c >> 4, chunk = c & 15;
      const bool valid = r < valid_rows;
      const T* src = x + static_cast<int64_t>(m0 + (valid ? r : 0)) * args.k + kt * kTileK + chunk * 8;
      const int offset = (chunk >> 3) * C::kXHalfBytes + r * 128 + (((chunk & 7) ^ (r & 7)) << 4);
      CpAsync16ZeroFill(dst + offset, src, valid ? 16 : 0);
    }
  };
  // This lane's scales for k-tile kt: s[h] of row g and s[4 + h] of row g + 8 for the 32-wide
  // quarter h of the tile (one group per quarter at G = 32; the same group repeated above).
  const __half* scale_lo = args.scales + static_cast<int64_t>(load_strip * 16 + g) * groups_per_row;
  const __half* scale_hi = scale_lo + 8 * groups_per_row;
  // At G = 64 and 32 a row's groups of one k-tile are 4 / 8 contiguous bytes at group
  // kt * 128 / G, aligned to their size (a row holds K / G groups, K a multiple of 128; the
  // launcher requires 8-byte aligned scales there): one load per row rather than 4. H100, same
  // run, against 4 loads: G = 64 and 32 at M = 16-128 5-26 % faster on the 8 LLaMA shapes, the
  // 8B W4 decode step 1 % faster at batches 8-32 (G = 128) and 3-13 % (G = 64)
  // (bench/results/ab-2026-11-26-h100/session18/). At MT = 64 the G >= 128 calls were 1-5 %
  // slower with it in the same instance (the code of the other branches changes its schedule;
  // M = 64 on 4096x4096 is only ~3 % ahead of cuBLAS), so there G < 128 calls run their own
  // instances (kSmallGroupLoop) and the others keep the 4 loads of before (kScalarScales).
  auto fetch_scales = [&](int kt, __half* s) {
    if (kTileGroup) {  // s[0] (row g) and s[4] (row g + 8) only: the body reads no others
      const int grp = (kt * kTileK) >> log2_group;
      s[0] = __ldg(scale_lo + grp);
      s[4] = __ldg(scale_hi + grp);
    } else if (args.group_size >= kTileK) {
      const int grp = (kt * kTileK) >> log2_group;
      s[0] = s[1] = s[2] = s[3] = __ldg(scale_lo + grp);
      s[4] = s[5] = s[6] = s[7] = __ldg(scale_hi + grp);
    } else if (kScalarScales) {
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const int grp = (kt * kTileK + 32 * h) >> log2_group;
        s[h] = __ldg(scale_lo + grp);
        s[4 + h] = __ldg(scale_hi + grp);
      }
    } else if (args.group_size == 64) {
      const __half2 lo = __ldg(reinterpret_cast<const __half2*>(scale_lo) + kt);
      const __half2 hi = __ldg(reinterpret_cast<const __half2*>(scale_hi) + kt);
      s[0] = s[1] = __low2half(lo);
      s[2] = s[3] = __high2half(lo);
      s[4] = s[5] = __low2half(hi);
      s[6] = s[7] = __high2half(hi);
    } else {  // G = 32: s[h] = group 4 kt + h of row g, s[4 + h] of row g + 8
      const uint2 lo = __ldg(reinterpret_cast<const uint2*>(scale_lo) + kt);
      const uint2 hi = __ldg(reinterpret_cast<const uint2*>(scale_hi) + kt);
      const uint32_t words[4] = {lo.x, lo.y, hi.x, hi.y};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const __half2 pair = *reinterpret_cast<const __half2*>(&words[w]);
        s[2 * w] = __low2half(pair);
        s[2 * w + 1] = __high2half(pair);
      }
    }
  };

  // Prologue. With PDL the next kernel may be scheduled at once; the first stage's codes (with
  // early_weights: the codes of every prologue stage, in one cp.async group), the pair table and
  // the first scales load before the wait for the previous kernel, X after it. Either way the
  // main loop's CpAsyncWait<kStages - 2> finds stage it complete: without early weights the
  // prologue commits kStages - 1 groups, group s = stage s; with them one more group comes
  // first (all the codes), and group s + 1 = stage s's X.
  if (first) LaunchDependents();
  if (early_weights) {
#pragma unroll
    for (int s = 0; s < C::kStages - 1; ++s) {
      if (s < num_iters) load_w(kt_begin + s, s);
    }
    CpAsyncCommit();
  } else if (num_iters > 0) {
    load_w(kt_begin, 0);
  }
  if (first) BuildPairTable<T, kBits, C::kWideTable ? kWideRowBytes : 128>(args.table, s_table, tid);
  __half sc_cur[8], sc_next[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) sc_cur[i] = sc_next[i] = __float2half(0.0f);
  fetch_scales(kt_begin, sc_cur);
  if (first) GridDependencyWait();
  float* s_inv = reinterpret_cast<float*>(s_table) + C::kTableBytes / 4;  // [kMT]
  float* s_red = s_inv + kMT;                                              // [kWarps][kMT]
  // [kMT][k / 128] (MT <= 32); with the wide table in the rows' second halves after the W stages
  // (a 128-byte gap after every 128 bytes: kSumsqGap).
  constexpr int kSumsqGap = C::kSumsqInTable ? 128 : 0;
  float* s_sumsq = C::kSumsqInTable
                       ? reinterpret_cast<float*>(s_w + (C::kStages * C::kWStageBytes / 128) * kWideRowBytes)
                       : s_red + kWarps * kMT;
  // The deferred norm's sums of squares: at MT <= 32 (and k / 128 a multiple of 4, at most 64)
  // copied into shared memory with the first X stage and reduced after the main loop, so that
  // their round trip overlaps the pipeline's; else reduced here (one round trip before the loop).
  [[maybe_unused]] bool async_sumsq = false;
  if constexpr (kFused) {
    if (norm.deferred_sumsq != nullptr) {
      const int cols = args.k / kTileK;
      async_sumsq = kMT <= 32 && cols % 4 == 0 && cols <= 64;
      if (async_sumsq) {
        for (int c = tid; c < valid_rows * cols / 4; c += kThreads) {
          const int r = c / (cols / 4), j = 4 * (c % (cols / 4));
          CpAsync16(const_cast<float*>(GappedFloat<kSumsqGap>(s_sumsq, r * cols + j)),
                    norm.deferred_sumsq + static_cast<int64_t>(m0 + r) * cols + j);
        }
      }
    }
  }
  if (num_iters > 0) load_x(kt_begin, 0);
  CpAsyncCommit();
#pragma unroll
  for (int s = 1; s < C::kStages - 1; ++s) {
    if (s < num_iters) {
      if (!early_weights) load_w(kt_begin + s, s);
      load_x(kt_begin + s, s);
    }
    CpAsyncCommit();  // kStages - 1 groups (+1 with early weights), empty ones included
  }
  // The deferred norm's factors, while the prologue's copies are in flight (the sums of squares
  // come from the previous kernel: after the wait). Published by the main loop's first barrier.
  if constexpr (kFused) {
    if (norm.deferred_sumsq != nullptr && !async_sumsq) {
      DeferredNormFactors<kMT>(norm.deferred_sumsq, m0, valid_rows, args.k, norm.norm_eps, s_inv);
    }
  }

  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) {
    acc[i] = 0.0f;
    FenceOperand(acc[i]);
  }
  // Narrow: this lane's table copy as one address (LaneTable). Wide: the table base (uniform)
  // and the lane's copy bits, put together by each lookup's PRMT.
  [[maybe_unused]] uint32_t my_table = 0, table_base = 0, lane_bits = 0;
  if constexpr (C::kWideTable) {
    table_base = SmemAddr(s_table);
    lane_bits = WideLaneBits<kBits>(lane);
  } else {
    my_table = LaneTable<kBits>(s_table, lane);
  }
  const uint32_t s_x_addr = SmemAddr(s_x);
  // kFold: the unscaled sums of a k-tile's commit group grp go to part[grp] (its first wgmma
  // overwrites them) and are added to acc times their group scales once the group has retired:
  // the first after the second group's wgmma.wait_group 1, the second after a wait_group 0 at
  // the end of the k-tile. (Folding the second group in the next k-tile, after its first
  // group's wait_group 1, would keep the tensor cores fed through the k-tile boundary, but
  // ptxas cannot follow wgmma accumulators read across a loop's back edge and serializes every
  // wgmma then: C7514.)
  [[maybe_unused]] float part[2][kAcc];
  if constexpr (kFold) {
#pragma unroll
    for (int i = 0; i < kAcc; ++i) {
      part[0][i] = part[1][i] = 0.0f;
      FenceOperand(part[0][i]);
      FenceOperand(part[1][i]);
    }
  }

  uint32_t a[2][kGroup][4];
  // At MT = 32 and 64 the main loop refills a stage from running sources (this lane's codes and
  // its X chunks: load_w's and load_x's addresses and offsets, advanced by one k-tile per
  // iteration) and a rotating stage index, rather than from addresses recomputed from the k-tile
  // (64-bit products and a modulo by 3 per refill). H100, bf16, the 8 playbook shapes against the
  // recomputed addresses in the same call (bench/results/ab-2026-11-26-h100/session21/
  // kbench-m32.txt, kbench-m64*.txt): M = 17-32 a median 2.3 % faster (2-bit 5-8 %, 3-bit
  // 1-4 %, 4-bit G128 -1 to +2.5 %, 4-bit G64 2-4 % slower on 28672x8192 only); M = 33-64 a
  // median 1.3 % faster (3-bit up to 5 %, 4-bit G128 -3.5 to +1 %). 8B W4 decode step: batch
  // 24 3.78 / 3.79 -> 3.74 / 3.73 ms, batch 32 4.17 / 4.18 -> 4.14 / 4.11. At MT = 16 the same
  // was 2-5 % slower at 4 bits (W4 batch 16 3.19 -> 3.35 ms), so MT = 16 keeps the recomputed
  // addresses. MT = 128 (per Stream-K segment: the sources restart with each segment) since
  // session 32: its 8 X chunks per thread and stage had ~80 address instructions per refill,
  // where ncu put 23 % of the warp samples (4096x28672 at M = 512). H100, same call: kernel
  // alone at M = 128-512 even (new / old 0.97-1.03 outside noisy rows), the 8B W4 prefill of
  // 256 / 512 tokens (fused MT = 128 calls) 11.91 / 19.80 -> 11.44 / 18.90 ms; 194-202
  // registers plain, 243-252 fused, no spills.
  constexpr bool kRunning = kMT == 32 || kMT == 64 || kMT == 128;
  constexpr int kXChunks = kMT * 16 / kThreads;  // X chunks per thread and stage (2 or 4)
  [[maybe_unused]] const unsigned char* w_next = nullptr;
  [[maybe_unused]] const T* x_next[kXChunks];
  [[maybe_unused]] int x_off[kXChunks];
  [[maybe_unused]] bool x_valid[kXChunks];
  if constexpr (kRunning) {
    w_next = args.packed + (static_cast<int64_t>(load_strip) * num_ktiles + kt_begin + C::kStages - 1) * C::kTileBytes +
             16 * lane;
#pragma unroll
    for (int i = 0; i < kXChunks; ++i) {
      const int c = tid + i * kThreads;
      const int r = c >> 4, chunk = c & 15;
      x_valid[i] = r < valid_rows;
      x_next[i] = x + static_cast<int64_t>(m0 + (x_valid[i] ? r : 0)) * args.k + (kt_begin + C::kStages - 1) * kTileK +
                  chunk * 8;
      x_off[i] = (chunk >> 3) * C::kXHalfBytes + r * 128 + (((chunk & 7) ^ (r & 7)) << 4);
    }
  }
  [[maybe_unused]] int stage_next = C::kStages - 1, stage_cur = 0;  // (kRunning)
  for (int it = 0; it < num_iters; ++it) {
    // Stage it has landed (this thread's copies), is visible to the async proxy (wgmma), and
    // every thread's copies are done. The last wgmma of iteration it - 1 may still run.
    CpAsyncWait<C::kStages - 2>();
    FenceProxyAsyncShared();
    __syncthreads();
    if (it + 1 < num_iters) fetch_scales(kt_begin + it + 1, sc_next);  // used next iteration

    const int buf = kRunning ? stage_cur : it % C::kStages;
    uint32_t w[8], hw[2];
    {
      const unsigned char* wt = s_w + (buf * kWarps + warp) * C::kWTileStride;
      *reinterpret_cast<uint4*>(w) = *reinterpret_cast<const uint4*>(wt + C::WOffset(16 * lane));
      if (kBits == 4) *reinterpret_cast<uint4*>(w + 4) = *reinterpret_cast<const uint4*>(wt + C::WOffset(512 + 16 * lane));
      if (kBits == 3) *reinterpret_cast<uint2*>(hw) = *reinterpret_cast<const uint2*>(wt + 512 + 8 * lane);
    }
    T2 s_lo[4], s_hi[4];  // quarter h: row g, row g + 8 (not kFold)
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      if constexpr (kTileGroup) {  // one conversion per row (bf16: 2 HADD2.F32 + 1 F2FP, not 8 + 4-6)
        if (h == 0) {
          s_lo[0].x = s_lo[0].y = Act<T>::FromHalf(sc_cur[0]);
          s_hi[0].x = s_hi[0].y = Act<T>::FromHalf(sc_cur[4]);
        } else {
          s_lo[h] = s_lo[0];
          s_hi[h] = s_hi[0];
        }
      } else if constexpr (!kFold) {
        s_lo[h].x = s_lo[h].y = Act<T>::FromHalf(sc_cur[h]);
        s_hi[h].x = s_hi[h].y = Act<T>::FromHalf(sc_cur[4 + h]);
      }
    }
    const uint64_t desc0 = SwizzledKMajorDesc(s_x_addr + buf * C::kXStageBytes);

    // A double-buffered by groups of kGroup k16 steps: the lookups of group j + 1 (kGroup * 4
    // independent shared loads) run while the kGroup wgmmas of group j, issued back to back as
    // one commit group, are in flight.
    constexpr int kGroups = 8 / kGroup;
#pragma unroll
    for (int grp = 0; grp < kGroups; ++grp) {
      uint32_t(&ag)[kGroup][4] = a[grp & 1];
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        const int kk = grp * kGroup + j;
        if constexpr (C::kWideTable) {
          LookupPairsWide<kBits>(kk, w, lane_bits, table_base, ag[j]);
        } else {
          LookupPairs<kBits>(kk, w, hw, my_table, ag[j]);
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) {  // A register r: row g + 8 (r & 1), k quarter kk / 2
          if constexpr (!kFold) {
            T2 v = *reinterpret_cast<const T2*>(&ag[j][r]);
            v = __hmul2(v, (r & 1) ? s_hi[kk >> 1] : s_lo[kk >> 1]);
            ag[j][r] = *reinterpret_cast<uint32_t*>(&v);
          }
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) FenceOperand(ag[j][r]);
      }
      WgmmaFence();  // orders the A register writes above before the wgmmas read them
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        const int kk = grp * kGroup + j;
        // k step kk: k half kk / 4, 32 bytes per k16 step inside the 128-byte swizzled row
        // (descriptor addresses are in 16-byte units).
        const uint64_t desc = desc0 + static_cast<uint64_t>(((kk >> 2) * C::kXHalfBytes + (kk & 3) * 32) >> 4);
        if constexpr (kFold) {
          if (j == 0) {
            WgmmaN16<T, false>(part[grp], ag[j], desc);
          } else {
            WgmmaN16<T, true>(part[grp], ag[j], desc);
          }
        } else {
          Wgmma<T, kMT>(acc, ag[j], desc);
        }
      }
      WgmmaCommit();
      WgmmaWait<1>();  // group grp - 1 is done: its A buffer may be overwritten
      if constexpr (kFold) {
        if (grp == 1) FoldGroup<kAcc>(part[0], sc_cur[0], sc_cur[4], acc);
      }
      if (grp == 0) {
        // This warpgroup's wgmmas of iteration it - 1 are done; after the barrier both
        // warpgroups' are, so the stage they read, (it - 1) % kStages, is refilled, with
        // k-tile it + kStages - 1. Refilling here rather than at the top of the iteration keeps
        // a wgmma queued on the tensor cores through both barriers (no drain per k-tile).
        __syncthreads();
        const int next = it + C::kStages - 1;
        if (next < num_iters) {
          if constexpr (kRunning) {
            unsigned char* tile = s_w + (stage_next * kWarps + warp) * C::kWTileStride;
            CpAsync16(tile + C::WOffset(16 * lane), w_next);
            if (kBits == 4) CpAsync16(tile + C::WOffset(512 + 16 * lane), w_next + 512);
            if (kBits == 3) CpAsync8(tile + 512 + 8 * lane, w_next - 8 * lane + 512);
            unsigned char* xdst = s_x + stage_next * C::kXStageBytes;
#pragma unroll
            for (int i = 0; i < kXChunks; ++i) CpAsync16ZeroFill(xdst + x_off[i], x_next[i], x_valid[i] ? 16 : 0);
          } else {
            load_w(kt_begin + next, next % C::kStages);
            load_x(kt_begin + next, next % C::kStages);
          }
        }
        CpAsyncCommit();
      }
    }
    if constexpr (kFold) {
      WgmmaWait<0>();
      FoldGroup<kAcc>(part[1], sc_cur[2], sc_cur[6], acc);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) sc_cur[i] = sc_next[i];
    if constexpr (kRunning) {
      w_next += C::kTileBytes;
#pragma unroll
      for (int i = 0; i < kXChunks; ++i) x_next[i] += kTileK;
      stage_next = stage_next + 1 == C::kStages ? 0 : stage_next + 1;
      stage_cur = stage_cur + 1 == C::kStages ? 0 : stage_cur + 1;
    }
  }
  WgmmaWait<0>();
  CpAsyncWait<0>();
#pragma unroll
  for (int i = 0; i < kAcc; ++i) FenceOperand(acc[i]);
  [[maybe_unused]] ResidualOperands<kMT> residual_ops;
  if constexpr (kFused) {
    if (norm.residual != nullptr) {
      LoadResidualOperands<kMT>(norm, args.m, args.n, m0, strip, warp_active, &residual_ops);
    }
    if (async_sumsq) {  // (the main loop's barriers published the copies)
      DeferredNormFactors<kMT, true, kSumsqGap>(s_sumsq, m0, valid_rows, args.k, norm.norm_eps, s_inv);
      __syncthreads();
    }
  }

  // Epilogue. acc[4i + c]: n = strip * 16 + g + 8 * (c >> 1), m = m0 + 8i + 2q + (c & 1).
  // With SwiGLU, c and c + 2 are the gate and up rows of output feature strip * 8 + g.
  T* y = static_cast<T*>(args.y);
  auto store_y = [&]() {
    if constexpr (kFused) {
      if (norm.deferred_sumsq != nullptr) {
#pragma unroll
        for (int i = 0; i < kAcc; ++i) acc[i] *= s_inv[8 * (i / 4) + 2 * q + (i & 1)];
      }
    }
    if (args.swiglu) {
#pragma unroll
      for (int i = 0; i < kMT / 8; ++i) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int m = m0 + 8 * i + 2 * q + c;
          if (m < args.m) {
            y[static_cast<int64_t>(m) * (args.n / 2) + strip * 8 + g] = SwiGluOfSums<T>(acc[4 * i + c], acc[4 * i + c + 2]);
          }
        }
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < kMT / 8; ++i) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int n = strip * 16 + g + 8 * (c >> 1), m = m0 + 8 * i + 2 * q + (c & 1);
        if (m < args.m) y[static_cast<int64_t>(m) * args.n + n] = Act<T>::FromFloat(acc[4 * i + c]);
      }
    }
  };
  if constexpr (kFused) {
    if (norm.residual != nullptr && seg.splits == 1) {
      ResidualEpilogue<T, kMT>(acc, residual_ops, norm, args.m, args.n, m0, strip, seg.col_block, warp_active, s_red);
      return;
    }
  }
  if (seg.splits == 1) {
    if (warp_active) store_y();
    return;
  }
  // Split K. own_reduce: this split's partials in fragment order (FragmentSplitFloats: one
  // 16-byte store per 8-row group); else [splits][M][N] for SumPartialsInSplitOrder.
  const float* frag = nullptr;
  int64_t frag_split_stride = 0;
  if (args.own_reduce) {
    frag_split_stride = FragmentSplitFloats(args.m, args.n);
    frag = args.partials + FragmentTileOffset(args.m, args.n, seg.col_block, m0) + 4 * tid;
    if (warp_active) {
      float* mine = const_cast<float*>(frag) + seg.split * frag_split_stride;
#pragma unroll
      for (int i = 0; i < kMT / 8; ++i) {
        if (m0 + 8 * i < args.m) {
          __stcg(reinterpret_cast<float4*>(mine + i * kFragmentGroupFloats),
                 make_float4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]));
        }
      }
    }
  } else if (warp_active) {
    float* part = args.partials + static_cast<int64_t>(seg.split) * args.m * args.n;
#pragma unroll
    for (int i = 0; i < kMT / 8; ++i) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int n = strip * 16 + g + 8 * (c >> 1), m = m0 + 8 * i + 2 * q + (c & 1);
        if (m < args.m) __stcg(part + static_cast<int64_t>(m) * args.n + n, acc[4 * i + c]);
      }
    }
  }
  // Arrival: after the barrier one thread's acquire-release atomic publishes the whole block's
  // partial stores (the release is cumulative over the barrier, as in cooperative groups' grid
  // sync) and, for the last split, acquires the other splits' (one fence, not one per thread).
  __shared__ int s_is_last;
  __syncthreads();
  int* counter = args.counters + seg.col_block * args.num_m_tiles + seg.m_tile;
  if (tid == 0) s_is_last = AtomicAddAcqRelGpu(counter, 1) == seg.splits - 1;
  __syncthreads();
  if (!s_is_last) return;
  if (args.own_reduce) {
    // Each thread sums the partials of its own accumulator elements in split order from 0.0f
    // (bitwise SumPartialsInSplitOrder's order), its own split from registers at MT <= 32. The
    // 16-byte loads of kBatch splits are issued together: at MT = 16 all 8 splits of a decode
    // step's projection in one L2 round trip (64 floats per thread; two trips of 32 had left
    // the reducing blocks ~5 us behind the others). 32 floats at MT = 32 and 64 (more spilled).
    if (warp_active) {
      constexpr int kVecs = kAcc / 4;
      constexpr int kBatch = kAcc == 8 ? 8 : kAcc == 16 ? 2 : 1;
      constexpr bool kOwnFromRegisters = kAcc <= 16;
      const int valid_vecs = (valid_rows + 7) / 8;
      float own[kOwnFromRegisters ? kAcc : 1];
#pragma unroll
      for (int i = 0; i < kAcc; ++i) {
        if constexpr (kOwnFromRegisters) own[i] = acc[i];
        acc[i] = 0.0f;
      }
      for (int sp0 = 0; sp0 < seg.splits; sp0 += kBatch) {
        float4 v[kBatch][kVecs];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int sp = sp0 + b;
          const bool load = sp < seg.splits && !(kOwnFromRegisters && sp == seg.split);
          const float* part = frag + (load ? sp : 0) * frag_split_stride;
#pragma unroll
          for (int j = 0; j < kVecs; ++j) {
            v[b][j] = load && j < valid_vecs ? __ldcg(reinterpret_cast<const float4*>(part + j * kFragmentGroupFloats))
                                             : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          }
        }
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int sp = sp0 + b;
          if (sp >= seg.splits) continue;
#pragma unroll
          for (int j = 0; j < kVecs; ++j) {
            const float4 p = v[b][j];
            if constexpr (kOwnFromRegisters) {
              const bool mine = sp == seg.split;
              acc[4 * j] += mine ? own[4 * j] : p.x;
              acc[4 * j + 1] += mine ? own[4 * j + 1] : p.y;
              acc[4 * j + 2] += mine ? own[4 * j + 2] : p.z;
              acc[4 * j + 3] += mine ? own[4 * j + 3] : p.w;
            } else {
              acc[4 * j] += p.x;
              acc[4 * j + 1] += p.y;
              acc[4 * j + 2] += p.z;
              acc[4 * j + 3] += p.w;
            }
          }
        }
      }
      if constexpr (kFused) {
        if (norm.residual == nullptr) store_y();
      } else {
        store_y();
      }
    }
    if constexpr (kFused) {  // every thread: a barrier inside
      if (norm.residual != nullptr) {
        ResidualEpilogue<T, kMT>(acc, residual_ops, norm, args.m, args.n, m0, strip, seg.col_block, warp_active, s_red);
      }
    }
  } else {
    SumPartialsInSplitOrder<T>(args.partials, seg.splits, args.m, args.n, args.swiglu, m0, valid_rows, seg.col_block, y);
  }
  if (tid == 0) *counter = 0;  // ready for the next call
}


// The kernel's body: one segment (classic split-K), or with Stream-K (MT = 128) the block's
// segments in order (at most a tile's tail, whole tiles, and a tile's head). kFused: with the
// fused norms (TcLutGemmFusedKernel, bf16 only), so that the plain kernel compiles exactly as
// without them (with the fused code in one instance, batch 8-16 decode steps that did not use it
// were 2-3 % slower on the H100).
template <typename T, int kBits, int kMT, int kGroup, bool kFused, int kLoop>
__device__ __forceinline__ void TcLutGemmBody(const TcArgs& args, const TcNormArgs& norm) {
  const trace::Scope trace_scope(trace::kLutTensorCore, args.n, args.k);
  if constexpr (kMT != 128) {
    TcLutGemmSegment<T, kBits, kMT, kGroup, kFused, kLoop>(args, norm, ClassicSegment(args), true);
  } else {
    // (total and end are recomputed after each segment from an opaque zero: not live through it)
    const bool stream_k = args.splits == 0;
    const auto total = [&]() { return static_cast<int64_t>(StreamKTiles(args)) * (args.k / kTileK + OpaqueZero()); };
    volatile TcSegment seg;
    StoreSegment(stream_k ? StreamKSegment(args, blockIdx.x * total() / gridDim.x,
                                                (blockIdx.x + 1) * total() / gridDim.x)
                               : ClassicSegment(args),
                 &seg);
    for (bool first = true;; first = false) {
      TcLutGemmSegment<T, kBits, kMT, kGroup, kFused, kLoop>(args, norm, seg, first);
      if (!stream_k) return;
      const int num_ktiles = args.k / kTileK;
      const int64_t end = (blockIdx.x + 1) * total() / gridDim.x;
      const int64_t it = static_cast<int64_t>(seg.col_block * args.num_m_tiles + seg.m_tile) * num_ktiles +
                         seg.kt_begin + seg.num_iters;
      if (it >= end) return;
      __syncthreads();  // the next segment refills the stages (and scratch) this one used
      StoreSegment(StreamKSegment(args, it, end), &seg);
    }
  }
}

template <typename T, int kBits, int kMT, int kGroup, int kLoop>
__global__ void __launch_bounds__(kThreads, (TcConfig<kBits, kMT>::kMinBlocksPerSm))
TcLutGemmKernel(const TcArgs args) {
  TcLutGemmBody<T, kBits, kMT, kGroup, false, kLoop>(args, TcNormArgs{});
}

template <typename T, int kBits, int kMT, int kGroup, int kLoop>
__global__ void __launch_bounds__(kThreads, (TcConfig<kBits, kMT>::kMinBlocksPerSm))
TcLutGemmFusedKernel(const TcArgs args, const TcNormArgs norm) {
  TcLutGemmBody<T, kBits, kMT, kGroup, true, kLoop>(args, norm);
}

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

struct TcPlan {
  int mt = 64;  // rows of X per block: 64 for m <= 64, else 128
  int num_m_tiles = 0;
  int num_col_blocks = 0;
  int splits = 1;
  int ktiles_per_split = 0;
  int smem_bytes = 0;
  size_t counter_bytes = 0;  // workspace [0, counter_bytes): per-tile counters, then fp32 partials
  bool own_reduce = true;
  // Stream-K (TcArgs::stream_k): `grid` blocks share the k-tiles evenly, `splits` = the most
  // pieces any tile is cut into (the partials' slots).
  bool stream_k = false;
  int grid = 0;
};

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
    ApplyStreamK(params, sm_count, blocks_per_sm, sk_mode, &p);
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

template <typename Kernel, typename... Args>
cudaError_t LaunchTcKernel(Kernel kernel, int grid, int smem_bytes, bool pdl, cudaStream_t stream, const Args&... args) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (err != cudaSuccess) return err;
  if (pdl) {
    LaunchWithPdl(kernel, grid, kThreads, smem_bytes, stream, args...);
  } else {
    kernel<<<grid, kThreads, smem_bytes, stream>>>(args...);
  }
  return cudaGetLastError();
}

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

template <typename T, int kBits, int kMT, int kLoop>
cudaError_t LaunchTcLoopInstance(const TcArgs& args, const TcNormArgs& norm, const TcPlan& p, bool pdl,
                                 cudaStream_t stream) {
  const int grid = p.stream_k ? p.grid : p.num_col_blocks * p.splits * p.num_m_tiles;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {  // the fused kernel: bf16 only
    if (norm.any()) {
      return LaunchTcKernel(TcLutGemmFusedKernel<T, kBits, kMT, TcGroupFor(kMT), kLoop>, grid, p.smem_bytes, pdl,
                            stream, args, norm);
    }
  }
  return LaunchTcKernel(TcLutGemmKernel<T, kBits, kMT, TcGroupFor(kMT), kLoop>, grid, p.smem_bytes, pdl, stream,
                        args);
}

template <typename T, int kBits, int kMT>
cudaError_t LaunchTcInstance(const TcArgs& args, const TcNormArgs& norm, const TcPlan& p, bool pdl,
                             cudaStream_t stream) {
  if constexpr (kMT == 16) {
    if (args.group_size == 64 && FoldFromEnv()) return LaunchTcLoopInstance<T, kBits, kMT, kFoldLoop>(args, norm, p, pdl, stream);
  }
  if constexpr (kMT == 64) {
    if (args.group_size < kTileK) return LaunchTcLoopInstance<T, kBits, kMT, kSmallGroupLoop>(args, norm, p, pdl, stream);
  }
  if constexpr (kMT == 32) {
    if (args.group_size >= kTileK && TileGroupFromEnv()) {
      return LaunchTcLoopInstance<T, kBits, kMT, kTileGroupLoop>(args, norm, p, pdl, stream);
    }
  }
  return LaunchTcLoopInstance<T, kBits, kMT, kPlainLoop>(args, norm, p, pdl, stream);
}

template <typename T, int kBits>
cudaError_t LaunchTcForBits(const TcArgs& args, const TcNormArgs& norm, const TcPlan& p, bool pdl, cudaStream_t stream) {
  switch (p.mt) {
    case 16: return LaunchTcInstance<T, kBits, 16>(args, norm, p, pdl, stream);
    case 32: return LaunchTcInstance<T, kBits, 32>(args, norm, p, pdl, stream);
    case 64: return LaunchTcInstance<T, kBits, 64>(args, norm, p, pdl, stream);
    default: return LaunchTcInstance<T, kBits, 128>(args, norm, p, pdl, stream);
  }
}

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
  args.partials = plan->splits > 1
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
FLUTE_TRACE_SETTER(SetBufferLutTensorCore)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
