// What the dense products' kernels share (dense_gemv.cu: the strip and cluster kernels;
// dense_gemv_wgmma.cu): the cp.async helpers, the launch attributes and cluster residency query,
// and the fused decode-step epilogues (DenseGemvParams: SwiGLU, residual add with the next norm's
// sums of squares, deferred RMSNorm), so that both kernels give the bits of the unfused kernels.
// `Args` is either kernel's argument struct: fields m, n, k, y, swiglu, residual, sumsq_out,
// prenorm_out, prenorm_weight, deferred_sumsq, norm_eps (dense_gemv.h says what each is).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/act_convert.cuh"
#include "kernels/dense_gemv.h"

namespace flute::gpu {

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; zeros where !valid (src-size 0: nothing is read).
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void CpAsyncWaitAll() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// The fields every dense kernel's argument struct takes from the call as they are.
template <typename Args>
void CopyCallArgs(const DenseGemvParams& p, Args* a) {
  a->x = p.x;
  a->w = p.w;
  a->y = p.y;
  a->m = static_cast<int>(p.m);
  a->n = static_cast<int>(p.n);
  a->k = static_cast<int>(p.k);
  a->swiglu = p.swiglu;
  a->residual = p.residual;
  a->sumsq_out = p.sumsq_out;
  a->prenorm_out = p.prenorm_out;
  a->prenorm_weight = p.prenorm_weight;
  a->deferred_sumsq = p.deferred_sumsq;
  a->norm_eps = p.norm_eps;
}

// OK, or Internal naming the kernel, the call's shape and `knob` = value, when the launch (err, or
// the error it left) failed.
inline absl::Status LaunchOutcome(cudaError_t err, const char* kernel, const DenseGemvParams& p, const char* knob,
                                  int value) {
  if (err == cudaSuccess) err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(kernel, " launch failed (m=", p.m, " n=", p.n, " k=", p.k, " ", knob, "=",
                                          value, "): ", cudaGetErrorString(err)));
}

// The launch attributes a dense kernel's launch combines (at most one of each).
struct LaunchAttributes {
  cudaLaunchAttribute attr[3];
  unsigned count = 0;
  void Carveout(int percent) {  // cudaLaunchAttributePreferredSharedMemoryCarveout
    attr[count].id = cudaLaunchAttributePreferredSharedMemoryCarveout;
    attr[count++].val.sharedMemCarveout = static_cast<unsigned int>(percent);
  }
  void Pdl() {  // programmatic dependent launch (kernels/pdl.cuh)
    attr[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[count++].val.programmaticStreamSerializationAllowed = 1;
  }
  void Cluster(int ctas) {  // 1-D clusters of `ctas` CTAs
    attr[count].id = cudaLaunchAttributeClusterDimension;
    attr[count].val.clusterDim.x = static_cast<unsigned>(ctas);
    attr[count].val.clusterDim.y = 1;
    attr[count++].val.clusterDim.z = 1;
  }
  void ApplyTo(cudaLaunchConfig_t* cfg) {
    cfg->attrs = attr;
    cfg->numAttrs = count;
  }
};

// How many clusters of `ctas` CTAs of `kernel` (threads per CTA, dynamic shared memory) the
// current device holds at once.
template <typename Kernel>
cudaError_t MaxActiveClusters(Kernel kernel, int ctas, int threads, int smem, int* clusters) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(ctas));
  cfg.blockDim = dim3(static_cast<unsigned>(threads));
  cfg.dynamicSmemBytes = static_cast<size_t>(smem);
  LaunchAttributes attributes;
  attributes.Cluster(ctas);
  attributes.ApplyTo(&cfg);
  return cudaOccupancyMaxActiveClusters(clusters, kernel, &cfg);
}

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
