// The element-wise and row-wise kernels of the LLaMA forward pass for sm_90a: see
// llama_ops.h for the contract.
//
// Common shape of every kernel here: 16-bit activations are read and written 8 at a time
// (16-byte vectors) when the row length is a multiple of 8 and the pointers are 16-byte
// aligned, else one element at a time (the same kernel with kVec = 1); all arithmetic is
// fp32; nothing is allocated and nothing synchronizes, so every launch is graph-capturable.
#include "kernels/llama_ops.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/act_convert.cuh"
#include "kernels/pdl.cuh"

namespace flute::gpu {
namespace {

constexpr int kVecWidth = 8;  // 16-bit elements per 16-byte vector

// ---- 16-bit <-> fp32 ---------------------------------------------------------------------
// kVec consecutive 16-bit values at p -> fp32 (one 16-byte load when kVec = 8).
// kReadOnly: through the read-only data cache (__ldg; never for buffers the kernel also
// writes), else the coherent path.
template <typename T, int kVec, bool kReadOnly = true>
__device__ __forceinline__ void LoadAct(const T* p, float* v) {
  if constexpr (kVec == kVecWidth) {
    const uint4* p4 = reinterpret_cast<const uint4*>(p);
    const uint4 raw = kReadOnly ? __ldg(p4) : *p4;
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] = Cvt<T>::ToFloat(e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] = Cvt<T>::ToFloat(p[i]);
  }
}

// LoadAct through the coherent path: for buffers the kernel also writes.
template <typename T, int kVec>
__device__ __forceinline__ void LoadActRw(const T* p, float* v) {
  LoadAct<T, kVec, false>(p, v);
}

// fp32 -> kVec 16-bit values at p, each rounded to nearest even (one 16-byte store at 8).
template <typename T, int kVec>
__device__ __forceinline__ void StoreAct(T* p, const float* v) {
  if constexpr (kVec == kVecWidth) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < kVec; ++i) e[i] = Cvt<T>::FromFloat(v[i]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) p[i] = Cvt<T>::FromFloat(v[i]);
  }
}

// kVec fp32 values (two 16-byte accesses when kVec = 8).
template <int kVec>
__device__ __forceinline__ void LoadF32(const float* p, float* v) {
  if constexpr (kVec == kVecWidth) {
    const float4 a = reinterpret_cast<const float4*>(p)[0];
    const float4 b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] = p[i];
  }
}
template <int kVec>
__device__ __forceinline__ void StoreF32(float* p, const float* v) {
  if constexpr (kVec == kVecWidth) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) p[i] = v[i];
  }
}

// ---- Host-side helpers ---------------------------------------------------------------------
bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

absl::Status CheckDtype(const char* op, ActivationType dtype) {
  if (dtype != ActivationType::kFloat16 && dtype != ActivationType::kBFloat16) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": dtype must be fp16 or bf16, got enum value ",
                                                   static_cast<int>(dtype)));
  }
  return absl::OkStatus();
}

absl::Status CheckNonNegative(const char* op, const char* name, int64_t value) {
  if (value < 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " must be >= 0, got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckPositive(const char* op, const char* name, int64_t value) {
  if (value <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " must be > 0, got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckPointer(const char* op, const char* name, const void* p) {
  if (p == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " must be a device pointer, got null"));
  }
  return absl::OkStatus();
}

// Internal with the CUDA error of the launch just made, else OK.
absl::Status LaunchStatus(const char* op) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat(op, " launch failed: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

#define FLUTE_RETURN_IF_ERROR(expr)        \
  do {                                     \
    const absl::Status _st = (expr);       \
    if (!_st.ok()) return _st;             \
  } while (0)

// Grid for a grid-stride loop over `items`: enough blocks for one item per thread, capped
// (the loop covers the rest) so that the grid size never overflows.
unsigned GridStrideBlocks(size_t items, int threads) {
  const size_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(std::min<size_t>(std::max<size_t>(blocks, 1), 65536));
}

// ---- Embedding -------------------------------------------------------------------------------
// One block per token row: residual[row, :] = float(table[tokens[row], :]), zeros when the
// id is outside [0, vocab).
template <typename T, int kVec>
__global__ void EmbeddingKernel(const int32_t* tokens, const T* table, int vocab, int hidden,
                                float* residual) {
  const trace::Scope trace_scope(trace::kEmbedding);
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  const int64_t row = blockIdx.x;
  const int32_t id = tokens[row];
  const bool valid = id >= 0 && id < vocab;
  const T* src = table + static_cast<int64_t>(valid ? id : 0) * hidden;
  float* dst = residual + row * hidden;
  for (int c = threadIdx.x * kVec; c < hidden; c += blockDim.x * kVec) {
    float v[kVec];
    if (valid) {
      LoadAct<T, kVec>(src + c, v);
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] = 0.0f;
    }
    StoreF32<kVec>(dst + c, v);
  }
}

// Threads of a row-wise block: one vector per thread up to 256 threads.
int RowThreads(int vectors) { return std::clamp((vectors + 31) / 32 * 32, 32, 256); }

template <typename T>
void LaunchEmbeddingT(const int32_t* tokens, int m, const void* table, int vocab, int hidden,
                      float* residual, cudaStream_t stream) {
  const T* t = static_cast<const T*>(table);
  if (hidden % kVecWidth == 0 && Aligned16(table) && Aligned16(residual)) {
    LaunchWithPdl(EmbeddingKernel<T, kVecWidth>, m, RowThreads(hidden / kVecWidth), 0, stream,
        tokens, t, vocab, hidden, residual);
  } else {
    LaunchWithPdl(EmbeddingKernel<T, 1>, m, RowThreads(hidden), 0, stream, tokens, t, vocab, hidden, residual);
  }
}

// ---- Residual add + RMSNorm ------------------------------------------------------------------
// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024), returned to every
// thread. The order of the additions is fixed, so the result is deterministic.
__device__ float BlockSum(float v) {
  __shared__ float warp_sums[32];
  __shared__ float total;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < static_cast<int>(blockDim.x / 32) ? warp_sums[lane] : 0.0f;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

// Vectors of a row each thread keeps in registers between the two passes; a row longer
// than kRmsItems * blockDim.x vectors re-reads the rest from `residual` (its own writes).
constexpr int kRmsItems = 4;
constexpr int kRmsMaxThreads = 512;  // 128 registers a thread for the batched loads below

// Pass 1 for one vector at column c: residual += x (when x is set); returns the new values.
template <typename T, int kVec>
__device__ __forceinline__ void AddResidual(const T* x, float* res, int c, float* v) {
  LoadF32<kVec>(res + c, v);
  if (x != nullptr) {
    float xv[kVec];
    LoadAct<T, kVec>(x + c, xv);
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] += xv[i];
    StoreF32<kVec>(res + c, v);
  }
}

// out = w * (v * inv) for one vector at column c.
template <typename T, int kVec>
__device__ __forceinline__ void ScaleStore(const float* w, float inv, int c, const float* v, T* out) {
  float o[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) o[i] = w[i] * (v[i] * inv);
  StoreAct<T, kVec>(out + c, o);
}

// One block per row of [m, hidden] (up to kRmsMaxThreads threads: RmsThreads). The first
// kRmsItems vectors of each thread are loaded (residual and x) before any is stored: a
// store to `residual` between two loads would make them wait for each other (the compiler
// cannot tell the pointers apart), one L2 round trip per vector. The weights are loaded
// into the x registers before the block reduction, so their latency overlaps it.
template <typename T, int kVec>
__global__ void __launch_bounds__(kRmsMaxThreads) AddRmsNormKernel(const T* x, float* residual,
                                                                  const float* weight, T* out, int hidden,
                                                                  float eps) {
  const trace::Scope trace_scope(trace::kAddRmsNorm, hidden);
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  const int64_t row = blockIdx.x;
  const T* xr = x != nullptr ? x + row * hidden : nullptr;
  float* res = residual + row * hidden;
  T* o = out + row * hidden;
  const int stride = blockDim.x * kVec;
  float cache[kRmsItems][kVec], other[kRmsItems][kVec];
#pragma unroll
  for (int it = 0; it < kRmsItems; ++it) {
    const int c = threadIdx.x * kVec + it * stride;
    if (c < hidden) {
      LoadF32<kVec>(res + c, cache[it]);
      if (xr != nullptr) LoadAct<T, kVec>(xr + c, other[it]);
    }
  }
  float sumsq = 0.0f;
#pragma unroll
  for (int it = 0; it < kRmsItems; ++it) {
    const int c = threadIdx.x * kVec + it * stride;
    if (c < hidden) {
      if (xr != nullptr) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) cache[it][i] += other[it][i];
        StoreF32<kVec>(res + c, cache[it]);
      }
#pragma unroll
      for (int i = 0; i < kVec; ++i) sumsq += cache[it][i] * cache[it][i];
    }
  }
  for (int c = threadIdx.x * kVec + kRmsItems * stride; c < hidden; c += stride) {
    float v[kVec];
    AddResidual<T, kVec>(xr, res, c, v);
#pragma unroll
    for (int i = 0; i < kVec; ++i) sumsq += v[i] * v[i];
  }
#pragma unroll
  for (int it = 0; it < kRmsItems; ++it) {  // the weights, now in flight during the reduction
    const int c = threadIdx.x * kVec + it * stride;
    if (c < hidden) LoadF32<kVec>(weight + c, other[it]);
  }
  const float sum = BlockSum(sumsq);
  // As engine/vector_ops.h RmsNorm: 1 / sqrt(mean + eps), IEEE sqrt and division.
  const float inv = 1.0f / sqrtf(sum / static_cast<float>(hidden) + eps);
#pragma unroll
  for (int it = 0; it < kRmsItems; ++it) {
    const int c = threadIdx.x * kVec + it * stride;
    if (c < hidden) ScaleStore<T, kVec>(other[it], inv, c, cache[it], o);
  }
  for (int c = threadIdx.x * kVec + kRmsItems * stride; c < hidden; c += stride) {
    float v[kVec], w[kVec];
    LoadF32<kVec>(res + c, v);
    LoadF32<kVec>(weight + c, w);
    ScaleStore<T, kVec>(w, inv, c, v, o);
  }
}

// Threads of a normalization block: enough for kRmsItems vectors per thread, 32..kRmsMaxThreads.
int RmsThreads(int vectors) {
  const int per_thread = (vectors + kRmsItems - 1) / kRmsItems;
  return std::clamp((per_thread + 31) / 32 * 32, 32, kRmsMaxThreads);
}

template <typename T>
void LaunchAddRmsNormT(int m, int hidden, float eps, const void* x, float* residual,
                       const float* weight, void* out, cudaStream_t stream) {
  const T* xt = static_cast<const T*>(x);
  T* ot = static_cast<T*>(out);
  const bool vec = hidden % kVecWidth == 0 && (x == nullptr || Aligned16(x)) &&
                   Aligned16(residual) && Aligned16(weight) && Aligned16(out);
  if (vec) {
    LaunchWithPdl(AddRmsNormKernel<T, kVecWidth>, m, RmsThreads(hidden / kVecWidth), 0, stream,
        xt, residual, weight, ot, hidden, eps);
  } else {
    LaunchWithPdl(AddRmsNormKernel<T, 1>, m, RmsThreads(hidden), 0, stream, xt, residual, weight, ot, hidden, eps);
  }
}

// ---- Rotary embedding ------------------------------------------------------------------------
constexpr int kMaxHeadDim = 1024;  // cos/sin of one row in shared memory: 4 KB

// One block per row: cos/sin of the row's position for every frequency (precise sincosf:
// positions reach 8k-128k, where fast intrinsics lose accuracy), then every (head, vector of
// kVec consecutive j < head_dim / 2) pair of the q and k heads.
template <typename T, int kVec>
__global__ void RopeKernel(T* qkv, int row_stride, int num_heads, int k_offset, int num_kv_heads,
                           int head_dim, const int32_t* positions, const float* inv_freq) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  __shared__ float cos_s[kMaxHeadDim / 2], sin_s[kMaxHeadDim / 2];
  const int64_t row = blockIdx.x;
  const int half = head_dim / 2;
  const float position = static_cast<float>(positions[row]);
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const float angle = position * inv_freq[j];  // fp32 product, as transformers
    sincosf(angle, &sin_s[j], &cos_s[j]);
  }
  __syncthreads();
  const int vecs_per_head = half / kVec;
  const int items = (num_heads + num_kv_heads) * vecs_per_head;
  T* base = qkv + row * row_stride;
  for (int item = threadIdx.x; item < items; item += blockDim.x) {
    const int head = item / vecs_per_head;
    const int j0 = (item % vecs_per_head) * kVec;
    T* x = base + (head < num_heads ? head * head_dim : k_offset + (head - num_heads) * head_dim);
    float a[kVec], b[kVec], ra[kVec], rb[kVec];
    LoadActRw<T, kVec>(x + j0, a);
    LoadActRw<T, kVec>(x + j0 + half, b);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const float c = cos_s[j0 + i], s = sin_s[j0 + i];
      ra[i] = a[i] * c - b[i] * s;
      rb[i] = b[i] * c + a[i] * s;
    }
    StoreAct<T, kVec>(x + j0, ra);
    StoreAct<T, kVec>(x + j0 + half, rb);
  }
}

template <typename T>
void LaunchRopeT(void* qkv, int m, int row_stride, int num_heads, int k_offset, int num_kv_heads,
                 int head_dim, const int32_t* positions, const float* inv_freq, cudaStream_t stream) {
  T* q = static_cast<T*>(qkv);
  const bool vec = (head_dim / 2) % kVecWidth == 0 && row_stride % kVecWidth == 0 &&
                   k_offset % kVecWidth == 0 && Aligned16(qkv);
  // One thread per (head, vector) item where possible: a thread's items are loaded and
  // stored in place one after the other, an L2 round trip each.
  const int items = (num_heads + num_kv_heads) * (head_dim / 2 / (vec ? kVecWidth : 1));
  const int threads = std::clamp((items + 31) / 32 * 32, 128, 1024);
  if (vec) {
    LaunchWithPdl(RopeKernel<T, kVecWidth>, m, threads, 0, stream, q, row_stride, num_heads, k_offset,
                  num_kv_heads, head_dim, positions, inv_freq);
  } else {
    LaunchWithPdl(RopeKernel<T, 1>, m, threads, 0, stream, q, row_stride, num_heads, k_offset, num_kv_heads,
                  head_dim, positions, inv_freq);
  }
}

// ---- SwiGLU ----------------------------------------------------------------------------------
// Grid-stride over the vectors of out[m, inter]: out = silu(gate) * up, silu(g) = g / (1 + e^-g).
// Layout of gate_up as in llama_ops.h (interleave 0 or 8; kVec divides 8).
template <typename T, int kVec>
__global__ void SwiGluKernel(const T* gate_up, int inter, int interleave, int64_t total_vecs, T* out) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  const int vecs_per_row = inter / kVec;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < total_vecs;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = v / vecs_per_row;
    const int col = static_cast<int>(v % vecs_per_row) * kVec;
    // Column of the gate feature, and the distance to its up feature.
    const int gate_col = interleave == 0 ? col : 2 * (col - col % interleave) + col % interleave;
    const int up_delta = interleave == 0 ? inter : interleave;
    const T* g_ptr = gate_up + row * 2 * inter + gate_col;
    float g[kVec], u[kVec], o[kVec];
    LoadAct<T, kVec>(g_ptr, g);
    LoadAct<T, kVec>(g_ptr + up_delta, u);
#pragma unroll
    for (int i = 0; i < kVec; ++i) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    StoreAct<T, kVec>(out + row * inter + col, o);
  }
}

template <typename T>
void LaunchSwiGluT(const void* gate_up, int m, int inter, int interleave, void* out, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const T* gu = static_cast<const T*>(gate_up);
  T* o = static_cast<T*>(out);
  if (inter % kVecWidth == 0 && Aligned16(gate_up) && Aligned16(out)) {
    const int64_t vecs = static_cast<int64_t>(m) * (inter / kVecWidth);
    LaunchWithPdl(SwiGluKernel<T, kVecWidth>, GridStrideBlocks(vecs, kThreads), kThreads, 0, stream, gu, inter,
                  interleave, vecs, o);
  } else {
    const int64_t vecs = static_cast<int64_t>(m) * inter;
    LaunchWithPdl(SwiGluKernel<T, 1>, GridStrideBlocks(vecs, kThreads), kThreads, 0, stream, gu, inter, interleave,
                  vecs, o);
  }
}

// ---- LUT dequantization ----------------------------------------------------------------------
// One block of 256 threads per packed tile (16 rows x 128 columns, layout in lut_format.cc):
// the tile's bytes go to shared memory, then thread t writes row t / 16, columns
// 8 (t % 16) .. + 7 of the tile: 16 threads cover one 256-byte output row segment.
constexpr int kTileRows = 16, kTileCols = 128, kDequantThreads = 256;

// The codes (c0, c1) of the pair at tile (row, col) for even col: the inverse of the
// lane/pair mapping of lut_format.cc (lane 4 g + q, pair 4 kk + r).
template <int kBits>
__device__ __forceinline__ void PairCodes(const uint8_t* tile, int row, int col, unsigned* c0,
                                          unsigned* c1) {
  const int kk = col / 16, half = (col / 8) & 1, q = (col / 2) & 3;
  const int lane = 4 * (row & 7) + q;
  const int p = 4 * kk + (row >> 3) + 2 * half;
  if constexpr (kBits == 4) {
    const unsigned v = tile[512 * (p >> 4) + 16 * lane + (p & 15)];
    *c0 = v & 15;
    *c1 = v >> 4;
  } else {
    const unsigned lo = (tile[16 * lane + (p >> 1)] >> (4 * (p & 1))) & 15;
    if constexpr (kBits == 2) {
      *c0 = lo & 3;
      *c1 = lo >> 2;
    } else {
      // The high plane's field of pair p (lut_format.cc, HighPlaneField).
      const unsigned hi = (tile[512 + 8 * lane + 4 * (p >> 4) + ((p & 7) >> 1)] >> (4 * (p & 1) + 2 * ((p >> 3) & 1))) & 3;
      *c0 = (lo & 3) | (hi & 1) << 2;
      *c1 = (lo >> 2) | (hi >> 1) << 2;
    }
  }
}

template <typename T, int kBits, bool kVecOut>
__global__ void __launch_bounds__(kDequantThreads)
    LutDequantizeKernel(const uint8_t* packed, const __half* scales, const float* table, int k,
                        int group_size, bool packed_aligned, T* out) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  constexpr int kTileBytes = 256 * kBits;
  __shared__ __align__(16) uint8_t tile[kTileBytes];
  __shared__ float values[1 << kBits];
  const int ktiles = k / kTileCols;
  const int64_t strip = blockIdx.x / ktiles;
  const int kt = blockIdx.x % ktiles;
  const uint8_t* src = packed + static_cast<int64_t>(blockIdx.x) * kTileBytes;  // strip-major
  if (packed_aligned) {
    for (int i = threadIdx.x; i < kTileBytes / 16; i += blockDim.x) {
      reinterpret_cast<uint4*>(tile)[i] = __ldg(reinterpret_cast<const uint4*>(src) + i);
    }
  } else {
    for (int i = threadIdx.x; i < kTileBytes; i += blockDim.x) tile[i] = src[i];
  }
  if (threadIdx.x < (1 << kBits)) values[threadIdx.x] = table[threadIdx.x];
  __syncthreads();

  const int row = threadIdx.x / 16, col = (threadIdx.x % 16) * 8;
  const int64_t n_row = strip * kTileRows + row;
  const int k_col = kt * kTileCols + col;
  // The 8 columns lie in one group (G >= 32 and 8 | col).
  const float scale = __half2float(scales[n_row * (k / group_size) + k_col / group_size]);
  float v[8];
#pragma unroll
  for (int i = 0; i < 8; i += 2) {
    unsigned c0, c1;
    PairCodes<kBits>(tile, row, col + i, &c0, &c1);
    v[i] = values[c0] * scale;  // exactly lut::DequantizeRows' table[v] * scale in fp32
    v[i + 1] = values[c1] * scale;
  }
  T* dst = out + n_row * k + k_col;
  if constexpr (kVecOut) {
    StoreAct<T, kVecWidth>(dst, v);
  } else {
    StoreAct<T, 1>(dst, v);
#pragma unroll
    for (int i = 1; i < 8; ++i) StoreAct<T, 1>(dst + i, v + i);
  }
}

template <typename T, int kBits>
void LaunchLutDequantizeBits(const lut::LutShape& s, const uint8_t* packed, const uint16_t* scales,
                             const float* table, void* out, cudaStream_t stream) {
  const int64_t tiles = (s.n / kTileRows) * (s.k / kTileCols);
  const __half* sc = reinterpret_cast<const __half*>(scales);
  T* o = static_cast<T*>(out);
  const int k = static_cast<int>(s.k);
  if (Aligned16(out)) {
    LaunchWithPdl(LutDequantizeKernel<T, kBits, true>, static_cast<unsigned>(tiles), kDequantThreads, 0, stream,
        packed, sc, table, k, s.group_size, Aligned16(packed), o);
  } else {
    LaunchWithPdl(LutDequantizeKernel<T, kBits, false>, static_cast<unsigned>(tiles), kDequantThreads, 0, stream,
        packed, sc, table, k, s.group_size, Aligned16(packed), o);
  }
}

template <typename T>
void LaunchLutDequantizeT(const lut::LutShape& s, const uint8_t* packed, const uint16_t* scales,
                          const float* table, void* out, cudaStream_t stream) {
  if (s.bits == 4) {
    LaunchLutDequantizeBits<T, 4>(s, packed, scales, table, out, stream);
  } else if (s.bits == 3) {
    LaunchLutDequantizeBits<T, 3>(s, packed, scales, table, out, stream);
  } else {
    LaunchLutDequantizeBits<T, 2>(s, packed, scales, table, out, stream);
  }
}

// ---- Random fills ----------------------------------------------------------------------------
// Counter-based: element i of a fill with `seed` is a function of splitmix64's i-th output
// for that seed, so the result does not depend on the launch shape.
__device__ __forceinline__ uint64_t Hash(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 random bits (exact in fp32).
__device__ __forceinline__ float Unit(uint64_t h) {
  return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

#define FLUTE_GRID_STRIDE(i, count)                                                    \
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < (count); \
       i += static_cast<size_t>(gridDim.x) * blockDim.x)

template <typename T>
__global__ void FillUniformKernel(T* out, size_t count, float amplitude, uint64_t seed) {
  FLUTE_GRID_STRIDE(i, count) {
    out[i] = Cvt<T>::FromFloat((2.0f * Unit(Hash(seed, i)) - 1.0f) * amplitude);
  }
}

__global__ void FillBytesKernel(uint8_t* out, size_t count, uint64_t seed) {
  FLUTE_GRID_STRIDE(i, count) { out[i] = static_cast<uint8_t>(Hash(seed, i) >> 56); }
}

__global__ void FillHalfUniformKernel(__half* out, size_t count, float lo, float hi, uint64_t seed) {
  FLUTE_GRID_STRIDE(i, count) { out[i] = __float2half_rn(lo + (hi - lo) * Unit(Hash(seed, i))); }
}

__global__ void FillFloatKernel(float* out, size_t count, float value) {
  FLUTE_GRID_STRIDE(i, count) { out[i] = value; }
}

constexpr int kFillThreads = 256;

}  // namespace

// ---- Launchers -------------------------------------------------------------------------------

absl::Status LaunchEmbedding(ActivationType table_dtype, const int32_t* tokens, int m,
                             const void* table, int vocab, int hidden, float* residual,
                             CUstream_st* stream) {
  constexpr const char* kOp = "LaunchEmbedding";
  FLUTE_RETURN_IF_ERROR(CheckDtype(kOp, table_dtype));
  FLUTE_RETURN_IF_ERROR(CheckNonNegative(kOp, "m", m));
  FLUTE_RETURN_IF_ERROR(CheckPositive(kOp, "vocab", vocab));
  FLUTE_RETURN_IF_ERROR(CheckPositive(kOp, "hidden", hidden));
  if (m == 0) return absl::OkStatus();
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "tokens", tokens));
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "table", table));
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "residual", residual));
  if (table_dtype == ActivationType::kFloat16) {
    LaunchEmbeddingT<__half>(tokens, m, table, vocab, hidden, residual, stream);
  } else {
    LaunchEmbeddingT<__nv_bfloat16>(tokens, m, table, vocab, hidden, residual, stream);
  }
  return LaunchStatus(kOp);
}

absl::Status LaunchAddRmsNorm(ActivationType dtype, int m, int hidden, float eps, const void* x,
                              float* residual, const float* weight, void* out,
                              CUstream_st* stream) {
  constexpr const char* kOp = "LaunchAddRmsNorm";
  FLUTE_RETURN_IF_ERROR(CheckDtype(kOp, dtype));
  FLUTE_RETURN_IF_ERROR(CheckNonNegative(kOp, "m", m));
  FLUTE_RETURN_IF_ERROR(CheckPositive(kOp, "hidden", hidden));
  if (!(eps >= 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": eps must be >= 0, got ", eps));
  }
  if (m == 0) return absl::OkStatus();
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "residual", residual));
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "weight", weight));
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "out", out));
  if (dtype == ActivationType::kFloat16) {
    LaunchAddRmsNormT<__half>(m, hidden, eps, x, residual, weight, out, stream);
  } else {
    LaunchAddRmsNormT<__nv_bfloat16>(m, hidden, eps, x, residual, weight, out, stream);
  }
  return LaunchStatus(kOp);
}

absl::Status LaunchRope(ActivationType dtype, void* qkv, int m, int row_stride, int num_heads,
                        int k_offset, int num_kv_heads, int head_dim, const int32_t* positions,
                        const float* inv_freq, CUstream_st* stream) {
  constexpr const char* kOp = "LaunchRope";
  FLUTE_RETURN_IF_ERROR(CheckDtype(kOp, dtype));
  FLUTE_RETURN_IF_ERROR(CheckNonNegative(kOp, "m", m));
  FLUTE_RETURN_IF_ERROR(CheckNonNegative(kOp, "num_heads", num_heads));
  FLUTE_RETURN_IF_ERROR(CheckNonNegative(kOp, "num_kv_heads", num_kv_heads));
  FLUTE_RETURN_IF_ERROR(CheckNonNegative(kOp, "k_offset", k_offset));
  if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": head_dim must be even and in [2, ", kMaxHeadDim, "], got ", head_dim));
  }
  const int64_t q_end = static_cast<int64_t>(num_heads) * head_dim;
  const int64_t k_end = k_offset + static_cast<int64_t>(num_kv_heads) * head_dim;
  if (q_end > row_stride || k_end > row_stride) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": q heads end at column ", q_end, " and k heads at ", k_end,
        "; both must be <= row_stride = ", row_stride));
  }
  if (num_kv_heads > 0 && k_offset < q_end) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": k_offset must be >= num_heads * head_dim = ", q_end, " (no overlap), got ", k_offset));
  }
  if (m == 0 || num_heads + num_kv_heads == 0) return absl::OkStatus();
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "qkv", qkv));
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "positions", positions));
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "inv_freq", inv_freq));
  if (dtype == ActivationType::kFloat16) {
    LaunchRopeT<__half>(qkv, m, row_stride, num_heads, k_offset, num_kv_heads, head_dim, positions,
                        inv_freq, stream);
  } else {
    LaunchRopeT<__nv_bfloat16>(qkv, m, row_stride, num_heads, k_offset, num_kv_heads, head_dim,
                               positions, inv_freq, stream);
  }
  return LaunchStatus(kOp);
}

absl::Status LaunchSwiGlu(ActivationType dtype, const void* gate_up, int m, int inter, void* out,
                          CUstream_st* stream, int interleave) {
  constexpr const char* kOp = "LaunchSwiGlu";
  FLUTE_RETURN_IF_ERROR(CheckDtype(kOp, dtype));
  FLUTE_RETURN_IF_ERROR(CheckNonNegative(kOp, "m", m));
  FLUTE_RETURN_IF_ERROR(CheckPositive(kOp, "inter", inter));
  if (interleave != 0 && (interleave != 8 || inter % 8 != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": interleave must be 0, or 8 with inter a multiple of 8; got "
                                                   "interleave=", interleave, " inter=", inter));
  }
  if (m == 0) return absl::OkStatus();
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "gate_up", gate_up));
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "out", out));
  if (dtype == ActivationType::kFloat16) {
    LaunchSwiGluT<__half>(gate_up, m, inter, interleave, out, stream);
  } else {
    LaunchSwiGluT<__nv_bfloat16>(gate_up, m, inter, interleave, out, stream);
  }
  return LaunchStatus(kOp);
}

absl::Status LaunchLutDequantize(const lut::LutShape& shape, ActivationType dtype,
                                 const uint8_t* packed, const uint16_t* scales, const float* table,
                                 void* out, CUstream_st* stream) {
  constexpr const char* kOp = "LaunchLutDequantize";
  FLUTE_RETURN_IF_ERROR(CheckDtype(kOp, dtype));
  FLUTE_RETURN_IF_ERROR(lut::CheckShape(shape));
  const int64_t tiles = (shape.n / kTileRows) * (shape.k / kTileCols);
  if (shape.k >= (int64_t{1} << 30) || tiles >= (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": k must be < 2^30 and the tile count < 2^31, got n=", shape.n, " k=", shape.k));
  }
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "packed", packed));
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "scales", scales));
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "table", table));
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "out", out));
  if (dtype == ActivationType::kFloat16) {
    LaunchLutDequantizeT<__half>(shape, packed, scales, table, out, stream);
  } else {
    LaunchLutDequantizeT<__nv_bfloat16>(shape, packed, scales, table, out, stream);
  }
  return LaunchStatus(kOp);
}

absl::Status LaunchFillUniform(ActivationType dtype, void* out, size_t count, float amplitude,
                               uint64_t seed, CUstream_st* stream) {
  constexpr const char* kOp = "LaunchFillUniform";
  FLUTE_RETURN_IF_ERROR(CheckDtype(kOp, dtype));
  if (!(amplitude >= 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": amplitude must be >= 0, got ", amplitude));
  }
  if (count == 0) return absl::OkStatus();
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "out", out));
  const unsigned blocks = GridStrideBlocks(count, kFillThreads);
  if (dtype == ActivationType::kFloat16) {
    FillUniformKernel<__half><<<blocks, kFillThreads, 0, stream>>>(static_cast<__half*>(out), count,
                                                                   amplitude, seed);
  } else {
    FillUniformKernel<__nv_bfloat16><<<blocks, kFillThreads, 0, stream>>>(
        static_cast<__nv_bfloat16*>(out), count, amplitude, seed);
  }
  return LaunchStatus(kOp);
}

absl::Status LaunchFillBytes(uint8_t* out, size_t count, uint64_t seed, CUstream_st* stream) {
  constexpr const char* kOp = "LaunchFillBytes";
  if (count == 0) return absl::OkStatus();
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "out", out));
  FillBytesKernel<<<GridStrideBlocks(count, kFillThreads), kFillThreads, 0, stream>>>(out, count, seed);
  return LaunchStatus(kOp);
}

absl::Status LaunchFillHalfUniform(uint16_t* out, size_t count, float lo, float hi, uint64_t seed,
                                   CUstream_st* stream) {
  constexpr const char* kOp = "LaunchFillHalfUniform";
  if (!(lo <= hi)) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": need lo <= hi, got lo=", lo, " hi=", hi));
  }
  if (count == 0) return absl::OkStatus();
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "out", out));
  FillHalfUniformKernel<<<GridStrideBlocks(count, kFillThreads), kFillThreads, 0, stream>>>(
      reinterpret_cast<__half*>(out), count, lo, hi, seed);
  return LaunchStatus(kOp);
}

absl::Status LaunchFillFloat(float* out, size_t count, float value, CUstream_st* stream) {
  constexpr const char* kOp = "LaunchFillFloat";
  if (count == 0) return absl::OkStatus();
  FLUTE_RETURN_IF_ERROR(CheckPointer(kOp, "out", out));
  FillFloatKernel<<<GridStrideBlocks(count, kFillThreads), kFillThreads, 0, stream>>>(out, count, value);
  return LaunchStatus(kOp);
}

}  // namespace flute::gpu

namespace flute::trace {
FLUTE_TRACE_SETTER(SetBufferLlamaOps)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
