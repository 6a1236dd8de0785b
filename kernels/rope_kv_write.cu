// RoPE + paged KV-cache write in one launch for sm_90a: see rope_kv_write.h for the contract.
//
// One block per row of qkv, as RopeKernel (kernels/llama_ops.cu): the row's cos/sin for every
// frequency go to shared memory (precise sincosf, computed once per row rather than once per
// item: positions reach 128k, where sincosf takes its slow argument reduction), then one
// thread per work item of the row:
//   - rotation items [0, rope_items): (q or k head, 8 consecutive j < head_dim / 2), i.e.
//     two 16-byte loads (x[j0..j0+7], x[j0+half..]) and two 16-byte stores back into qkv;
//     a k item stores the same 16-byte vectors to cache.k too (when the row's slot is valid);
//   - copy items [rope_items, rope_items + kv_dim / 8): one 16-byte piece of the row's v
//     heads to cache.v. They need no cos/sin, so they are issued before the barrier.
// The rotation is RopeKernel's arithmetic expression for expression (fp32 product for the
// angle, sincosf into shared memory, a*c - b*s and b*c + a*s as nvcc contracts them, one
// round-to-nearest to 16 bits), so qkv and cache.k are bitwise what LaunchRope +
// LaunchKvCacheWrite produce. The arithmetic is spelled out in kernels/rope_math.cuh (with
// the FMA contraction made explicit; this kernel's machine code is unchanged by the move),
// shared with the decode attention's fused RoPE (FusedRopeKv, kernels/attention.h). The
// validated shapes (head_dim 64/128, offsets and row_stride multiples of 8, qkv 16-byte
// aligned) always allow the 16-byte vector form: there is no scalar fallback.
#include "kernels/rope_kv_write.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/act_convert.cuh"
#include "kernels/pdl.cuh"
#include "kernels/rope_math.cuh"

namespace flute::gpu {
namespace {

constexpr int kVec = 8;  // 16-bit elements per 16-byte vector


// 8 consecutive 16-bit values at p -> fp32, through the coherent path (qkv is rewritten here).
template <typename T>
__device__ __forceinline__ void Load8(const T* p, float* v) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec; ++i) v[i] = Cvt<T>::ToFloat(e[i]);
}

// fp32 -> 8 16-bit values (round to nearest even), packed for one 16-byte store.
template <typename T>
__device__ __forceinline__ uint4 Pack8(const float* v) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec; ++i) e[i] = Cvt<T>::FromFloat(v[i]);
  return raw;
}

struct RopeKvArgs {
  void* qkv;                 // [m, row_stride] act
  uint4* k_cache;            // [num_slots, num_kv_heads, D] act, as 16-byte pieces
  uint4* v_cache;
  const int32_t* positions;  // [m]
  const int32_t* slots;      // [m]: flat cache slot, or < 0 for a padding row
  const float* inv_freq;     // [D / 2]
  int row_stride, num_heads, k_offset, v_offset, num_kv_heads;
  int64_t num_slots;         // num_blocks * block_size
};

template <typename T, int kD>
__global__ void RopeKvWriteKernel(RopeKvArgs a) {
  PdlPrologue();  // launched with LaunchWithPdl (kernels/pdl.cuh)
  constexpr int kHalf = kD / 2;
  constexpr int kRopeVecs = kHalf / kVec;  // rotation items per head
  __shared__ float cos_s[kHalf], sin_s[kHalf];
  const int64_t row = blockIdx.x;
  const int tid = threadIdx.x, threads = blockDim.x;
  T* base = static_cast<T*>(a.qkv) + row * a.row_stride;
  const int slot = a.slots[row];
  const bool write = slot >= 0 && slot < a.num_slots;  // else a padding row: no cache write
  const int pieces = a.num_kv_heads * kD / kVec;       // 16-byte pieces of one token's k (or v)
  const int64_t cache_row = static_cast<int64_t>(write ? slot : 0) * pieces;
  const int rope_items = (a.num_heads + a.num_kv_heads) * kRopeVecs;

  // v heads: the copy items of this thread (items tid, tid + threads, ... past rope_items).
  if (write) {
    int item = tid;
    if (item < rope_items) item += (rope_items - item + threads - 1) / threads * threads;
    for (; item < rope_items + pieces; item += threads) {
      const int p = item - rope_items;
      a.v_cache[cache_row + p] = __ldg(reinterpret_cast<const uint4*>(base + a.v_offset + p * kVec));
    }
  }

  // cos/sin of the row's position, exactly as RopeKernel.
  const float position = static_cast<float>(a.positions[row]);
  for (int j = tid; j < kHalf; j += threads) {
    rope::SinCos(position, a.inv_freq[j], &sin_s[j], &cos_s[j]);  // kernels/rope_math.cuh
  }
  __syncthreads();

  for (int item = tid; item < rope_items; item += threads) {
    const int head = item / kRopeVecs;
    const int j0 = (item % kRopeVecs) * kVec;
    const bool is_k = head >= a.num_heads;
    const int kv_head = head - a.num_heads;
    T* x = base + (is_k ? a.k_offset + kv_head * kD : head * kD);
    float xa[kVec], xb[kVec], ra[kVec], rb[kVec];
    Load8<T>(x + j0, xa);
    Load8<T>(x + j0 + kHalf, xb);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const float c = cos_s[j0 + i], s = sin_s[j0 + i];
      rope::RotatePair(xa[i], xb[i], c, s, ra[i], rb[i]);
    }
    const uint4 pa = Pack8<T>(ra), pb = Pack8<T>(rb);
    *reinterpret_cast<uint4*>(x + j0) = pa;
    *reinterpret_cast<uint4*>(x + j0 + kHalf) = pb;
    if (is_k && write) {
      uint4* dst = a.k_cache + cache_row + (kv_head * kD + j0) / kVec;
      dst[0] = pa;
      dst[kHalf / kVec] = pb;
    }
  }
}

template <typename T, int kD>
void Launch(const RopeKvArgs& a, int m, cudaStream_t stream) {
  const int items = (a.num_heads + a.num_kv_heads) * (kD / 2 / kVec) + a.num_kv_heads * kD / kVec;
  const int threads = std::clamp((items + 31) / 32 * 32, 128, 1024);
  LaunchWithPdl(RopeKvWriteKernel<T, kD>, static_cast<unsigned>(m), threads, 0, stream, a);
}

template <typename T>
void LaunchForType(const RopeKvArgs& a, int head_dim, int m, cudaStream_t stream) {
  if (head_dim == 64) {
    Launch<T, 64>(a, m, stream);
  } else {
    Launch<T, 128>(a, m, stream);
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

constexpr const char* kOp = "LaunchRopeKvWrite";

template <typename... Args>
absl::Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(kOp, ": ", args...));
}

absl::Status CheckCache(const PagedKvLayer& c) {
  if (c.dtype != ActivationType::kFloat16 && c.dtype != ActivationType::kBFloat16) {
    return Invalid("cache.dtype must be fp16 or bf16, got enum value ", static_cast<int>(c.dtype));
  }
  if (c.head_dim != 64 && c.head_dim != 128) {
    return Invalid("cache.head_dim must be 64 or 128, got ", c.head_dim);
  }
  if (c.block_size < 8 || c.block_size > 64 || (c.block_size & (c.block_size - 1)) != 0) {
    return Invalid("cache.block_size must be a power of two in [8, 64], got ", c.block_size);
  }
  if (c.num_kv_heads < 1) return Invalid("cache.num_kv_heads must be >= 1, got ", c.num_kv_heads);
  if (c.num_blocks < 1) return Invalid("cache.num_blocks must be >= 1, got ", c.num_blocks);
  if (c.k == nullptr) return Invalid("cache.k must be a device pointer, got null");
  if (c.v == nullptr) return Invalid("cache.v must be a device pointer, got null");
  if (!Aligned16(c.k)) {
    return Invalid("cache.k must be 16-byte aligned, got address ", absl::Hex(reinterpret_cast<uintptr_t>(c.k)));
  }
  if (!Aligned16(c.v)) {
    return Invalid("cache.v must be 16-byte aligned, got address ", absl::Hex(reinterpret_cast<uintptr_t>(c.v)));
  }
  return absl::OkStatus();
}

// Whether the column ranges [b0, e0) and [b1, e1) of a row share a column (an empty range
// shares none).
bool Overlap(int64_t b0, int64_t e0, int64_t b1, int64_t e1) {
  return b0 < e0 && b1 < e1 && b0 < e1 && b1 < e0;
}

}  // namespace

absl::Status LaunchRopeKvWrite(void* qkv, int m, int row_stride, int num_heads, int k_offset,
                               int v_offset, const PagedKvLayer& cache, const int32_t* positions,
                               const int32_t* slots, const float* inv_freq, CUstream_st* stream) {
  if (absl::Status st = CheckCache(cache); !st.ok()) return st;
  if (m < 0) return Invalid("m must be >= 0, got ", m);
  if (num_heads < 0) return Invalid("num_heads must be >= 0, got ", num_heads);
  if (row_stride <= 0 || row_stride % 8 != 0) {
    return Invalid("row_stride must be a positive multiple of 8, got ", row_stride);
  }
  if (k_offset < 0 || k_offset % 8 != 0) {
    return Invalid("k_offset must be a non-negative multiple of 8, got ", k_offset);
  }
  if (v_offset < 0 || v_offset % 8 != 0) {
    return Invalid("v_offset must be a non-negative multiple of 8, got ", v_offset);
  }
  const int64_t d = cache.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(cache.num_kv_heads) * d;
  const int64_t q_end = static_cast<int64_t>(num_heads) * d;
  const int64_t k_end = k_offset + kv_dim, v_end = v_offset + kv_dim;
  if (q_end > row_stride) {
    return Invalid("q heads end at column num_heads * head_dim = ", q_end, ", must be <= row_stride = ",
                   row_stride);
  }
  if (k_end > row_stride) {
    return Invalid("k heads end at column k_offset + num_kv_heads * head_dim = ", k_end,
                   ", must be <= row_stride = ", row_stride, " (k_offset = ", k_offset, ")");
  }
  if (v_end > row_stride) {
    return Invalid("v heads end at column v_offset + num_kv_heads * head_dim = ", v_end,
                   ", must be <= row_stride = ", row_stride, " (v_offset = ", v_offset, ")");
  }
  if (k_offset < q_end) {
    return Invalid("k_offset must be >= num_heads * head_dim = ", q_end, " (no overlap), got ", k_offset);
  }
  if (Overlap(v_offset, v_end, 0, q_end) || Overlap(v_offset, v_end, k_offset, k_end)) {
    return Invalid("v_offset must put the v columns [", v_offset, ", ", v_end, ") apart from the q columns [0, ",
                   q_end, ") and the k columns [", k_offset, ", ", k_end, "), got v_offset = ", v_offset);
  }
  if (m == 0) return absl::OkStatus();
  if (qkv == nullptr) return Invalid("qkv must be a device pointer, got null");
  if (!Aligned16(qkv)) {
    return Invalid("qkv must be 16-byte aligned, got address ", absl::Hex(reinterpret_cast<uintptr_t>(qkv)));
  }
  if (positions == nullptr) return Invalid("positions must be a device pointer, got null");
  if (slots == nullptr) return Invalid("slots must be a device pointer, got null");
  if (inv_freq == nullptr) return Invalid("inv_freq must be a device pointer, got null");

  RopeKvArgs a;
  a.qkv = qkv;
  a.k_cache = static_cast<uint4*>(cache.k);
  a.v_cache = static_cast<uint4*>(cache.v);
  a.positions = positions;
  a.slots = slots;
  a.inv_freq = inv_freq;
  a.row_stride = row_stride;
  a.num_heads = num_heads;
  a.k_offset = k_offset;
  a.v_offset = v_offset;
  a.num_kv_heads = cache.num_kv_heads;
  a.num_slots = static_cast<int64_t>(cache.num_blocks) * cache.block_size;
  if (cache.dtype == ActivationType::kFloat16) {
    LaunchForType<__half>(a, cache.head_dim, m, stream);
  } else {
    LaunchForType<__nv_bfloat16>(a, cache.head_dim, m, stream);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat(kOp, " launch failed: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace flute::gpu
