// Quantization of one weight matrix W[N, K] to LUT form: b-bit codes into a 2^b table and an
// fp16 scale per group of G consecutive inputs, Ŵ[n, k] = table[code[n, k]] * scale[n, k / G].
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/lut_format.h"

namespace flute {

struct QuantizedMatrix {
  lut::LutShape shape;
  std::vector<uint8_t> codes;    // [n, k], one code per byte (pack with lut::PackCodes)
  std::vector<uint16_t> scales;  // fp16 [n, k / group_size]
  std::vector<float> table;      // 2^bits, ascending
};

// InvalidArgument naming `what` when W[n, k] cannot be quantized with bits / group_size
// (k not divisible by the group size, unsupported bits or group size, other format rules).
absl::Status CheckQuantizable(const lut::LutShape& shape, const std::string& what);

// Index of the table entry nearest to x (table ascending; ties go to the lower entry).
int NearestCode(const std::vector<float>& table, float x);

// Round to nearest: scale = fp16(absmax of the group / max |table|), each code the entry
// nearest to w / scale (with the stored fp16 scale). w is [n, k] row-major fp32.
QuantizedMatrix QuantizeRtn(const float* w, const lut::LutShape& shape, const std::vector<float>& table);

// Learned scales ("NFL"): per group, the scale and codes minimizing the output error
// sum_k h[k] (w[k] - scale * table[code[k]])^2 on calibration activations, where
// h = diag(XᵀX) over the layer's inputs ([k], non-negative). Searches a grid of shrunk
// absmax scales, then alternates nearest-code assignment with the closed-form weighted
// least-squares scale. Never worse (in that error) than RTN, which is one of the candidates.
QuantizedMatrix QuantizeWeightedScales(const float* w, const lut::LutShape& shape,
                                       const std::vector<float>& table, const float* h_diag);

// Learned scales plus error feedback over the full Hessian H = XᵀX ([k, k], row-major):
// scales from QuantizeWeightedScales on diag(H), then codes chosen column by column, each
// column's rounding error spread onto the columns not yet quantized through the Cholesky
// factor of H^-1 (the optimal update for a quadratic loss). `damp` is added to the
// diagonal as a fraction of its mean.
QuantizedMatrix QuantizeWithHessian(const float* w, const lut::LutShape& shape,
                                    const std::vector<float>& table, const float* hessian,
                                    double damp = 0.01);

// Ŵ[n, k] in fp32 (the reference definition, for tests and calibration).
std::vector<float> Dequantize(const QuantizedMatrix& q);

// sum_k h[k] (w - ŵ)^2 over the matrix (h == nullptr: plain squared error).
double WeightedSquaredError(const float* w, const QuantizedMatrix& q, const float* h_diag);

}  // namespace flute
