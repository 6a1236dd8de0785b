// Device-side pieces shared by the two LUT-GEMM kernels (lut_gemm.cu: tiled split-K, any M;
// lut_gemm_strip.cu: persistent strips, M <= 8): activation types, PTX wrappers, the pair
// table and the lookups that turn packed codes into mma.m16n8k16 A fragments.
// Included only by .cu files; everything is in an anonymous namespace (one copy per file).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/mma_sync.cuh"
#include "kernels/pdl.cuh"

namespace flute::lut {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kTileK = 128;           // k per packed tile (one warp's 16 x 128 codes)
constexpr int kTableCopies = 32;      // one pair-table copy per lane: no bank conflicts
// 2-bit: one packed byte (four codes = two pairs) indexes a "quad" entry of two half2 words,
// so one 64-bit shared load replaces two 32-bit ones and their offset arithmetic. 64-bit
// loads are served per half-warp, so 16 copies (lane & 15) keep them conflict-free.
constexpr int kQuadEntries = 256;
constexpr int kQuadCopies = 16;
// The split-K workspace (both tiled kernels): a fixed prefix of per-output-tile counters, then
// the fp32 partials. The prefix is the same for every call, so that no call's partials ever
// land on another call's counters (each call leaves its counters at zero; the workspace is
// zeroed once). 16384 counters: 64-row tiles x 128-column blocks of a 2048-token prefill of a
// 28672-wide projection still fit; a split call with more tiles is refused.
constexpr int kSplitCounterBytes = 64 * 1024;

// The split count (1..32, >= 4 k-tiles per split) that minimizes waves x (k-tiles per split + 2)
// for `base` blocks over `slots` resident block slots: + 2 is a block's fixed cost (pair table,
// pipeline fill, reduction) in k-tiles. The split-K kernel's plan, and the tensor-core kernel's
// FLUTE_LUT_TC=old plan.
inline int CheapestSplitCount(int64_t base, int64_t slots, int num_ktiles) {
  int best = 1;
  int64_t best_cost = -1;
  const int max_splits = num_ktiles / 4 < 1 ? 1 : (num_ktiles / 4 > 32 ? 32 : num_ktiles / 4);
  for (int sp = 1; sp <= max_splits; ++sp) {
    const int64_t waves = (base * sp + slots - 1) / slots;
    const int64_t cost = waves * ((num_ktiles + sp - 1) / sp + 2);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best = sp;
    }
  }
  return best;
}

// An attribute of the current device, or `fallback` where the runtime cannot tell (host code of
// the three LUT kernels' launchers).
inline int CurrentDeviceAttribute(cudaDeviceAttr attr, int fallback) {
  int device = 0, value = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&value, attr, device) != cudaSuccess) {
    return fallback;
  }
  return value;
}
inline int DeviceSmCount() { return CurrentDeviceAttribute(cudaDevAttrMultiProcessorCount, 132); }

template <typename T> struct Act;
template <> struct Act<__half> {
  using T2 = __half2;
  static __device__ __forceinline__ __half FromFloat(float f) { return __float2half_rn(f); }
  static __device__ __forceinline__ __half FromHalf(__half h) { return h; }
  static __device__ __forceinline__ float ToFloat(__half h) { return __half2float(h); }
};
template <> struct Act<__nv_bfloat16> {
  using T2 = __nv_bfloat162;
  static __device__ __forceinline__ __nv_bfloat16 FromFloat(float f) { return __float2bfloat16_rn(f); }
  static __device__ __forceinline__ __nv_bfloat16 FromHalf(__half h) {
    return __float2bfloat16_rn(__half2float(h));
  }
  static __device__ __forceinline__ float ToFloat(__nv_bfloat16 h) { return __bfloat162float(h); }
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
__device__ __forceinline__ void Mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  MmaM16N8K16<T>(c, a, b0, b1);
}

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

// 3 bits: turns a lane's loaded planes (w[0..3] the low plane, hw[0..1] the high plane) into
// its 8 index words, in place in w[0..7]: byte j of w[2i + o] = the pair index (lo4 | hi2 << 4)
// of pair 8i + 2j + o. The high plane's word m holds the hi2 fields of pairs 16m .. 16m + 15 so
// that each group of four lands in bits 4-5 of its bytes after one shift (lut_format.cc), and
// one LOP3 merges them with the masked low nibbles: 26 instructions a tile, after which every
// lookup picks a byte as at 4 bits (PairOffset). (i descends: w[i] is read before w[2i] and
// w[2i + 1] are written.)
__device__ __forceinline__ void Pair3Indices(uint32_t* w, const uint32_t* hw) {
#pragma unroll
  for (int i = 3; i >= 0; --i) {
    const uint32_t lo = w[i], h = hw[i >> 1];
    const uint32_t hi_even = ((i & 1) ? h << 2 : h << 4) & 0x30303030u;
    const uint32_t hi_odd = ((i & 1) ? h >> 2 : h) & 0x30303030u;
    w[2 * i] = (lo & 0x0f0f0f0fu) | hi_even;
    w[2 * i + 1] = ((lo >> 4) & 0x0f0f0f0fu) | hi_odd;
  }
}
// Where pair p's index byte is: word and byte of w (4 bits: the packed bytes; 3 bits: the
// words of Pair3Indices).
template <int kBits, int kP>
struct PairByte {
  static constexpr int kWord = kBits == 3 ? 2 * (kP >> 3) + (kP & 1) : kP >> 2;
  static constexpr int kByte = kBits == 3 ? (kP & 7) >> 1 : kP & 3;
};

// Byte offset (entry * 32 copies * 4 bytes = entry << 7) in the pair table of pair p, built
// straight from the words without first extracting the index. 4 and 3 bits: PRMT isolates the
// byte and LEA scales it and adds the table base (2 instructions before the LDS, where shift +
// mask + add took 3). 2 bits: one masked shift of the nibble.
template <int kBits, int kP>
__device__ __forceinline__ uint32_t PairOffset(const uint32_t* w) {
  if constexpr (kBits == 2) {
    return ShiftMask<4 * (kP & 7) - 7>(w[kP >> 3], 0xfu << 7);
  } else {
    using B = PairByte<kBits, kP>;
    return __byte_perm(w[B::kWord], 0u, 0x4440u | B::kByte) << 7;
  }
}

// Loads from a 32-bit shared-memory address. Plain (not volatile) asm: the address depends on
// codes loaded after the stage's barrier, which orders these loads after it.
__device__ __forceinline__ uint32_t LdsU32(uint32_t addr) {
  uint32_t v;
  asm("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint2 LdsU64(uint32_t addr) {
  uint2 v;
  asm("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(addr));
  return v;
}

// The 4 table words (A registers r = 0..3) of 16-wide sub-tile kKK. `table` is this lane's
// table base as a shared-memory address (LaneTable), so each lookup is offset + base (one
// LEA after the PRMT at 4 and 3 bits) and one LDS. w: the packed words, at 3 bits after
// Pair3Indices.
template <int kBits, int kKK>
__device__ __forceinline__ void LookupPairsT(const uint32_t* w, uint32_t table, uint32_t* pair) {
  if constexpr (kBits == 2) {
    // Sub-tile kk = bytes 2kk (pairs 0, 1 = A registers 0, 1) and 2kk + 1 (registers 2, 3);
    // quad entry = byte, at byte offset entry * 16 copies * 8 = byte << 7.
    constexpr int kB0 = 2 * kKK, kB1 = 2 * kKK + 1;
    const uint2 lo = LdsU64(table + (__byte_perm(w[kB0 >> 2], 0u, 0x4440u | (kB0 & 3)) << 7));
    const uint2 hi = LdsU64(table + (__byte_perm(w[kB1 >> 2], 0u, 0x4440u | (kB1 & 3)) << 7));
    pair[0] = lo.x;
    pair[1] = lo.y;
    pair[2] = hi.x;
    pair[3] = hi.y;
    return;
  }
  pair[0] = LdsU32(table + PairOffset<kBits, 4 * kKK + 0>(w));
  pair[1] = LdsU32(table + PairOffset<kBits, 4 * kKK + 1>(w));
  pair[2] = LdsU32(table + PairOffset<kBits, 4 * kKK + 2>(w));
  pair[3] = LdsU32(table + PairOffset<kBits, 4 * kKK + 3>(w));
}
// kk is a constant once the caller's loop is unrolled, so the switch folds away.
template <int kBits>
__device__ __forceinline__ void LookupPairs(int kk, const uint32_t* w, uint32_t table, uint32_t* pair) {
  switch (kk) {
    case 0: LookupPairsT<kBits, 0>(w, table, pair); break;
    case 1: LookupPairsT<kBits, 1>(w, table, pair); break;
    case 2: LookupPairsT<kBits, 2>(w, table, pair); break;
    case 3: LookupPairsT<kBits, 3>(w, table, pair); break;
    case 4: LookupPairsT<kBits, 4>(w, table, pair); break;
    case 5: LookupPairsT<kBits, 5>(w, table, pair); break;
    case 6: LookupPairsT<kBits, 6>(w, table, pair); break;
    default: LookupPairsT<kBits, 7>(w, table, pair); break;
  }
}

// The wide pair table (tensor-core kernel, 4 and 2 bits): entry e's copies at bytes
// [e * 256, e * 256 + 128) of the table (the narrow layout has them at e * 128); the rest of
// each row is the caller's (lut_gemm_tc_common.cuh's TcConfig keeps its W stages there).
constexpr int kWideRowBytes = 256;
constexpr int kWideTableBytes = 256 * kWideRowBytes;

// A wide-table lookup's offset from the table base: bits 8-15 = byte kByte of `word` (the
// entry: a 4-bit code pair, or a 2-bit code quad), bits 0-7 = lane_bits (the lane's copy:
// 4 * lane, or 8 * (lane % 16) for the 2-bit quads), bits 16-31 zero. One PRMT.
template <int kByte>
__device__ __forceinline__ uint32_t WideOffset(uint32_t word, uint32_t lane_bits) {
  return __byte_perm(word, lane_bits, 0x5504u | (kByte << 4));
}

// LookupPairsT on the wide table. `table` is the table base (warp-uniform, so that the compiler
// folds it into the load as a uniform register: LDS [R + UR]).
template <int kBits, int kKK>
__device__ __forceinline__ void LookupPairsWideT(const uint32_t* w, uint32_t lane_bits, uint32_t table,
                                                 uint32_t* pair) {
  static_assert(kBits == 4 || kBits == 2, "the wide table is byte-indexed: 4 or 2 bits");
  if constexpr (kBits == 2) {  // bytes 2kk (A registers 0, 1) and 2kk + 1 (registers 2, 3)
    constexpr int kB0 = 2 * kKK, kB1 = 2 * kKK + 1;
    const uint2 lo = LdsU64(table + WideOffset<kB0 & 3>(w[kB0 >> 2], lane_bits));
    const uint2 hi = LdsU64(table + WideOffset<kB1 & 3>(w[kB1 >> 2], lane_bits));
    pair[0] = lo.x;
    pair[1] = lo.y;
    pair[2] = hi.x;
    pair[3] = hi.y;
  } else {  // pair p = 4 kk + r: byte r of word kk (A register r)
    pair[0] = LdsU32(table + WideOffset<0>(w[kKK], lane_bits));
    pair[1] = LdsU32(table + WideOffset<1>(w[kKK], lane_bits));
    pair[2] = LdsU32(table + WideOffset<2>(w[kKK], lane_bits));
    pair[3] = LdsU32(table + WideOffset<3>(w[kKK], lane_bits));
  }
}
template <int kBits>
__device__ __forceinline__ void LookupPairsWide(int kk, const uint32_t* w, uint32_t lane_bits, uint32_t table,
                                                uint32_t* pair) {
  switch (kk) {
    case 0: LookupPairsWideT<kBits, 0>(w, lane_bits, table, pair); break;
    case 1: LookupPairsWideT<kBits, 1>(w, lane_bits, table, pair); break;
    case 2: LookupPairsWideT<kBits, 2>(w, lane_bits, table, pair); break;
    case 3: LookupPairsWideT<kBits, 3>(w, lane_bits, table, pair); break;
    case 4: LookupPairsWideT<kBits, 4>(w, lane_bits, table, pair); break;
    case 5: LookupPairsWideT<kBits, 5>(w, lane_bits, table, pair); break;
    case 6: LookupPairsWideT<kBits, 6>(w, lane_bits, table, pair); break;
    default: LookupPairsWideT<kBits, 7>(w, lane_bits, table, pair); break;
  }
}
// This lane's copy bits for LookupPairsWide.
template <int kBits>
__device__ __forceinline__ uint32_t WideLaneBits(int lane) {
  return kBits == 2 ? 8u * (lane & (kQuadCopies - 1)) : 4u * lane;
}

// The 3-bit wide pair table (strip kernel; tensor-core kernel at MT != 64): entry e's 32 copies
// at bytes [e * 256, e * 256 + 128), 16 KB for the 64 entries. A lookup's offset is then
// WideOffset of its index byte (one PRMT, from Pair3Indices' words), and the load adds the
// table base from a uniform register (LDS [R + UR]), where the narrow table's per-lane base
// costs an add per lookup.
constexpr int kWide3TableBytes = 64 * kWideRowBytes;
// LookupPairsT for 3 bits on the wide table; w: Pair3Indices' words; `table`: the table base
// (warp-uniform).
template <int kKK>
__device__ __forceinline__ void LookupPairsWide3T(const uint32_t* w, uint32_t lane_bits, uint32_t table,
                                                  uint32_t* pair) {
  using B0 = PairByte<3, 4 * kKK + 0>;
  using B1 = PairByte<3, 4 * kKK + 1>;
  using B2 = PairByte<3, 4 * kKK + 2>;
  using B3 = PairByte<3, 4 * kKK + 3>;
  pair[0] = LdsU32(table + WideOffset<B0::kByte>(w[B0::kWord], lane_bits));
  pair[1] = LdsU32(table + WideOffset<B1::kByte>(w[B1::kWord], lane_bits));
  pair[2] = LdsU32(table + WideOffset<B2::kByte>(w[B2::kWord], lane_bits));
  pair[3] = LdsU32(table + WideOffset<B3::kByte>(w[B3::kWord], lane_bits));
}
__device__ __forceinline__ void LookupPairsWide3(int kk, const uint32_t* w, uint32_t lane_bits, uint32_t table,
                                                 uint32_t* pair) {
  switch (kk) {
    case 0: LookupPairsWide3T<0>(w, lane_bits, table, pair); break;
    case 1: LookupPairsWide3T<1>(w, lane_bits, table, pair); break;
    case 2: LookupPairsWide3T<2>(w, lane_bits, table, pair); break;
    case 3: LookupPairsWide3T<3>(w, lane_bits, table, pair); break;
    case 4: LookupPairsWide3T<4>(w, lane_bits, table, pair); break;
    case 5: LookupPairsWide3T<5>(w, lane_bits, table, pair); break;
    case 6: LookupPairsWide3T<6>(w, lane_bits, table, pair); break;
    default: LookupPairsWide3T<7>(w, lane_bits, table, pair); break;
  }
}

// Shared-memory bytes of the pair table (2-bit: the quad table).
template <int kBits>
__host__ __device__ constexpr int TableBytes() {
  return kBits == 2 ? kQuadEntries * kQuadCopies * 8 : (1 << (2 * kBits)) * kTableCopies * 4;
}

// Builds the duplicated pair table in shared memory from the fp32 table (2^bits values),
// all kThreads threads taking part; the caller's next __syncthreads publishes it.
// Pair table: entry e, copy c at word e * 32 + c; thread i writes the 16 bytes i.
// 2-bit quad table: entry b (a packed byte), copy c at 8-byte slot b * 16 + c, holding the
// pair words of its low and high nibble (PairCodes<2> of each).
// kRowBytes = kWideRowBytes: the wide layout (entry rows 256 bytes apart, the copies in the
// first 128; the rest of each row is not written).
template <typename T, int kBits, int kRowBytes = 128>
__device__ __forceinline__ void BuildPairTable(const float* table, uint32_t* s_table, int tid) {
  using T2 = typename Act<T>::T2;
  // 16-byte slot i of the narrow layout (entry i / 8, its 8 slots of 16 bytes) -> its place.
  auto slot = [](int i) { return (i >> 3) * (kRowBytes / 16) + (i & 7); };
  if constexpr (kBits == 2) {
    for (int i = tid; i < kQuadEntries * (kQuadCopies / 2); i += kThreads) {
      const int b = i / (kQuadCopies / 2);
      uint32_t words[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int c0, c1;
        PairCodes<2>((b >> (4 * h)) & 15, &c0, &c1);
        T2 v;
        v.x = Act<T>::FromFloat(__ldg(table + c0));
        v.y = Act<T>::FromFloat(__ldg(table + c1));
        words[h] = *reinterpret_cast<uint32_t*>(&v);
      }
      reinterpret_cast<uint4*>(s_table)[slot(i)] = make_uint4(words[0], words[1], words[0], words[1]);
    }
  } else {
    constexpr int kPairEntries = 1 << (2 * kBits);
    for (int i = tid; i < kPairEntries * (kTableCopies / 4); i += kThreads) {
      const int e = i / (kTableCopies / 4);
      int c0, c1;
      PairCodes<kBits>(e, &c0, &c1);
      T2 v;
      v.x = Act<T>::FromFloat(__ldg(table + c0));
      v.y = Act<T>::FromFloat(__ldg(table + c1));
      const uint32_t word = *reinterpret_cast<uint32_t*>(&v);
      reinterpret_cast<uint4*>(s_table)[slot(i)] = make_uint4(word, word, word, word);
    }
  }
}

// This lane's table base as a shared-memory address. Made opaque to the compiler: knowing
// its low bits (lane * 4), nvcc rewrote base + (entry << 7) as ((entry << 5) | lane) << 2
// + base, 3 instructions where one LEA does.
template <int kBits>
__device__ __forceinline__ uint32_t LaneTable(const uint32_t* s_table, int lane) {
  uint32_t addr = SmemAddr(s_table) + (kBits == 2 ? 8 * (lane & (kQuadCopies - 1)) : 4 * lane);
  asm volatile("" : "+r"(addr));
  return addr;
}

// Output features per block of the two tiled kernels (split-K and tensor-core): one 16-row
// strip per warp.
constexpr int kTileBlockN = kWarps * 16;

// silu(gate) * up of two fp32 sums, each rounded to T first (exactly the plain GEMM's outputs
// followed by the SwiGLU kernel of llama_ops.cu).
template <typename T>
__device__ __forceinline__ T SwiGluOfSums(float gate_sum, float up_sum) {
  const float gate = Act<T>::ToFloat(Act<T>::FromFloat(gate_sum));
  const float up = Act<T>::ToFloat(Act<T>::FromFloat(up_sum));
  return Act<T>::FromFloat(gate / (1.0f + expf(-gate)) * up);
}

// The last split of a (column block, m tile) to finish: sums the partials of its [rows, 128]
// outputs in split order (bitwise the same whichever split is last), with the SwiGLU epilogue
// when asked. Not inlined: this runs once per tile, and its registers then do not add to the
// main loop's.
// (Scalars by value: a reference to the kernel's parameter struct would make the compiler
// copy it to local memory for the whole kernel.)
template <typename T>
__device__ __noinline__ void SumPartialsInSplitOrder(const float* partials, int splits, int total_m, int total_n,
                                                     bool swiglu, int m0, int rows, int col_block, T* y) {
  const int tid = threadIdx.x;
  auto sum_partials = [&](int m, int n) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) {
      sum += __ldcg(partials + (static_cast<int64_t>(s) * total_m + m) * total_n + n);
    }
    return sum;
  };
  if (swiglu) {  // output o of the block: strip o / 8, gate row o % 8 (up row + 8)
    for (int e = tid; e < rows * kTileBlockN / 2; e += kThreads) {
      const int m = m0 + e / (kTileBlockN / 2), o = e % (kTileBlockN / 2);
      const int n = col_block * kTileBlockN + (o / 8) * 16 + o % 8;
      if (n >= total_n) continue;
      y[static_cast<int64_t>(m) * (total_n / 2) + n / 16 * 8 + o % 8] =
          SwiGluOfSums<T>(sum_partials(m, n), sum_partials(m, n + 8));
    }
    return;
  }
  for (int e = tid; e < rows * kTileBlockN; e += kThreads) {
    const int m = m0 + e / kTileBlockN, n = col_block * kTileBlockN + e % kTileBlockN;
    if (n >= total_n) continue;
    y[static_cast<int64_t>(m) * total_n + n] = Act<T>::FromFloat(sum_partials(m, n));
  }
}

}  // namespace
}  // namespace flute::lut
