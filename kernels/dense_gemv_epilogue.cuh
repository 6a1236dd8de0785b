// The dense products' fused decode-step epilogues (DenseGemvParams: SwiGLU, residual add with
// the next norm's sums of squares, deferred RMSNorm), shared by the cluster kernel
// (dense_gemv.cu) and the wgmma kernel (dense_gemv_wgmma.cu), so that both give the bits of the
// unfused kernels. `Args` is either kernel's argument struct: fields m, n, k, y, swiglu, residual,
// sumsq_out, prenorm_out, prenorm_weight, deferred_sumsq, norm_eps (dense_gemv.h says what each is).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/act_convert.cuh"

namespace flute::gpu {

// The output type's conversion: T rounds to nearest even; float (the LM head's logits) is exact.
template <typename TY> struct OutCvt;
template <> struct OutCvt<float> {
  static __device__ __forceinline__ float FromFloat(float f) { return f; }
};
template <> struct OutCvt<__half> : Cvt<__half> {};
template <> struct OutCvt<__nv_bfloat16> : Cvt<__nv_bfloat16> {};

// The deferred norm's factor 1 / sqrt(sum of deferred_sumsq[mm, 0 .. k / 16) / k + eps) of X row mm,
// computed by the 16 lanes of a half-warp (l = lane & 15; all 32 lanes of the warp call it; rows
// mm >= m load nothing): lane l adds the float4s l, l + 16, ... of the row (4 in flight), each
// x, y, z, w in order, then a fixed xor tree over the 16 lanes gives every lane the same bits.
// The order depends on k alone (every CTA, call, kernel and m), and the formula is
// gpu::LaunchAddRmsNorm's (IEEE division and square root).
template <typename Args>
__device__ __forceinline__ float DeferredNormFactor(const Args& a, int mm, int l) {
  const int vecs = a.k / 64;  // float4 per row (k % 64 == 0: checked at the launch)
  const float4* row = reinterpret_cast<const float4*>(a.deferred_sumsq) + static_cast<int64_t>(mm) * vecs;
  float sum = 0.0f;
  for (int j0 = l; j0 < vecs; j0 += 64) {
    float4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int j = j0 + 16 * u;
      v[u] = j < vecs && mm < a.m ? __ldcg(row + j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      sum += v[u].x;
      sum += v[u].y;
      sum += v[u].z;
      sum += v[u].w;
    }
  }
#pragma unroll
  for (int offset = 1; offset < 16; offset <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  return 1.0f / sqrtf(sum / static_cast<float>(a.k) + a.norm_eps);
}

// silu(gate) * up of two fp32 sums, each rounded to T first: bitwise the plain GEMV followed by
// the SwiGLU kernel of llama_ops.cu (g / (1 + e^-g) * u in fp32).
template <typename T>
__device__ __forceinline__ T SwiGluOfSums(float gate_sum, float up_sum) {
  const float gate = Cvt<T>::ToFloat(Cvt<T>::FromFloat(gate_sum));
  const float up = Cvt<T>::ToFloat(Cvt<T>::FromFloat(up_sum));
  return Cvt<T>::FromFloat(gate / (1.0f + expf(-gate)) * up);
}

// The SwiGLU or residual epilogue of one output: Y[mm, out] = `sum` (the final fp32 sum, the
// deferred norm's factor already applied). Called by every lane of a warp, each half-warp for
// 16 consecutive outputs out0 .. out0 + 15 of one row (out0 a multiple of 16; lane16 = out -
// out0), with `valid` = mm < m && out < n. Returns false (nothing stored) when neither epilogue
// is asked: the caller then stores the plain output.
// - SwiGLU (n a multiple of 16, W's gate and up rows interleaved by 8): the lanes with lane16 < 8
//   hold gate rows, lane16 + 8 the matching up rows: one shuffle, and the lower 8 lanes store
//   y[mm, out0 / 2 + lane16] = silu(gate) * up.
// - Residual: residual[mm, out] = old + round(sum) (fp32), prenorm_out = round(prenorm_weight *
//   residual) when asked, and the half-warp's xor tree (offsets 1, 2, 4, 8) sums the 16 squares
//   into sumsq_out[mm, out / 16]. `old` and `prenorm_weight` are loaded by the caller (early).
template <typename T, typename Args>
__device__ __forceinline__ bool StoreFusedOutput(const Args& a, float sum, int mm, int out, int lane16, bool valid,
                                                 float old, float prenorm_weight) {
  if (a.swiglu) {
    const float up = __shfl_xor_sync(0xffffffffu, sum, 8);
    if (valid && (lane16 & 8) == 0) {
      static_cast<T*>(a.y)[static_cast<int64_t>(mm) * (a.n / 2) + (out - lane16) / 2 + (lane16 & 7)] =
          SwiGluOfSums<T>(sum, up);
    }
    return true;
  }
  if (a.residual != nullptr) {
    float sumsq = 0.0f;
    if (valid) {
      const int64_t at = static_cast<int64_t>(mm) * a.n + out;
      const float r = old + Cvt<T>::ToFloat(Cvt<T>::FromFloat(sum));
      a.residual[at] = r;
      if (a.prenorm_out != nullptr) static_cast<T*>(a.prenorm_out)[at] = Cvt<T>::FromFloat(prenorm_weight * r);
      sumsq = __fmul_rn(r, r);  // (never contracted into the adds below)
    }
#pragma unroll
    for (int offset = 1; offset < 16; offset <<= 1) sumsq += __shfl_xor_sync(0xffffffffu, sumsq, offset);
    if (valid && lane16 == 0) a.sumsq_out[static_cast<int64_t>(mm) * (a.n / 16) + out / 16] = sumsq;
    return true;
  }
  return false;
}

}  // namespace flute::gpu
