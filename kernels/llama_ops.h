// Element-wise and row-wise CUDA kernels of the LLaMA forward pass (everything but the
// matmuls and attention): embedding gather, residual add fused with RMSNorm, rotary
// embeddings, SwiGLU, LUT-weight dequantization (for the large-M prefill path) and the
// random fills the end-to-end benchmark builds its models with.
//
// Conventions for every launcher here: pointers are device pointers; the launch is
// asynchronous on `stream` and capturable in a CUDA graph (no allocation, no sync);
// the return is Internal with the CUDA error after the launch, InvalidArgument for bad
// sizes. "act" buffers hold `dtype` (fp16 or bf16); arithmetic is fp32 throughout.
// Declared without CUDA headers; without CUDA every launcher returns Unimplemented.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/lut_format.h"
#include "kernels/lut_gemm.h"

namespace flute::gpu {

using lut::ActivationType;

// residual[m, hidden] (fp32) = table[tokens[i], :] converted to fp32. `table` is
// [vocab, hidden] in `table_dtype`. Token ids were validated on the host; an id outside
// [0, vocab) writes zeros (never reads out of bounds).
absl::Status LaunchEmbedding(ActivationType table_dtype, const int32_t* tokens, int m,
                             const void* table, int vocab, int hidden, float* residual,
                             CUstream_st* stream);

// If x != nullptr: residual[m, hidden] += x (x is act). Then, per row,
// out = residual * rsqrt(mean(residual^2) + eps) * weight, written as act [m, hidden].
// `weight` is fp32 [hidden]. Matches transformers' LlamaRMSNorm computed in fp32.
absl::Status LaunchAddRmsNorm(ActivationType dtype, int m, int hidden, float eps, const void* x,
                              float* residual, const float* weight, void* out,
                              CUstream_st* stream);

// Rotary embedding (rotate_half form, as engine/rope.h) applied in place to the q and k
// heads of a fused projection output qkv[m, row_stride] (act): q heads at columns
// [0, num_heads * head_dim), k heads at [k_offset, k_offset + num_kv_heads * head_dim).
// Row i has position positions[i]; inv_freq is fp32 [head_dim / 2]. For each head and
// j < head_dim/2: angle = position * inv_freq[j] (fp32 product, as transformers), then
// (x[j], x[j+d/2]) -> (x[j] cos - x[j+d/2] sin, x[j+d/2] cos + x[j] sin).
absl::Status LaunchRope(ActivationType dtype, void* qkv, int m, int row_stride, int num_heads,
                        int k_offset, int num_kv_heads, int head_dim, const int32_t* positions,
                        const float* inv_freq, CUstream_st* stream);

// gate_up[m, 2 * inter] (act) -> out[m, inter] = silu(gate) * up (act), silu(g) = g / (1 +
// e^-g) in fp32. interleave = 0: gate in the first `inter` columns, up in the next.
// interleave = 8: gate and up alternate in runs of 8 columns (columns [16j, 16j + 8) are
// gate features [8j, 8j + 8), the next 8 the matching up features: the row order of a
// gate/up projection stored for the LUT-GEMM's SwiGLU epilogue, lut::LutGemmParams::swiglu);
// inter must then be a multiple of 8.
absl::Status LaunchSwiGlu(ActivationType dtype, const void* gate_up, int m, int inter, void* out,
                          CUstream_st* stream, int interleave = 0);

// Ŵ[n, k] = table[code] * scale (exactly as lut::DequantizeRows, then rounded to `dtype`),
// written row-major to out[shape.n, shape.k]. `packed`, `scales` and `table` as in
// LutGemmParams.
absl::Status LaunchLutDequantize(const lut::LutShape& shape, ActivationType dtype,
                                 const uint8_t* packed, const uint16_t* scales, const float* table,
                                 void* out, CUstream_st* stream);

// Random fills for benchmark models (deterministic in `seed`):
//  - act values uniform in [-amplitude, amplitude];
//  - bytes uniform in [0, 256) (random packed codes);
//  - fp16 values uniform in [lo, hi] (group scales);
//  - fp32 values all equal to `value`.
absl::Status LaunchFillUniform(ActivationType dtype, void* out, size_t count, float amplitude,
                               uint64_t seed, CUstream_st* stream);
absl::Status LaunchFillBytes(uint8_t* out, size_t count, uint64_t seed, CUstream_st* stream);
absl::Status LaunchFillHalfUniform(uint16_t* out, size_t count, float lo, float hi, uint64_t seed,
                                   CUstream_st* stream);
absl::Status LaunchFillFloat(float* out, size_t count, float value, CUstream_st* stream);

}  // namespace flute::gpu
