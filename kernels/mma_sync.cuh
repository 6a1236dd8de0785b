// mma.sync.aligned.m16n8k16 with fp32 accumulation in place, for the kernels that feed the
// tensor cores warp by warp (the split-K and strip LUT kernels, the attention kernels). One
// definition for fp16 and bf16: the asm string must be a literal, so a macro expands it per type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace flute {

#define FLUTE_MMA_M16N8K16(TY)                                                                          \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, " \
               "{%8,%9}, {%0,%1,%2,%3};\n"                                                             \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                       \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))

// c[0..3] += A · B: A = 16 x 16 (four registers of T pairs: a[0] row g, a[1] row g + 8, a[2] / a[3]
// the same rows 8 k further; g = lane / 4), B = 16 x 8 (b0, b1: k 2t.. and 2t + 8.., column g;
// t = lane % 4), c = rows g and g + 8, columns 2t and 2t + 1 (the PTX fragment layout).
template <typename T>
__device__ __forceinline__ void MmaM16N8K16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "fp16 or bf16");
  if constexpr (std::is_same_v<T, __half>) {
    FLUTE_MMA_M16N8K16("f16");
  } else {
    FLUTE_MMA_M16N8K16("bf16");
  }
}

#undef FLUTE_MMA_M16N8K16

}  // namespace flute
