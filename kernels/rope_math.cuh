// The RoPE arithmetic of the kernels that rotate q/k heads: RopeKvWriteKernel
// (kernels/rope_kv_write.cu) and the decode attention with a fused RoPE + KV write
// (kernels/attention_decode_common.cuh, FusedRopeKv). Both use these two functions, so their rotated values
// are bitwise the same.
//
// Every rounding is spelled out with an intrinsic (__fmul_rn, __fmaf_rn), because the plain
// expressions `xa * c - xb * s` and `xb * c + xa * s` are contracted into FMAs by nvcc and ptxas
// in a way that depends on the surrounding code: the same expressions inlined from a helper
// taking references gave RopeKvWriteKernel a different contraction (other rounded bits) than
// the same expressions written in the kernel. The forms below are the ones the compiler
// chose for RopeKvWriteKernel's original in-kernel expressions (checked: with them, the
// kernel's machine code is byte for byte what it was, CUDA 13.0, sm_90a; the same check holds
// for RopeKernel<T, 1> of kernels/llama_ops.cu with its rotation written this way):
//   angle = position * inv_freq (one fp32 product, as transformers), precise sincosf;
//   ra = fma(xa, c, -(xb * s)),  rb = fma(xb, c, xa * s)  (the inner products rounded to fp32);
// the caller rounds ra and rb once to 16 bits (round to nearest even).
#pragma once

#include <cuda_runtime.h>

namespace flute::gpu::rope {

// sin and cos of frequency `inv_freq` at `position` (the row's position converted to float).
__device__ __forceinline__ void SinCos(float position, float inv_freq, float* sin_out, float* cos_out) {
  sincosf(__fmul_rn(position, inv_freq), sin_out, cos_out);
}

// The rotation of one pair: xa = x[j], xb = x[j + D/2]; c, s = cos, sin of frequency j.
__device__ __forceinline__ void RotatePair(float xa, float xb, float c, float s, float& ra, float& rb) {
  ra = __fmaf_rn(xa, c, -__fmul_rn(xb, s));
  rb = __fmaf_rn(xb, c, __fmul_rn(xa, s));
}

}  // namespace flute::gpu::rope
