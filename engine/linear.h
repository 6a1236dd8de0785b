// Weight matrices of linear layers, in whatever storage the checkpoint has (16/32-bit dense,
// or LUT-quantized codes), behind one interface the CPU backend computes with.
#pragma once

#include <memory>
#include <string>

#include "engine/dtype.h"
#include "engine/safetensors.h"

namespace flute {

class ThreadPool;

// W[N, K] in the nn.Linear layout: N = out_features rows, each of K = in_features inputs.
class Linear {
 public:
  Linear(int out_features, int in_features) : out_features_(out_features), in_features_(in_features) {}
  virtual ~Linear() = default;

  int out_features() const { return out_features_; }
  int in_features() const { return in_features_; }

  // Writes rows [row_begin, row_end) of W, exactly dequantized to fp32, to
  // out[(row_end - row_begin) * K] (row-major). Thread-safe: called concurrently on
  // disjoint ranges.
  virtual void DequantizeRows(int row_begin, int row_end, float* out) const = 0;

  // DequantizeRows ranges start at multiples of this (packed formats share tiles of rows).
  virtual int row_alignment() const { return 1; }

  // One line for logs: "dense bf16 [4096, 512]", "lut nf4 g128 [4096, 512]".
  virtual std::string Describe() const = 0;

 private:
  int out_features_;
  int in_features_;
};

// A 16- or 32-bit matrix read in place from the mapped checkpoint (no copy).
class DenseLinear : public Linear {
 public:
  // `view` must be F32, F16 or BF16 with shape [N, K]; the caller validated it.
  explicit DenseLinear(const TensorView* view);
  void DequantizeRows(int row_begin, int row_end, float* out) const override;
  std::string Describe() const override;
  const TensorView& view() const { return *view_; }

 private:
  const TensorView* view_;
};

// y[M, N] = x[M, K] · Wᵀ in fp32 arithmetic. Small M streams W once with row dots; large M
// dequantizes blocks of rows and runs sgemm. x and y are row-major and must not alias.
void LinearForward(const Linear& weight, const float* x, int m, float* y, ThreadPool& pool);

}  // namespace flute
