#include "engine/linear.h"

#include <algorithm>
#include <vector>

#include <cblas.h>

#include "absl/strings/str_cat.h"
#include "engine/thread_pool.h"
#include "engine/vector_ops.h"

namespace flute {
namespace {

// Below this many input rows the weights are streamed once with row dots; from it on, a
// block of dequantized rows is reused across inputs by sgemm.
constexpr int kGemmMinRows = 6;
// Rows of W dequantized at once: small enough to stay in L2 next to x.
constexpr int kDotBlockRows = 16;
constexpr int kGemmBlockRows = 128;

int BlockRows(const Linear& w, int wanted) {
  const int align = std::max(1, w.row_alignment());
  return std::max(align, wanted / align * align);
}

// y[:, r] for r in [row_begin, row_end), one block of dequantized rows at a time: row dots
// for few inputs (W streamed once), one sgemm per block for many (each row reused m times).
void ForwardRows(const Linear& w, const float* x, int m, float* y, int64_t row_begin,
                 int64_t row_end, int block_rows, bool use_gemm) {
  const int k = w.in_features();
  const int n = w.out_features();
  thread_local std::vector<float> buffer;
  buffer.resize(static_cast<size_t>(block_rows) * k);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += block_rows) {
    const int64_t r1 = std::min<int64_t>(r0 + block_rows, row_end);
    w.DequantizeRows(static_cast<int>(r0), static_cast<int>(r1), buffer.data());
    if (use_gemm) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, static_cast<int>(r1 - r0), k, 1.0f,
                  x, k, buffer.data(), k, 0.0f, y + r0, n);
      continue;
    }
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = buffer.data() + (r - r0) * k;
      for (int i = 0; i < m; ++i) {
        y[static_cast<int64_t>(i) * n + r] = Dot(row, x + static_cast<int64_t>(i) * k, k);
      }
    }
  }
}

}  // namespace

DenseLinear::DenseLinear(const TensorView* view)
    : Linear(static_cast<int>(view->shape[0]), static_cast<int>(view->shape[1])), view_(view) {}

void DenseLinear::DequantizeRows(int row_begin, int row_end, float* out) const {
  const size_t k = static_cast<size_t>(in_features());
  const auto* base = static_cast<const char*>(view_->data) + row_begin * k * DTypeSize(view_->dtype);
  ConvertToFloat(view_->dtype, base, (row_end - row_begin) * k, out);
}

std::string DenseLinear::Describe() const {
  return absl::StrCat("dense ", DTypeName(view_->dtype), " ", view_->ShapeString());
}

void LinearForward(const Linear& weight, const float* x, int m, float* y, ThreadPool& pool) {
  if (m <= 0) return;
  static const bool single_threaded_blas = [] {
    openblas_set_num_threads(1);  // the pool parallelises over row blocks instead
    return true;
  }();
  (void)single_threaded_blas;
  const bool gemm = m >= kGemmMinRows;
  const int block_rows = BlockRows(weight, gemm ? kGemmBlockRows : kDotBlockRows);
  const int64_t n = weight.out_features();
  pool.ParallelFor(n, block_rows, [&](int64_t begin, int64_t end) {
    ForwardRows(weight, x, m, y, begin, end, block_rows, gemm);
  });
}

}  // namespace flute
