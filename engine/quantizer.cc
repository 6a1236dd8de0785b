#include "engine/quantizer.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/dtype.h"

namespace flute {
namespace {

float TableAbsMax(const std::vector<float>& table) {
  return std::max(std::fabs(table.front()), std::fabs(table.back()));
}

// fp16 scale that stays finite (weights beyond 65504 * max|table| are clamped).
uint16_t ScaleToHalf(double scale) {
  return FloatToHalf(static_cast<float>(std::min(std::fabs(scale), 65504.0)));
}

// Codes of one group of `count` weights for `scale` (nearest entries).
void AssignCodes(const float* w, int count, float scale, const std::vector<float>& table, uint8_t* codes) {
  const float inverse = scale > 0 ? 1.0f / scale : 0.0f;
  for (int i = 0; i < count; ++i) codes[i] = static_cast<uint8_t>(NearestCode(table, w[i] * inverse));
}

// sum h_i (w_i - scale * t[c_i])^2 of one group (h == nullptr: h_i = 1).
double GroupError(const float* w, const float* h, int count, float scale, const std::vector<float>& table,
                  const uint8_t* codes) {
  double error = 0;
  for (int i = 0; i < count; ++i) {
    const double d = w[i] - static_cast<double>(scale) * table[codes[i]];
    error += (h ? h[i] : 1.0) * d * d;
  }
  return error;
}

// The best fp16 scale (and its codes) for one group under weights h: a grid of shrunk absmax
// scales, each refined by alternating nearest codes and the weighted least-squares scale
// sum h w t / sum h t^2. Writes codes and returns the fp16 scale.
uint16_t SearchGroupScale(const float* w, const float* h, int count, const std::vector<float>& table,
                          uint8_t* codes) {
  float absmax = 0;
  for (int i = 0; i < count; ++i) absmax = std::max(absmax, std::fabs(w[i]));
  const double rtn_scale = absmax / TableAbsMax(table);
  std::vector<uint8_t> trial(count);
  uint16_t best_half = ScaleToHalf(rtn_scale);
  AssignCodes(w, count, HalfToFloat(best_half), table, codes);
  double best_error = GroupError(w, h, count, HalfToFloat(best_half), table, codes);
  if (absmax == 0) return best_half;
  for (int step = 0; step <= 40; ++step) {
    const double shrink = 1.0 - 0.0125 * step;  // 1.0 down to 0.5
    double scale = rtn_scale * shrink;
    for (int iteration = 0; iteration < 3; ++iteration) {
      const uint16_t half = ScaleToHalf(scale);
      const float s = HalfToFloat(half);
      AssignCodes(w, count, s, table, trial.data());
      const double error = GroupError(w, h, count, s, table, trial.data());
      if (error < best_error) {
        best_error = error;
        best_half = half;
        std::copy(trial.begin(), trial.end(), codes);
      }
      double numerator = 0, denominator = 0;
      for (int i = 0; i < count; ++i) {
        const double t = table[trial[i]], weight = h ? h[i] : 1.0;
        numerator += weight * w[i] * t;
        denominator += weight * t * t;
      }
      if (denominator <= 0 || numerator <= 0) break;
      scale = numerator / denominator;
    }
  }
  return best_half;
}

// In-place Cholesky factorization A = L Lᵀ of a symmetric positive definite [k, k] matrix;
// L is left in the lower triangle (upper zeroed). False if A is not positive definite.
bool CholeskyLower(std::vector<double>& a, int k) {
  for (int j = 0; j < k; ++j) {
    double d = a[j * k + j];
    for (int p = 0; p < j; ++p) d -= a[j * k + p] * a[j * k + p];
    if (d <= 0) return false;
    d = std::sqrt(d);
    a[j * k + j] = d;
    for (int i = j + 1; i < k; ++i) {
      double s = a[i * k + j];
      for (int p = 0; p < j; ++p) s -= a[i * k + p] * a[j * k + p];
      a[i * k + j] = s / d;
    }
    for (int i = 0; i < j; ++i) a[i * k + j] = 0;
  }
  return true;
}

// U upper-triangular with H^-1 = Uᵀ U, from H (damped). Returns false if H is singular.
bool UpperCholeskyOfInverse(std::vector<double> h, int k, std::vector<double>* u) {
  if (!CholeskyLower(h, k)) return false;
  // Inverse of L (lower), column by column, then H^-1 = L^-T L^-1.
  std::vector<double> linv(static_cast<size_t>(k) * k, 0.0);
  for (int j = 0; j < k; ++j) {
    linv[j * k + j] = 1.0 / h[j * k + j];
    for (int i = j + 1; i < k; ++i) {
      double s = 0;
      for (int p = j; p < i; ++p) s += h[i * k + p] * linv[p * k + j];
      linv[i * k + j] = -s / h[i * k + i];
    }
  }
  std::vector<double> inverse(static_cast<size_t>(k) * k, 0.0);
  for (int i = 0; i < k; ++i) {
    for (int j = 0; j <= i; ++j) {
      double s = 0;
      for (int p = i; p < k; ++p) s += linv[p * k + i] * linv[p * k + j];
      inverse[i * k + j] = inverse[j * k + i] = s;
    }
  }
  // H^-1 = L2 L2ᵀ; U = L2ᵀ.
  if (!CholeskyLower(inverse, k)) return false;
  u->assign(static_cast<size_t>(k) * k, 0.0);
  for (int i = 0; i < k; ++i)
    for (int j = 0; j <= i; ++j) (*u)[j * k + i] = inverse[i * k + j];
  return true;
}

}  // namespace

absl::Status CheckQuantizable(const lut::LutShape& shape, const std::string& what) {
  if (shape.bits < 2 || shape.bits > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": bits must be 2, 3 or 4, got ", shape.bits));
  }
  const int g = shape.group_size;
  if (g != 32 && g != 64 && g != 128 && g != 256) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": group size must be 32, 64, 128 or 256, got ", g));
  }
  if (shape.k % g != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": in_features K = ", shape.k, " is not divisible by the group size G = ",
                     g, " (shape [", shape.n, ", ", shape.k, "]); choose a G that divides K"));
  }
  absl::Status format = lut::CheckShape(shape);
  if (!format.ok()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", format.message()));
  return absl::OkStatus();
}

int NearestCode(const std::vector<float>& table, float x) {
  // Entry i is nearest when x lies between the midpoints to its neighbours.
  int code = 0;
  const int count = static_cast<int>(table.size());
  while (code + 1 < count && x > 0.5f * (table[code] + table[code + 1])) ++code;
  return code;
}

QuantizedMatrix QuantizeRtn(const float* w, const lut::LutShape& shape, const std::vector<float>& table) {
  QuantizedMatrix q{shape, {}, {}, table};
  const int64_t groups = shape.k / shape.group_size;
  q.codes.resize(static_cast<size_t>(shape.n * shape.k));
  q.scales.resize(static_cast<size_t>(shape.n * groups));
  const float table_max = TableAbsMax(table);
  for (int64_t n = 0; n < shape.n; ++n) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t offset = n * shape.k + g * shape.group_size;
      float absmax = 0;
      for (int i = 0; i < shape.group_size; ++i) absmax = std::max(absmax, std::fabs(w[offset + i]));
      const uint16_t half = ScaleToHalf(absmax / table_max);
      q.scales[n * groups + g] = half;
      AssignCodes(w + offset, shape.group_size, HalfToFloat(half), table, q.codes.data() + offset);
    }
  }
  return q;
}

QuantizedMatrix QuantizeWeightedScales(const float* w, const lut::LutShape& shape,
                                       const std::vector<float>& table, const float* h_diag) {
  QuantizedMatrix q{shape, {}, {}, table};
  const int64_t groups = shape.k / shape.group_size;
  q.codes.resize(static_cast<size_t>(shape.n * shape.k));
  q.scales.resize(static_cast<size_t>(shape.n * groups));
  for (int64_t n = 0; n < shape.n; ++n) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t offset = n * shape.k + g * shape.group_size;
      const float* h = h_diag ? h_diag + g * shape.group_size : nullptr;
      q.scales[n * groups + g] =
          SearchGroupScale(w + offset, h, shape.group_size, table, q.codes.data() + offset);
    }
  }
  return q;
}

QuantizedMatrix QuantizeWithHessian(const float* w, const lut::LutShape& shape,
                                    const std::vector<float>& table, const float* hessian, double damp) {
  const int k = static_cast<int>(shape.k), n = static_cast<int>(shape.n), g = shape.group_size;
  std::vector<double> h(hessian, hessian + static_cast<size_t>(k) * k);
  std::vector<float> work(w, w + static_cast<size_t>(n) * k);
  // Inputs that never fire carry no information: pin them (their weights do not matter).
  double mean_diag = 0;
  for (int i = 0; i < k; ++i) mean_diag += h[i * k + i];
  mean_diag = std::max(mean_diag / k, 1e-12);
  for (int i = 0; i < k; ++i) {
    if (h[i * k + i] <= 0) h[i * k + i] = mean_diag;
    h[i * k + i] += damp * mean_diag;
  }
  std::vector<float> diag(k);
  for (int i = 0; i < k; ++i) diag[i] = static_cast<float>(h[i * k + i]);
  std::vector<double> u;
  if (!UpperCholeskyOfInverse(h, k, &u)) return QuantizeWeightedScales(w, shape, table, diag.data());

  QuantizedMatrix q{shape, std::vector<uint8_t>(static_cast<size_t>(n) * k),
                    std::vector<uint16_t>(static_cast<size_t>(n) * (k / g)), table};
  std::vector<float> scale(n);
  std::vector<uint8_t> scratch(g);
  for (int col = 0; col < k; ++col) {
    if (col % g == 0) {
      // Entering a group: learn its scales on the weights as updated so far.
      for (int row = 0; row < n; ++row) {
        const uint16_t half = SearchGroupScale(&work[static_cast<size_t>(row) * k + col], diag.data() + col,
                                               g, table, scratch.data());
        q.scales[static_cast<size_t>(row) * (k / g) + col / g] = half;
        scale[row] = HalfToFloat(half);
      }
    }
    const double pivot = u[static_cast<size_t>(col) * k + col];
    for (int row = 0; row < n; ++row) {
      float* wrow = &work[static_cast<size_t>(row) * k];
      const float s = scale[row];
      const int code = NearestCode(table, s > 0 ? wrow[col] / s : 0.0f);
      q.codes[static_cast<size_t>(row) * k + col] = static_cast<uint8_t>(code);
      const double error = (wrow[col] - s * table[code]) / pivot;
      const double* urow = &u[static_cast<size_t>(col) * k];
      for (int j = col + 1; j < k; ++j) wrow[j] -= static_cast<float>(error * urow[j]);
    }
  }
  return q;
}

std::vector<float> Dequantize(const QuantizedMatrix& q) {
  const int64_t groups = q.shape.k / q.shape.group_size;
  std::vector<float> w(q.codes.size());
  for (int64_t n = 0; n < q.shape.n; ++n) {
    for (int64_t k = 0; k < q.shape.k; ++k) {
      const float scale = HalfToFloat(q.scales[n * groups + k / q.shape.group_size]);
      w[n * q.shape.k + k] = q.table[q.codes[n * q.shape.k + k]] * scale;
    }
  }
  return w;
}

double WeightedSquaredError(const float* w, const QuantizedMatrix& q, const float* h_diag) {
  const std::vector<float> w_hat = Dequantize(q);
  double error = 0;
  for (int64_t n = 0; n < q.shape.n; ++n) {
    for (int64_t k = 0; k < q.shape.k; ++k) {
      const double d = w[n * q.shape.k + k] - w_hat[n * q.shape.k + k];
      error += (h_diag ? h_diag[k] : 1.0) * d * d;
    }
  }
  return error;
}

}  // namespace flute
