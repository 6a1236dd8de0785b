// The 16-row LUT-GEMM: plain calls of 9-16 rows on matrices of k = 2048 or 4096. See
// lut_gemm_rows16.h.
//
// Why: at 9-16 rows the tensor-core kernel's dequantize rate caps it at ~74 % of the copy
// bandwidth, and the strip kernel (M <= 8) cannot keep 16 rows of X in shared memory beside its
// stages (16 x 4096 x 2 = 128 KB at k = 4096). Here X lives in registers instead: a block of 16
// warps runs persistent strips (16 output features x all of k) like the strip kernel, the 16
// warps splitting k, so warp w always multiplies the same k range (k / 16 = 128 or 256 values)
// of every strip. Its B fragments of all 16 rows (mma.m16n8k16: two n8 halves of X) for that
// range are loaded once per block into 32 or 64 registers (X copied once into shared memory,
// then ldmatrix; that region then holds the strips' partial sums), so the stages carry only
// codes and scales, and the main loop reads no X from shared memory.
//
// Work: one block per SM, strips blockIdx.x, blockIdx.x + grid, ... A stage is 16 consecutive
// k-tiles of one strip (one per warp: warp w takes tile 16 j + w of the strip's stage j), k / 2048
// stages per strip, with the 16 rows' scales for its k range (cp.async, kStages deep). The
// weights never depend on the previous kernel, so every prologue stage loads before the grid
// dependency wait; X (that kernel's output) after it. At the end of a strip each warp leaves its
// fp32 partials (16 features x 16 rows) in shared memory and the block adds them in warp order:
// a summation order fixed by (n, k), so each row's bits are the same for every m in 9-16.
#include "kernels/lut_gemm_rows16.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "kernels/lut_gemm_device.cuh"

namespace flute::lut {
namespace {

constexpr int kR16Warps = 16;
constexpr int kR16Threads = kR16Warps * 32;
constexpr int kR16Rows = 16;  // rows of X (two mma n8 halves)
constexpr int kStripRows = 16;
constexpr int kRedPitch = 20;  // floats per (warp, row) of partials: 16 features + 4 (banks)
// Pipeline depth: 3 stages of 16 KB (4-bit) fit beside X at every G (4 only at G >= 128, and were
// no faster: H100, 4096x28672 M = 16 28.6 us at both, 33.0 at 2).
constexpr int kStages = 3;

struct Rows16Args {
  const void* x;          // [m, k]
  const uint8_t* packed;  // strip-major packed tiles (lut_format.h)
  const __half* scales;   // [n, k / G]
  const float* table;     // [2^bits]
  void* y;                // [m, n] (swiglu: [m, n / 2])
  int m, n, k;
  int log2_group;
  int strips;             // n / 16
  bool swiglu;            // rows 0-7 of a strip gate, 8-15 up (the strip kernel's layout)
  int stage_bytes;
  int sc_offset;          // bytes from a stage's start to its scales [16 rows][sc_row_bytes]
  int sc_row_bytes;       // 2 * 2048 / G
  int red_offset;         // bytes from the start of shared memory to X, then the partials
};

int TableBytesFor(int bits) { return bits == 2 ? TableBytes<2>() : TableBytes<4>(); }
int StageCodeBytes(int bits) { return kR16Warps * 256 * bits; }
int ScaleRowBytes(int group_size) { return 2 * kR16Warps * kTileK / group_size; }
int StageBytes(int bits, int group_size) { return StageCodeBytes(bits) + kStripRows * ScaleRowBytes(group_size); }
int RedBytes() { return 2 * kR16Warps * kR16Rows * kRedPitch * 4; }
// X copied in [16][k] (16-byte chunks swizzled by row: ldmatrix without bank conflicts), then the
// partials in the same bytes.
int XBytes(int k) { return kR16Rows * k * 2; }
// 4 bits: the wide pair table (entry rows of 256 bytes: the lookup's offset is one PRMT, where the
// narrow table's takes a PRMT and an IMAD; 32 instructions fewer per tile), whose rows' second
// halves hold the stages' codes (stage b in those of rows 128 b .. 128 b + 127, rows 256-383 past
// the table's) and the first halves of rows 256-383 the stages' scales (stage b's from row
// 256 + 16 b): kWideRegionBytes in all, then X. 2 bits: the narrow quad table, then the stages
// (codes, then scales), then X.
constexpr int kWideRegionBytes = (kStages * kR16Warps * 256 * 4 / 128) * kWideRowBytes;
static_assert(kWideRegionBytes >= kWideTableBytes, "the wide table's rows");
int StagesRegionBytes(int bits, int group_size) {
  return bits == 4 ? kWideRegionBytes : TableBytesFor(bits) + kStages * StageBytes(bits, group_size);
}
int SmemBytes(int bits, int group_size, int k) { return StagesRegionBytes(bits, group_size) + std::max(XBytes(k), RedBytes()); }

__device__ __forceinline__ void CpAsync16OrZero(void* dst, const void* src, bool copy) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(dst)), "l"(src), "r"(copy ? 16 : 0));
}

// One warp's 16 x 128 tile against the 16 rows of X: xb[kk][h][0..1] are the B fragments of
// sub-tile kk for rows 8h..8h+7. Per scale group (kSubs sub-tiles) the raw table values go into
// the MMAs, summed in fp32 from zero, and the sums are multiplied by the rows' scales into acc
// (acc[h][0..1]: feature g, acc[h][2..3]: feature g + 8; rows 8h + 2q + {0, 1}), as the strip
// kernel does (TileMmasFolded). kWide: the wide pair table (table_base, lane_bits), else the
// narrow one (table: this lane's copy).
template <typename T, int kBits, int kSubs, bool kWide>
__device__ __forceinline__ void TileMmasRows16(const uint32_t* w, uint32_t table, uint32_t table_base,
                                               uint32_t lane_bits, const uint32_t (*xb)[2][2], const __half* sc_lo,
                                               const __half* sc_hi, float (*acc)[4]) {
#pragma unroll
  for (int j = 0; j < 8 / kSubs; ++j) {
    float c[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
    for (int kk = j * kSubs; kk < (j + 1) * kSubs; ++kk) {
      uint32_t a[4];
      if constexpr (kWide) {
        LookupPairsWide<kBits>(kk, w, lane_bits, table_base, a);
      } else {
        LookupPairs<kBits>(kk, w, table, a);
      }
      Mma<T>(c[0], a, xb[kk][0][0], xb[kk][0][1]);
      Mma<T>(c[1], a, xb[kk][1][0], xb[kk][1][1]);
    }
    const float f_lo = __half2float(sc_lo[j]);
    const float f_hi = __half2float(sc_hi[j]);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      acc[h][0] = fmaf(c[h][0], f_lo, acc[h][0]);
      acc[h][1] = fmaf(c[h][1], f_lo, acc[h][1]);
      acc[h][2] = fmaf(c[h][2], f_hi, acc[h][2]);
      acc[h][3] = fmaf(c[h][3], f_hi, acc[h][3]);
    }
  }
}

// kTpw: k / 2048, the tiles (= stages) per warp and strip.
template <typename T, int kBits, int kTpw>
__global__ void __launch_bounds__(kR16Threads, 1) LutGemmRows16Kernel(const Rows16Args a) {
  constexpr int kTileBytes = 256 * kBits;
  constexpr int kStageCodeBytes = kR16Warps * kTileBytes;
  constexpr int kCodeCopies = kStageCodeBytes / 16;
  static_assert(kCodeCopies % kR16Threads == 0, "whole rounds of 16-byte copies");
  constexpr bool kWide = kBits == 4;
  extern __shared__ __align__(16) unsigned char smem[];
  uint32_t* s_table = reinterpret_cast<uint32_t*>(smem);
  float* s_red = reinterpret_cast<float*>(smem + a.red_offset);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int my_strips = (a.strips - 1 - static_cast<int>(blockIdx.x)) / static_cast<int>(gridDim.x) + 1;
  const int total = my_strips * kTpw;
  const int64_t scale_row_bytes_global = static_cast<int64_t>(a.k >> a.log2_group) * 2;
  // Scales: 16 rows x sc_row_bytes per stage, in 16-byte copies (sc_row_bytes >= 16 for G <= 256).
  const int sc_copies_per_row = a.sc_row_bytes >> 4;
  const int sc_row = tid / sc_copies_per_row, sc_part = tid - sc_row * sc_copies_per_row;
  const bool sc_copier = sc_row < kStripRows;
  // Shared-memory offsets (bytes from smem) of byte o of stage buf's codes, and of its scales
  // (o < 2048, a scale row never crossing 128 bytes): buf * stride + Off(o).
  constexpr int kCodeBufStride = kWide ? kStageCodeBytes / 128 * kWideRowBytes : 0;
  const int code_buf_stride = kWide ? kCodeBufStride : a.stage_bytes;
  const int sc_buf_stride = kWide ? 16 * kWideRowBytes : a.stage_bytes;
  auto code_off = [&](int o) {
    return kWide ? (o >> 7) * kWideRowBytes + 128 + (o & 127) : TableBytes<kBits>() + o;
  };
  auto sc_off = [&](int o) {
    return kWide ? kWideTableBytes + (o >> 7) * kWideRowBytes + (o & 127) : TableBytes<kBits>() + a.sc_offset + o;
  };
  // This thread's sources for the next stage to load (stage ld of the block: strip
  // blockIdx.x + (ld / kTpw) * gridDim.x, its k-stage ld % kTpw), advanced by constant steps: the
  // next k-stage of a strip is the next stage_code_bytes of codes and sc_row_bytes of each scale row;
  // the block's next strip is gridDim.x strips on.
  const unsigned char* ld_codes = a.packed + static_cast<int64_t>(blockIdx.x) * kTpw * kStageCodeBytes + 16 * tid;
  const unsigned char* ld_scales = reinterpret_cast<const unsigned char*>(a.scales) +
                                   (static_cast<int64_t>(blockIdx.x) * kStripRows + sc_row) * scale_row_bytes_global +
                                   16 * sc_part;
  const int64_t codes_strip_step = (static_cast<int64_t>(gridDim.x) - 1) * kTpw * kStageCodeBytes + kStageCodeBytes;
  const int64_t scales_strip_step =
      static_cast<int64_t>(gridDim.x) * kStripRows * scale_row_bytes_global - (kTpw - 1) * a.sc_row_bytes;
  unsigned char* const code_dst = smem + code_off(16 * tid);
  constexpr int kCopyStride = 16 * kR16Threads;  // bytes of codes between a thread's copies
  constexpr int kCopyDstStride = kWide ? kCopyStride / 128 * kWideRowBytes : kCopyStride;
  unsigned char* const sc_dst = smem + sc_off(sc_row * a.sc_row_bytes + 16 * sc_part);
  int ld_kstage = 0;
  auto issue = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kCodeCopies / kR16Threads; ++i) {
      CpAsync16(code_dst + buf * code_buf_stride + kCopyDstStride * i, ld_codes + kCopyStride * i);
    }
    if (sc_copier) CpAsync16(sc_dst + buf * sc_buf_stride, ld_scales);
    if (++ld_kstage == kTpw) {
      ld_kstage = 0;
      ld_codes += codes_strip_step;
      ld_scales += scales_strip_step;
    } else {
      ld_codes += kStageCodeBytes;
      ld_scales += a.sc_row_bytes;
    }
  };

  LaunchDependents();
  // Every prologue stage (weights only: no dependency on the previous kernel), one group each.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < total) issue(s);
    CpAsyncCommit();
  }
  if (tid < kThreads) BuildPairTable<T, kBits, kWide ? kWideRowBytes : 128>(a.table, s_table, tid);
  GridDependencyWait();

  // X [m][k] -> shared memory [16][k] (rows >= m zero; 16-byte chunk c of row r at chunk
  // c ^ (r & 7)), then this warp's B fragments, all 16 rows: stage j's tile 16 j + warp, sub-tile
  // kk, half h (rows 8h..8h+7) by one ldmatrix.x4 (matrices: rows 0-7 k 0-7, rows 0-7 k 8-15,
  // rows 8-15 k 0-7, rows 8-15 k 8-15 of the sub-tile).
  unsigned char* s_x = smem + a.red_offset;
  {
    const int row_chunks = a.k >> 3;
    const T* x = static_cast<const T*>(a.x);
    for (int i = tid; i < kR16Rows * row_chunks; i += kR16Threads) {
      const int r = i / row_chunks, c = i - r * row_chunks;
      const bool valid = r < a.m;
      CpAsync16OrZero(s_x + (r * row_chunks + (c ^ (r & 7))) * 16, x + static_cast<int64_t>(valid ? r : 0) * a.k + 8 * c,
                      valid);
    }
    CpAsyncCommit();
    CpAsyncWait<0>();
    __syncthreads();
  }
  uint32_t xb[kTpw][8][2][2];
  {
    const int row_chunks = a.k >> 3;
    const int mi = lane >> 3, row = (lane & 7) + 8 * (mi >> 1);
#pragma unroll
    for (int j = 0; j < kTpw; ++j) {
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) {
        const int chunk = (((kR16Warps * j + warp) * kTileK + 16 * kk) >> 3) + (mi & 1);
        LdMatrixX4(&xb[j][kk][0][0], s_x + (row * row_chunks + (chunk ^ (row & 7))) * 16);
      }
    }
  }

  auto sum_warps = [&](int parity, int mm, int feature) {
    const float* r = s_red + (parity * kR16Warps * kR16Rows + mm) * kRedPitch + feature;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kR16Warps; ++w) sum += r[w * kR16Rows * kRedPitch];
    return sum;
  };
  auto store_strip = [&](int parity, int strip) {
    T* y = static_cast<T*>(a.y);
    if (!a.swiglu) {
      if (tid >= kStripRows * a.m) return;
      const int feature = tid & (kStripRows - 1), mm = tid >> 4;
      y[static_cast<int64_t>(mm) * a.n + strip * kStripRows + feature] = Act<T>::FromFloat(sum_warps(parity, mm, feature));
    } else {
      if (tid >= 8 * a.m) return;
      const int feature = tid & 7, mm = tid >> 3;
      y[static_cast<int64_t>(mm) * (a.n / 2) + strip * 8 + feature] =
          SwiGluOfSums<T>(sum_warps(parity, mm, feature), sum_warps(parity, mm, feature + 8));
    }
  };

  [[maybe_unused]] uint32_t my_table = 0, table_base = 0, lane_bits = 0;
  if constexpr (kWide) {
    table_base = SmemAddr(s_table);
    lane_bits = WideLaneBits<kBits>(lane);
  } else {
    my_table = LaneTable<kBits>(s_table, lane);
  }
  // This lane's tile (its two 512-byte halves at 4 bits) and scales of rows g and g + 8, in stage 0.
  const int tile_off = code_off(warp * kTileBytes + 16 * lane);
  constexpr int kTileHalfStride = kWide ? 512 / 128 * kWideRowBytes : 512;
  const int sc_group0 = (warp * kTileK) >> a.log2_group;  // the tile's first group in the stage
  const int sc_lo_off = sc_off(g * a.sc_row_bytes) + 2 * sc_group0;
  const int sc_hi_off = sc_off((g + 8) * a.sc_row_bytes) + 2 * sc_group0;
  float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
  int parity = 0, pending_strip = -1, buf = 0, ld = kStages - 1, ld_buf = kStages - 1;
  for (int s_local = 0; s_local < my_strips; ++s_local) {
    const int strip = static_cast<int>(blockIdx.x) + s_local * static_cast<int>(gridDim.x);
#pragma unroll
    for (int j = 0; j < kTpw; ++j) {
      CpAsyncWait<kStages - 2>();
      __syncthreads();  // stage visible; the stage read last iteration free; (first) the table
      if (j == 0 && pending_strip >= 0) {
        store_strip(parity ^ 1, pending_strip);
        pending_strip = -1;
      }
      if (ld < total) issue(ld_buf);
      CpAsyncCommit();
      ++ld;
      if (++ld_buf == kStages) ld_buf = 0;

      const unsigned char* tile = smem + tile_off + buf * code_buf_stride;
      uint32_t w[8];
      *reinterpret_cast<uint4*>(w) = *reinterpret_cast<const uint4*>(tile);
      if (kBits == 4) *reinterpret_cast<uint4*>(w + 4) = *reinterpret_cast<const uint4*>(tile + kTileHalfStride);
      const __half* sc_lo = reinterpret_cast<const __half*>(smem + sc_lo_off + buf * sc_buf_stride);
      const __half* sc_hi = reinterpret_cast<const __half*>(smem + sc_hi_off + buf * sc_buf_stride);
      if (a.log2_group >= 7) {
        TileMmasRows16<T, kBits, 8, kWide>(w, my_table, table_base, lane_bits, xb[j], sc_lo, sc_hi, acc);
      } else if (a.log2_group == 6) {
        TileMmasRows16<T, kBits, 4, kWide>(w, my_table, table_base, lane_bits, xb[j], sc_lo, sc_hi, acc);
      } else {
        TileMmasRows16<T, kBits, 2, kWide>(w, my_table, table_base, lane_bits, xb[j], sc_lo, sc_hi, acc);
      }
      if (++buf == kStages) buf = 0;
    }
    // Strip done: this warp's partials, [parity][warp][row][feature].
    float* r = s_red + (parity * kR16Warps + warp) * kR16Rows * kRedPitch;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int mm = 8 * h + 2 * q + (c & 1), feature = g + 8 * (c >> 1);
        r[mm * kRedPitch + feature] = acc[h][c];
        acc[h][c] = 0.0f;
      }
    }
    pending_strip = strip;
    parity ^= 1;
  }
  CpAsyncWait<0>();
  __syncthreads();
  if (pending_strip >= 0) store_strip(parity ^ 1, pending_strip);
}

template <typename F>
auto WithKernel(ActivationType dtype, int bits, int tpw, F f) {
  if (dtype == ActivationType::kBFloat16) {
    if (bits == 2) return tpw == 1 ? f(LutGemmRows16Kernel<__nv_bfloat16, 2, 1>) : f(LutGemmRows16Kernel<__nv_bfloat16, 2, 2>);
    return tpw == 1 ? f(LutGemmRows16Kernel<__nv_bfloat16, 4, 1>) : f(LutGemmRows16Kernel<__nv_bfloat16, 4, 2>);
  }
  if (bits == 2) return tpw == 1 ? f(LutGemmRows16Kernel<__half, 2, 1>) : f(LutGemmRows16Kernel<__half, 2, 2>);
  return tpw == 1 ? f(LutGemmRows16Kernel<__half, 4, 1>) : f(LutGemmRows16Kernel<__half, 4, 2>);
}

}  // namespace

bool Rows16KernelApplies(const LutGemmParams& p) {
  const char* env = std::getenv("FLUTE_LUT_ROWS16");
  if (env != nullptr && std::string(env) == "off") return false;
  return p.m >= 9 && p.m <= 16 && (p.shape.k == 2048 || p.shape.k == 4096) && (p.shape.bits == 2 || p.shape.bits == 4) &&
         p.shape.n % kStripRows == 0 && p.shape.group_size <= 256 && reinterpret_cast<uintptr_t>(p.scales) % 16 == 0 &&
         p.split_k == 0 && !p.norm_prologue() && !p.residual_epilogue() && !p.tensor_core_fusion() &&
         !(p.pdl && p.early_weights);
}

int LaunchRows16Kernel(const LutGemmParams& p, CUstream_st* stream) {
  const LutShape& s = p.shape;
  Rows16Args a;
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
  a.stage_bytes = StageBytes(s.bits, s.group_size);
  a.sc_offset = StageCodeBytes(s.bits);
  a.sc_row_bytes = ScaleRowBytes(s.group_size);
  const int smem = SmemBytes(s.bits, s.group_size, static_cast<int>(s.k));
  a.red_offset = StagesRegionBytes(s.bits, s.group_size);
  const int grid = static_cast<int>(std::min<int64_t>(a.strips, DeviceSmCount()));
  return WithKernel(p.dtype, s.bits, static_cast<int>(s.k / 2048), [&](auto kernel) -> int {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return static_cast<int>(err);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(kR16Threads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = p.pdl ? 1 : 0;
    err = cudaLaunchKernelEx(&cfg, kernel, a);
    if (err != cudaSuccess) return static_cast<int>(err);
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace flute::lut
