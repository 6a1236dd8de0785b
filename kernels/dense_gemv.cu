// The dense strip GEMV: Y[m, n] = X[m, k] · W[n, k]ᵀ for 1 <= m <= 8, 16-bit X and W, fp32
// accumulation. See dense_gemv.h for the contract.
//
// At m <= 8 the product is a pure stream of W (2·n·k bytes; X and Y are under 1 % of it), so
// the design is about keeping enough W bytes in flight on every SM and touching each byte once:
//
// - Work: strips of 32 rows of W (two 16-row tiles), all of k. Persistent blocks of 8 warps
//   (grid = min(strips, resident blocks)) take strips blockIdx.x, blockIdx.x + grid, ...
// - Within a strip the 8 warps split k: a *batch* is 128 consecutive k (4 steps of 32), and warp
//   w takes batches w, w + 8, w + 16, ... (so a block's 8 warps read 2 KB runs of each row).
//   The split depends on k alone.
// - A lane (g = lane / 4, q = lane % 4) of a warp loads, per step, the 16 bytes k0 + 8q ..
//   k0 + 8q + 7 of rows g, g + 8, g + 16, g + 24 of the strip, and the same 16 bytes of X row g
//   (rows g >= m: zeros). That is exactly the A (W, rows = output features) and B (Xᵀ, columns
//   = rows of X) fragments of two mma.m16n8k16 per 16-row tile, with the k positions permuted
//   identically in A and B, so no shuffles or conversions are needed and m costs nothing: the
//   tensor core does the m x 32 dot products. Loads per lane per batch: 16 x 16 bytes of W
//   (ld.global.nc, L1::no_allocate and 256-byte L2 prefetch: W is read once) and 4 x 16 bytes
//   of X (cached in L1: every strip re-reads it). In flight: 8 KB of W per warp,
//   64 KB per block, 128 KB per SM at 2 blocks per SM.
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
#include "kernels/dense_gemv.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/act_convert.cuh"
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
constexpr int kMaxM = 8;                     // = kDenseGemvMaxM: the MMA's n dimension
// Partials of a strip: [parity][warp][m][kRedPitch floats]. A pitch of 36 puts the 32 lanes'
// writes of one accumulator register (m = 2q + c, row g + const) in 32 distinct banks.
constexpr int kRedPitch = 36;
static_assert(kMaxM == kDenseGemvMaxM, "the MMA holds 8 rows of X");

struct GemvArgs {
  const void* x;  // [m, k]
  const void* w;  // [n, k]
  void* y;        // [m, n]
  int m, n, k;
  int strips;     // ceil(n / 32)
  int batches;    // ceil(k / 128)
};

// 16 bytes of W, streamed: not kept in L1, and a 256-byte L2 fetch (a warp reads 64 contiguous
// bytes of a row per load and the rest of the 256 in the same batch). (ptxas takes
// .L2::evict_first on ld only for 32-byte vectors, which sm_90 lacks; the L2 hint would need a
// createpolicy operand, whose cp.async form raised "illegal instruction" here before, see
// lut_gemm_device.cuh. X is re-read all the time, so it stays in L2 anyway.)
// Zeros where !pred (the address is then never dereferenced). volatile: issued in program
// order, so the first batch's loads stay ahead of the grid dependency wait.
__device__ __forceinline__ uint4 LoadWeights(const void* ptr, bool pred) {
  uint4 v;
  asm volatile(
      "{\n"
      "  .reg .pred p;\n"
      "  setp.ne.b32 p, %5, 0;\n"
      "  mov.b32 %0, 0;\n"
      "  mov.b32 %1, 0;\n"
      "  mov.b32 %2, 0;\n"
      "  mov.b32 %3, 0;\n"
      "  @p ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      "}\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(ptr), "r"(static_cast<int>(pred)));
  return v;
}

// 16 bytes of X, kept in L1 (every strip of the block re-reads them). A coherent load, not .nc,
// and volatile: X is the previous kernel's output, so nothing may treat it as invariant and
// hoist it above the grid dependency wait.
__device__ __forceinline__ uint4 LoadActivations(const void* ptr, bool pred) {
  uint4 v;
  asm volatile(
      "{\n"
      "  .reg .pred p;\n"
      "  setp.ne.b32 p, %5, 0;\n"
      "  mov.b32 %0, 0;\n"
      "  mov.b32 %1, 0;\n"
      "  mov.b32 %2, 0;\n"
      "  mov.b32 %3, 0;\n"
      "  @p ld.global.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      "}\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(ptr), "r"(static_cast<int>(pred)));
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

template <typename TY> struct OutCvt;
template <> struct OutCvt<float> {
  static __device__ __forceinline__ float FromFloat(float f) { return f; }
};
template <> struct OutCvt<__half> : Cvt<__half> {};
template <> struct OutCvt<__nv_bfloat16> : Cvt<__nv_bfloat16> {};

// One batch's fragments of a lane: w[i][s] = 16 bytes of strip row g + 8i at step s, x[s] = the
// same 16 bytes of X row g.
struct Fragments {
  uint4 w[kLaneRows][kBatchSteps];
  uint4 x[kBatchSteps];
};

// T: fp16 / bf16 of X and W; TY: T or float (Y). __launch_bounds__(256, 2): at most 128
// registers, so that 2 blocks (16 warps, 128 KB of loads in flight) fit an SM.
template <typename T, typename TY>
__global__ void __launch_bounds__(kThreads, 2) DenseGemvKernel(const GemvArgs a) {
  __shared__ float s_red[2][kWarps][kMaxM][kRedPitch];  // 18 KB
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int grid = static_cast<int>(gridDim.x);
  const int block = static_cast<int>(blockIdx.x);
  const int my_strips = (a.strips - 1 - block) / grid + 1;  // grid <= strips
  // Batches of a strip this warp sums (the same for every strip).
  const int my_batches = warp < a.batches ? (a.batches - 1 - warp) / kWarps + 1 : 0;
  const int64_t row_bytes = static_cast<int64_t>(a.k) * 2;
  const char* const w_lane = static_cast<const char*>(a.w) + static_cast<int64_t>(g) * row_bytes + 16 * q;
  const char* const x_lane = static_cast<const char*>(a.x) + static_cast<int64_t>(g) * row_bytes + 16 * q;
  const bool x_row = g < a.m;

  Fragments f;
  auto load_w = [&](int strip, int batch) {
    const int row0 = strip * kStripRows + g;
    const int k0 = batch * kBatchK + 8 * q;  // this lane's first k of the batch
    const char* p = w_lane + static_cast<int64_t>(strip) * kStripRows * row_bytes + int64_t{2} * batch * kBatchK;
#pragma unroll
    for (int i = 0; i < kLaneRows; ++i) {
      const bool row_ok = row0 + 8 * i < a.n;
#pragma unroll
      for (int s = 0; s < kBatchSteps; ++s) {
        f.w[i][s] = LoadWeights(p + 8 * i * row_bytes + 2 * kStepK * s, row_ok && k0 + kStepK * s < a.k);
      }
    }
  };
  auto load_x = [&](int batch) {
    const int k0 = batch * kBatchK + 8 * q;
    const char* p = x_lane + int64_t{2} * batch * kBatchK;
#pragma unroll
    for (int s = 0; s < kBatchSteps; ++s) f.x[s] = LoadActivations(p + 2 * kStepK * s, x_row && k0 + kStepK * s < a.k);
  };
  // acc[t][c]: tile t (rows 16t ..), register c: strip row 16t + g + 8 (c >> 1), X row 2q + (c & 1).
  auto compute = [&](int batch, float (&acc)[2][4]) {
#pragma unroll
    for (int s = 0; s < kBatchSteps; ++s) {
      if (batch * kBatchK + kStepK * s >= a.k) break;  // past the end of k (warp-uniform)
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const uint4& lo = f.w[2 * t][s];      // row 16t + g
        const uint4& hi = f.w[2 * t + 1][s];  // row 16t + g + 8
        const float zero[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        float c[4], d[4];
        // Logical k 2q, 2q + 1 | 2q + 8, 2q + 9 of the first MMA are k0 + 0, 1 | 2, 3 of the
        // lane's 8 values, of the second k0 + 4, 5 | 6, 7: the same in A and B.
        Mma<T>(c, lo.x, hi.x, lo.y, hi.y, f.x[s].x, f.x[s].y, zero);
        Mma<T>(d, lo.z, hi.z, lo.w, hi.w, f.x[s].z, f.x[s].w, c);
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[t][r] += d[r];
      }
    }
  };

  // The grid is resident at once (grid <= resident blocks), so the next kernel may be
  // scheduled now; it waits for this one before it reads Y.
  LaunchDependents();
  if (my_batches > 0) load_w(block, warp);  // weights: never written by the previous kernel
  GridDependencyWait();                     // X is: read it only from here on
  if (my_batches > 0) load_x(warp);

  int parity = 0;
  for (int i = 0; i < my_strips; ++i) {
    const int strip = block + i * grid;
    float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
    for (int j = 0; j < my_batches; ++j) {
      const int batch = warp + j * kWarps;
      compute(batch, acc);
      // Refill the registers just consumed: this strip's next batch, or the next strip's first
      // (in flight during the reduction below).
      if (j + 1 < my_batches) {
        load_w(strip, batch + kWarps);
        load_x(batch + kWarps);
      } else if (i + 1 < my_strips) {
        load_w(strip + grid, warp);
        load_x(warp);
      }
    }
    // This warp's partials of the strip, then the block's sum in warp order.
    float (*red)[kMaxM][kRedPitch] = s_red[parity];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int mm = 2 * q + (c & 1);
        if (mm < a.m) red[warp][mm][16 * t + g + 8 * (c >> 1)] = acc[t][c];
      }
    }
    __syncthreads();  // (the buffer of the other parity is free: its readers passed this barrier)
    if (tid < kStripRows * a.m) {
      const int mm = tid >> 5, row = tid & 31;
      const int out = strip * kStripRows + row;
      if (out < a.n) {
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) sum += red[w][mm][row];
        static_cast<TY*>(a.y)[static_cast<int64_t>(mm) * a.n + out] = OutCvt<TY>::FromFloat(sum);
      }
    }
    parity ^= 1;
  }
}

// ---- Host side ------------------------------------------------------------------------------

using KernelFn = void (*)(const GemvArgs);

KernelFn SelectKernel(ActivationType dtype, bool y_fp32) {
  if (dtype == ActivationType::kBFloat16) {
    return y_fp32 ? DenseGemvKernel<__nv_bfloat16, float> : DenseGemvKernel<__nv_bfloat16, __nv_bfloat16>;
  }
  return y_fp32 ? DenseGemvKernel<__half, float> : DenseGemvKernel<__half, __half>;
}

// Blocks of `kernel` resident on the current device at once (SM count x blocks per SM), cached
// per (device, kernel): the occupancy query costs microseconds of host time and a decode step
// that is not replayed from a graph launches hundreds of these.
absl::StatusOr<int> ResidentBlocks(KernelFn kernel) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("dense GEMV: cudaGetDevice: ", cudaGetErrorString(err)));
  static std::mutex mu;
  static std::map<std::pair<int, KernelFn>, int>* cache = new std::map<std::pair<int, KernelFn>, int>();
  const std::pair<int, KernelFn> key{device, kernel};
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto it = cache->find(key);
    if (it != cache->end()) return it->second;
  }
  int sms = 0, per_sm = 0;
  err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0);
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("dense GEMV: occupancy query failed: ", cudaGetErrorString(err)));
  }
  const int blocks = sms * (per_sm > 0 ? per_sm : 1);
  std::lock_guard<std::mutex> lock(mu);
  cache->emplace(key, blocks);
  return blocks;
}

}  // namespace

absl::Status LaunchDenseGemv(const DenseGemvParams& p, CUstream_st* stream) {
  const absl::Status valid = CheckDenseGemvParams(p);
  if (!valid.ok()) return valid;
  const KernelFn kernel = SelectKernel(p.dtype, p.y_fp32);
  const absl::StatusOr<int> resident = ResidentBlocks(kernel);
  if (!resident.ok()) return resident.status();
  GemvArgs a;
  a.x = p.x;
  a.w = p.w;
  a.y = p.y;
  a.m = static_cast<int>(p.m);
  a.n = static_cast<int>(p.n);
  a.k = static_cast<int>(p.k);
  a.strips = static_cast<int>((p.n + kStripRows - 1) / kStripRows);
  a.batches = static_cast<int>((p.k + kBatchK - 1) / kBatchK);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(std::min(a.strips, *resident)));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = p.pdl ? 1 : 0;
  cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, a);
  if (err == cudaSuccess) err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("dense GEMV launch failed (m=", p.m, " n=", p.n, " k=", p.k,
                                            "): ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace flute::gpu
