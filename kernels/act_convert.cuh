// 16-bit activation <-> fp32 conversions shared by the element-wise kernels (llama_ops.cu,
// rope_kv_write.cu): round to nearest even, as the CPU reference.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace flute::gpu {

template <typename T> struct Cvt;
template <> struct Cvt<__half> {
  static __device__ __forceinline__ float ToFloat(__half h) { return __half2float(h); }
  static __device__ __forceinline__ __half FromFloat(float f) { return __float2half_rn(f); }
};
template <> struct Cvt<__nv_bfloat16> {
  static __device__ __forceinline__ float ToFloat(__nv_bfloat16 h) { return __bfloat162float(h); }
  static __device__ __forceinline__ __nv_bfloat16 FromFloat(float f) { return __float2bfloat16_rn(f); }
};

}  // namespace flute::gpu
