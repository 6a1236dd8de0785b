// Paged GQA attention for sm_90 (H100), prefill rows: the prefill kernels and their launcher
// (LaunchPrefill: attention_launch.h). The entry points and the KV-cache write are in
// attention.cu (which lists the files), the decode kernels in attention_decode*.cu, what both
// share in attention_common.cuh. The kernels:
//
//  - Prefill (query_len > 1): PrefillMmaKernel, FlashAttention-2 style tiles of 64 query rows
//    (16 per warp) x 64 keys of one query head on mma.sync.m16n8k16 tensor cores, online
//    softmax in fp32 registers, causal masking by position. PrefillKernel is a plain SIMT
//    version of the same tiling (fp32 shared-memory tiles), kept as a cross-check: the
//    environment variable FLUTE_ATTENTION_PREFILL=simt selects it.
//
// All softmax arithmetic is fp32 in the log2 domain: q is pre-multiplied by scale * log2(e)
// and exp2f is used throughout.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/attention_common.cuh"
#include "kernels/attention_launch.h"
#include "kernels/pdl.cuh"

namespace flute::gpu::attn_detail {
namespace {

// ---- Prefill: FlashAttention-style SIMT tiles ------------------------------------------------
// CTA = (query tile of 64 rows, query head, sequence), 128 threads as 16 row groups (ty) x 8
// column groups (tx). Thread (ty, tx) owns query rows ty*4 + i (i < 4), score columns
// tx + 8j (j < 8) and output dims tx + 8j (j < D/8). The 8 threads of a row group are 8
// consecutive lanes, so row reductions are 3 shuffles. Shared tiles are fp32 with rows
// padded by one float: the strided column reads hit 32 distinct banks.
template <int kD>
constexpr int PrefillSmemBytes() {
  return (3 * kTileQ * (kD + 1) + kTileQ * (kTileK + 1)) * static_cast<int>(sizeof(float));
}

// Loads keys [k0, k0 + 64) of the sequence (zero beyond ctx) into dst[64][kD + 1] as fp32.
template <typename T, int kD>
__device__ __forceinline__ void LoadKvTile(float* dst, const T* cache, const int32_t* table, int k0,
                                           int ctx, int bs_log2, int num_kv_heads, int kv_head) {
  constexpr int kPieces = kD / 8;
  for (int i = threadIdx.x; i < kTileK * kPieces; i += kPrefillThreads) {
    const int r = i / kPieces, piece = i % kPieces;
    const int pos = k0 + r;
    float f[8];
    if (pos < ctx) {
      Unpack8<T>(Load16(cache + CacheOffset(table, pos, bs_log2, num_kv_heads, kv_head, kD) + piece * 8), f);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) f[e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) dst[r * (kD + 1) + piece * 8 + e] = f[e];
  }
}

template <typename T, int kD>
__global__ void __launch_bounds__(kPrefillThreads) PrefillKernel(AttnArgs a) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  constexpr int kStride = kD + 1;
  constexpr int kDPer = kD / 8;  // output dims per thread
  extern __shared__ float smem[];
  float* s_q = smem;                          // [64][kD + 1], pre-scaled
  float* s_k = s_q + kTileQ * kStride;        // [64][kD + 1]
  float* s_v = s_k + kTileK * kStride;        // [64][kD + 1]
  float* s_pr = s_v + kTileK * kStride;       // [64][65] probabilities

  const int seq = blockIdx.z, h = blockIdx.y, tile = blockIdx.x;
  const int q_start = a.query_start[seq];
  const int q_len = a.query_start[seq + 1] - q_start;
  if (q_len <= 1) return;  // decode sequences: DecodeChunkKernel
  const int row0 = tile * kTileQ;
  if (row0 >= q_len) return;
  const int ctx = a.context_len[seq];
  const int rows = min(kTileQ, q_len - row0);
  const int pos0 = ctx - q_len + row0;  // position of the tile's first row
  const int kv_head = h / a.group;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const T* k_cache = static_cast<const T*>(a.k_cache);
  const T* v_cache = static_cast<const T*>(a.v_cache);

  // Q tile (rows beyond q_len are zero; they are never written out).
  {
    const T* q = static_cast<const T*>(a.q);
    for (int i = threadIdx.x; i < kTileQ * kDPer; i += kPrefillThreads) {
      const int r = i / kDPer, piece = i % kDPer;
      float f[8];
      if (r < rows) {
        Unpack8<T>(Load16(q + static_cast<int64_t>(q_start + row0 + r) * a.row_stride + h * kD + piece * 8), f);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) f[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) s_q[r * kStride + piece * 8 + e] = f[e] * a.scale_log2;
    }
  }

  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  float acc[4][kDPer];
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -1e30f;  // finite: a fully masked tile row gives exp2(-inf) = 0, never NaN
    l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < kDPer; ++j) acc[i][j] = 0.f;
  }
  const int last_pos = pos0 + rows - 1;
  const int num_tiles = last_pos / kTileK + 1;
  for (int kt = 0; kt < num_tiles; ++kt) {
    const int k0 = kt * kTileK;
    __syncthreads();  // previous tile's K/V/P reads are done (and the Q tile is written)
    LoadKvTile<T, kD>(s_k, k_cache, table, k0, ctx, a.bs_log2, a.num_kv_heads, kv_head);
    LoadKvTile<T, kD>(s_v, v_cache, table, k0, ctx, a.bs_log2, a.num_kv_heads, kv_head);
    __syncthreads();

    float s[4][8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 8; ++j) s[i][j] = 0.f;
    }
#pragma unroll 4
    for (int d = 0; d < kD; ++d) {
      float qv[4], kv[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) qv[i] = s_q[(ty * 4 + i) * kStride + d];
#pragma unroll
      for (int j = 0; j < 8; ++j) kv[j] = s_k[(tx + 8 * j) * kStride + d];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) s[i][j] = fmaf(qv[i], kv[j], s[i][j]);
      }
    }
    // Causal mask and online softmax per row.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int qpos = pos0 + ty * 4 + i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (k0 + tx + 8 * j > qpos) s[i][j] = -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
#pragma unroll
      for (int off = 4; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m[i], mx);
      const float alpha = exp2f(m[i] - m_new);
      m[i] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float p = exp2f(s[i][j] - m_new);
        s_pr[(ty * 4 + i) * (kTileK + 1) + tx + 8 * j] = p;
        sum += p;
      }
      l[i] = l[i] * alpha + sum;  // per-thread partial; the row sum is reduced at the end
#pragma unroll
      for (int j = 0; j < kDPer; ++j) acc[i][j] *= alpha;
    }
    __syncthreads();
#pragma unroll 4
    for (int k = 0; k < kTileK; ++k) {
      float pv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) pv[i] = s_pr[(ty * 4 + i) * (kTileK + 1) + k];
#pragma unroll
      for (int j = 0; j < kDPer; ++j) {
        const float v = s_v[k * kStride + tx + 8 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[i][j] = fmaf(pv[i], v, acc[i][j]);
      }
    }
  }

  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float sum = l[i];
#pragma unroll
    for (int off = 4; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    const int r = ty * 4 + i;
    if (r < rows) {
      T* dst = out + static_cast<int64_t>(q_start + row0 + r) * a.num_heads * kD + h * kD;
      const float inv = 1.f / sum;
#pragma unroll
      for (int j = 0; j < kDPer; ++j) dst[tx + 8 * j] = Act<T>::FromFloat(acc[i][j] * inv);
    }
  }
}

// ---- Prefill on tensor cores: mma.sync.m16n8k16, fp32 accumulation ------------------------
// CTA = (query tile of 64 rows, query head, sequence), 4 warps, warp w owns query rows
// 16w..16w+15 for the whole key range (FlashAttention-2 split: no cross-warp reduction).
// Per key tile of 64: S[16 x 64] = Q Kᵀ (8 n-tiles x D/16 k-steps), online softmax on the C
// fragments, P (rounded to the activation type) is re-used in registers as the A operand of
// O[16 x D] += P V (4 k-steps x D/8 n-tiles, V fragments by ldmatrix.trans).
// Fragment layout of m16n8k16 (g = lane / 4, t = lane % 4): A regs {0,1,2,3} = (row g, k 2t),
// (row g+8, k 2t), (row g, k 2t+8), (row g+8, k 2t+8), each two consecutive k; B regs {0,1}
// = (k 2t, 2t+1 | n g) and (k 2t+8, 2t+9 | n g); C = (row g, n 2t, 2t+1), (row g+8, same).
constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = kMmaWarps * 32;

// Keys [k0, k0 + 64) of the sequence (zeros beyond ctx) into dst[64][kD + 8] (16-bit; the
// 16-byte row padding makes the fragment reads conflict-free).
template <typename T, int kD>
__device__ __forceinline__ void LoadKvTile16(uint16_t* dst, const T* cache, const int32_t* table,
                                             int k0, int ctx, int bs_log2, int num_kv_heads,
                                             int kv_head) {
  constexpr int kPieces = kD / 8;
  for (int i = threadIdx.x; i < kTileK * kPieces; i += kMmaThreads) {
    const int r = i / kPieces, piece = i % kPieces;
    const int pos = k0 + r;
    uint4 u = make_uint4(0, 0, 0, 0);
    if (pos < ctx) {
      u = Load16(cache + CacheOffset(table, pos, bs_log2, num_kv_heads, kv_head, kD) + piece * 8);
    }
    *reinterpret_cast<uint4*>(dst + r * (kD + 8) + piece * 8) = u;
  }
}

template <typename T, int kD>
__global__ void __launch_bounds__(kMmaThreads) PrefillMmaKernel(AttnArgs a) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  constexpr int kStride = kD + 8;  // halves per smem row
  constexpr int kSteps = kD / 16;  // k-steps of Q Kᵀ
  constexpr int kDTiles = kD / 8;  // n-tiles of P V
  __shared__ __align__(16) uint16_t s_k[kTileK * kStride];
  __shared__ __align__(16) uint16_t s_v[kTileK * kStride];

  const int seq = blockIdx.z, h = blockIdx.y, tile = blockIdx.x;
  const int q_start = a.query_start[seq];
  const int q_len = a.query_start[seq + 1] - q_start;
  if (q_len <= 1) return;  // decode sequences: DecodeChunkKernel
  const int row0 = tile * kTileQ;
  if (row0 >= q_len) return;
  const int ctx = a.context_len[seq];
  const int rows = min(kTileQ, q_len - row0);
  const int pos0 = ctx - q_len + row0;  // position of the tile's first row
  const int kv_head = h / a.group;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const T* k_cache = static_cast<const T*>(a.k_cache);
  const T* v_cache = static_cast<const T*>(a.v_cache);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int r_lo = warp * 16 + g, r_hi = r_lo + 8;  // this thread's two rows in the tile

  // Q fragments straight from global memory (rows beyond the tile's rows are zero).
  uint32_t qa[kSteps][4];
  {
    const T* q = static_cast<const T*>(a.q) + h * kD + 2 * t;
    const uint32_t* lo = reinterpret_cast<const uint32_t*>(q + static_cast<int64_t>(q_start + row0 + r_lo) * a.row_stride);
    const uint32_t* hi = reinterpret_cast<const uint32_t*>(q + static_cast<int64_t>(q_start + row0 + r_hi) * a.row_stride);
    const bool lo_ok = r_lo < rows, hi_ok = r_hi < rows;
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks) {
      qa[ks][0] = lo_ok ? __ldg(lo + ks * 8) : 0u;
      qa[ks][1] = hi_ok ? __ldg(hi + ks * 8) : 0u;
      qa[ks][2] = lo_ok ? __ldg(lo + ks * 8 + 4) : 0u;
      qa[ks][3] = hi_ok ? __ldg(hi + ks * 8 + 4) : 0u;
    }
  }

  float o[kDTiles][4];
#pragma unroll
  for (int j = 0; j < kDTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m_lo = -1e30f, m_hi = -1e30f;  // finite: fully masked rows give exp2(-inf) = 0
  float l_lo = 0.f, l_hi = 0.f;        // per-thread partial row sums (reduced at the end)
  const int qpos_lo = pos0 + r_lo, qpos_hi = pos0 + r_hi;
  const int num_tiles = (pos0 + rows - 1) / kTileK + 1;

  for (int kt = 0; kt < num_tiles; ++kt) {
    const int k0 = kt * kTileK;
    __syncthreads();  // the previous tile's fragment reads are done
    LoadKvTile16<T, kD>(s_k, k_cache, table, k0, ctx, a.bs_log2, a.num_kv_heads, kv_head);
    LoadKvTile16<T, kD>(s_v, v_cache, table, k0, ctx, a.bs_log2, a.num_kv_heads, kv_head);
    __syncthreads();

    // S = Q Kᵀ: n-tile nt holds keys k0 + 8nt + 2t (+1) for rows r_lo (s[nt][0..1]) and r_hi.
    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
      const uint32_t* krow = reinterpret_cast<const uint32_t*>(s_k + (8 * nt + g) * kStride) + t;
#pragma unroll
      for (int ks = 0; ks < kSteps; ++ks) Mma<T>::Run(s[nt], qa[ks], krow[ks * 8], krow[ks * 8 + 4]);
    }
    // Scale, causal mask, online softmax (a row lives in the 4 lanes of a quad).
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = k0 + 8 * nt + 2 * t + e;
        s[nt][e] = key > qpos_lo ? -INFINITY : s[nt][e] * a.scale_log2;
        s[nt][2 + e] = key > qpos_hi ? -INFINITY : s[nt][2 + e] * a.scale_log2;
        mx_lo = fmaxf(mx_lo, s[nt][e]);
        mx_hi = fmaxf(mx_hi, s[nt][2 + e]);
      }
    }
#pragma unroll
    for (int off = 1; off < 4; off *= 2) {
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
    }
    const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
    const float alpha_lo = exp2f(m_lo - mn_lo), alpha_hi = exp2f(m_hi - mn_hi);
    m_lo = mn_lo;
    m_hi = mn_hi;
    float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[nt][e] = exp2f(s[nt][e] - mn_lo);
        s[nt][2 + e] = exp2f(s[nt][2 + e] - mn_hi);
        sum_lo += s[nt][e];
        sum_hi += s[nt][2 + e];
      }
    }
    l_lo = l_lo * alpha_lo + sum_lo;
    l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
    for (int j = 0; j < kDTiles; ++j) {
      o[j][0] *= alpha_lo;
      o[j][1] *= alpha_lo;
      o[j][2] *= alpha_hi;
      o[j][3] *= alpha_hi;
    }
    // O += P V: k-step j covers keys 16j..16j+15 = C n-tiles 2j and 2j+1.
#pragma unroll
    for (int j = 0; j < kTileK / 16; ++j) {
      uint32_t pa[4];
      pa[0] = Mma<T>::Pack(s[2 * j][0], s[2 * j][1]);
      pa[1] = Mma<T>::Pack(s[2 * j][2], s[2 * j][3]);
      pa[2] = Mma<T>::Pack(s[2 * j + 1][0], s[2 * j + 1][1]);
      pa[3] = Mma<T>::Pack(s[2 * j + 1][2], s[2 * j + 1][3]);
      // ldmatrix.x4.trans: matrices (keys +0 | +8) x (dims 8dt | 8dt + 8); lane l addresses
      // row l % 8 of matrix l / 8.
      const int key = 16 * j + ((lane / 8) % 2) * 8 + lane % 8;
#pragma unroll
      for (int dt = 0; dt < kDTiles; dt += 2) {
        uint32_t b[4];
        LdMatrixX4Trans(b, s_v + key * kStride + 8 * (dt + lane / 16));
        Mma<T>::Run(o[dt], pa, b[0], b[1]);
        Mma<T>::Run(o[dt + 1], pa, b[2], b[3]);
      }
    }
  }

#pragma unroll
  for (int off = 1; off < 4; off *= 2) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  T* out = static_cast<T*>(a.out) + h * kD + 2 * t;
  const int64_t out_stride = static_cast<int64_t>(a.num_heads) * kD;
  if (r_lo < rows) {
    uint32_t* dst = reinterpret_cast<uint32_t*>(out + (q_start + row0 + r_lo) * out_stride);
    const float inv = 1.f / l_lo;
#pragma unroll
    for (int j = 0; j < kDTiles; ++j) dst[j * 4] = Mma<T>::Pack(o[j][0] * inv, o[j][1] * inv);
  }
  if (r_hi < rows) {
    uint32_t* dst = reinterpret_cast<uint32_t*>(out + (q_start + row0 + r_hi) * out_stride);
    const float inv = 1.f / l_hi;
#pragma unroll
    for (int j = 0; j < kDTiles; ++j) dst[j * 4] = Mma<T>::Pack(o[j][2] * inv, o[j][3] * inv);
  }
}

// ---- Launch helpers (prefill) --------------------------------------------------------------
// FLUTE_ATTENTION_PREFILL=simt selects the SIMT prefill kernel instead of the tensor-core
// one (a cross-check for tests and debugging; read at every launch, host side only).
bool UseSimtPrefill() {
  const char* v = std::getenv("FLUTE_ATTENTION_PREFILL");
  return v != nullptr && std::strcmp(v, "simt") == 0;
}

}  // namespace

// The prefill launch of LaunchAll (attention.cu).
template <typename T, int kD>
cudaError_t LaunchPrefill(const AttnArgs& a, int num_seqs, int max_query_len, cudaStream_t stream) {
  const dim3 grid((max_query_len + kTileQ - 1) / kTileQ, a.num_heads, num_seqs);
  if (UseSimtPrefill()) {
    constexpr int smem = PrefillSmemBytes<kD>();
    cudaError_t err = cudaFuncSetAttribute(PrefillKernel<T, kD>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
    LaunchWithPdl(PrefillKernel<T, kD>, grid, kPrefillThreads, smem, stream, a);
  } else {
    LaunchWithPdl(PrefillMmaKernel<T, kD>, grid, kMmaThreads, 0, stream, a);
  }
  return cudaGetLastError();
}

// The instances attention.cu calls (attention_launch.h).
template cudaError_t LaunchPrefill<__half, 64>(const AttnArgs&, int, int, cudaStream_t);
template cudaError_t LaunchPrefill<__half, 128>(const AttnArgs&, int, int, cudaStream_t);
template cudaError_t LaunchPrefill<__nv_bfloat16, 64>(const AttnArgs&, int, int, cudaStream_t);
template cudaError_t LaunchPrefill<__nv_bfloat16, 128>(const AttnArgs&, int, int, cudaStream_t);

}  // namespace flute::gpu::attn_detail
