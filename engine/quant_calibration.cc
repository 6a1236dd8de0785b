#include "engine/quant_calibration.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/dtype.h"
#include "engine/rope.h"
#include "engine/status_macros.h"
#include "engine/vector_ops.h"

namespace flute {

const char* const kProjectionKinds[7] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                         "gate_proj", "up_proj", "down_proj"};

std::string ProjectionPrefix(int layer, const std::string& kind) {
  const bool attention = kind == "q_proj" || kind == "k_proj" || kind == "v_proj" || kind == "o_proj";
  return absl::StrCat("model.layers.", layer, attention ? ".self_attn." : ".mlp.", kind);
}

namespace {

// A float tensor of the store converted to fp32, checked against `shape`.
absl::StatusOr<std::vector<float>> LoadFloat(const TensorStore& store, const std::string& name,
                                             std::vector<int64_t> shape) {
  const TensorView* view = store.Find(name);
  if (view == nullptr) return absl::NotFoundError(absl::StrCat("tensor ", name, " is missing"));
  if (view->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ", view->ShapeString(),
                                                   ", expected [", absl::StrJoin(shape, ", "), "]"));
  }
  if (view->dtype != DType::kF32 && view->dtype != DType::kF16 && view->dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has dtype ", std::string(DTypeName(view->dtype)),
                                                   "; only F32, F16 and BF16 weights can be quantized"));
  }
  std::vector<float> out(static_cast<size_t>(view->num_elements()));
  ConvertToFloat(view->dtype, view->data, out.size(), out.data());
  return out;
}

// y[m, n] = x[m, k] · Wᵀ
void MatmulTransposed(const float* x, int64_t m, const std::vector<float>& w, int n, int k, float* y) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), n, k, 1.0f, x, k, w.data(), k,
              0.0f, y, n);
}

// XᵀX [k, k] of x[m, k].
std::vector<float> Gram(const std::vector<float>& x, int64_t m, int k) {
  std::vector<float> xtx(static_cast<size_t>(k) * k);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, k, static_cast<int>(m), 1.0f, x.data(), k,
              x.data(), k, 0.0f, xtx.data(), k);
  return xtx;
}

class LayerwiseCalibration {
 public:
  LayerwiseCalibration(const ModelConfig& config, const TensorStore& store, int bits, int group_size,
                       const CalibratedQuantizeFn& quantize, const std::function<void(int, int)>& progress)
      : config_(config), store_(store), bits_(bits), group_size_(group_size), quantize_(quantize),
        progress_(progress), inv_freq_(RopeInverseFrequencies(config.rope, config.head_dim)) {}

  absl::Status Run(const std::vector<int32_t>& tokens, int window, int windows) {
    window_ = window;
    rows_ = static_cast<int64_t>(window) * windows;
    const int d = config_.hidden_size;
    ASSIGN_OR_RETURN(std::vector<float> embed, LoadFloat(store_, "model.embed_tokens.weight",
                                                         {config_.vocab_size, d}));
    hidden_.resize(static_cast<size_t>(rows_) * d);
    for (int64_t r = 0; r < rows_; ++r) {
      const int32_t id = tokens[r];
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("calibration token ", r, " is ", id,
                                                       ", outside the vocabulary [0, ", config_.vocab_size, ")"));
      }
      std::copy_n(&embed[static_cast<size_t>(id) * d], d, &hidden_[r * d]);
    }
    for (int layer = 0; layer < config_.num_layers; ++layer) RETURN_IF_ERROR(RunLayer(layer));
    return absl::OkStatus();
  }

  std::map<std::string, QuantizedMatrix>& results() { return results_; }

 private:
  // Quantizes the projections `kinds` of `layer` (all reading input x[rows, k]) and returns
  // their dequantized weights, in order.
  absl::StatusOr<std::vector<std::vector<float>>> QuantizeGroup(int layer, std::vector<std::string> kinds,
                                                                const std::vector<float>& x, int k,
                                                                std::vector<int> out_features) {
    const std::vector<float> xtx = Gram(x, rows_, k);
    std::vector<std::vector<float>> dequantized;
    for (size_t i = 0; i < kinds.size(); ++i) {
      const std::string prefix = ProjectionPrefix(layer, kinds[i]);
      ASSIGN_OR_RETURN(std::vector<float> w, LoadFloat(store_, prefix + ".weight", {out_features[i], k}));
      const lut::LutShape shape{out_features[i], k, bits_, group_size_};
      RETURN_IF_ERROR(CheckQuantizable(shape, prefix + ".weight"));
      QuantizedMatrix q = quantize_(w.data(), shape, xtx);
      dequantized.push_back(Dequantize(q));
      results_[prefix] = std::move(q);
    }
    if (progress_) progress_(++groups_done_, 4 * config_.num_layers);
    return dequantized;
  }

  absl::Status RunLayer(int layer) {
    const int d = config_.hidden_size, hd = config_.head_dim, q_dim = config_.q_dim(), kv_dim = config_.kv_dim();
    const int inter = config_.intermediate_size;
    const float eps = static_cast<float>(config_.rms_norm_eps);
    const std::string base = absl::StrCat("model.layers.", layer, ".");
    ASSIGN_OR_RETURN(std::vector<float> norm1, LoadFloat(store_, base + "input_layernorm.weight", {d}));
    ASSIGN_OR_RETURN(std::vector<float> norm2, LoadFloat(store_, base + "post_attention_layernorm.weight", {d}));

    std::vector<float> x(static_cast<size_t>(rows_) * d);
    for (int64_t r = 0; r < rows_; ++r) RmsNorm(&hidden_[r * d], norm1.data(), eps, d, &x[r * d]);
    ASSIGN_OR_RETURN(auto qkv, QuantizeGroup(layer, {"q_proj", "k_proj", "v_proj"}, x, d, {q_dim, kv_dim, kv_dim}));
    std::vector<float> q(rows_ * q_dim), k(rows_ * kv_dim), v(rows_ * kv_dim);
    MatmulTransposed(x.data(), rows_, qkv[0], q_dim, d, q.data());
    MatmulTransposed(x.data(), rows_, qkv[1], kv_dim, d, k.data());
    MatmulTransposed(x.data(), rows_, qkv[2], kv_dim, d, v.data());
    for (int64_t r = 0; r < rows_; ++r) {
      const int position = static_cast<int>(r % window_);
      for (int h = 0; h < config_.num_heads; ++h) ApplyRope(inv_freq_, position, hd, &q[r * q_dim + h * hd]);
      for (int h = 0; h < config_.num_kv_heads; ++h) ApplyRope(inv_freq_, position, hd, &k[r * kv_dim + h * hd]);
    }
    std::vector<float> attention(rows_ * q_dim);
    Attend(q, k, v, &attention);
    ASSIGN_OR_RETURN(auto o, QuantizeGroup(layer, {"o_proj"}, attention, q_dim, {d}));
    std::vector<float> projected(rows_ * d);
    MatmulTransposed(attention.data(), rows_, o[0], d, q_dim, projected.data());
    for (size_t i = 0; i < hidden_.size(); ++i) hidden_[i] += projected[i];

    for (int64_t r = 0; r < rows_; ++r) RmsNorm(&hidden_[r * d], norm2.data(), eps, d, &x[r * d]);
    ASSIGN_OR_RETURN(auto gate_up, QuantizeGroup(layer, {"gate_proj", "up_proj"}, x, d, {inter, inter}));
    std::vector<float> gate(rows_ * inter), up(rows_ * inter);
    MatmulTransposed(x.data(), rows_, gate_up[0], inter, d, gate.data());
    MatmulTransposed(x.data(), rows_, gate_up[1], inter, d, up.data());
    for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    up = {};
    ASSIGN_OR_RETURN(auto down, QuantizeGroup(layer, {"down_proj"}, gate, inter, {d}));
    MatmulTransposed(gate.data(), rows_, down[0], d, inter, projected.data());
    for (size_t i = 0; i < hidden_.size(); ++i) hidden_[i] += projected[i];
    return absl::OkStatus();
  }

  // Causal grouped-query attention within each window. q [rows, q_dim], k/v [rows, kv_dim].
  void Attend(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
              std::vector<float>* out) const {
    const int hd = config_.head_dim, q_dim = config_.q_dim(), kv_dim = config_.kv_dim();
    const int group = config_.num_heads / config_.num_kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::vector<float> scores(static_cast<size_t>(window_) * window_);
    for (int64_t start = 0; start < rows_; start += window_) {
      for (int h = 0; h < config_.num_heads; ++h) {
        const int kvh = h / group;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, window_, window_, hd, scale,
                    &q[start * q_dim + h * hd], q_dim, &k[start * kv_dim + kvh * hd], kv_dim, 0.0f,
                    scores.data(), window_);
        for (int t = 0; t < window_; ++t) {
          float* row = &scores[static_cast<size_t>(t) * window_];
          float max_score = row[0];
          for (int j = 1; j <= t; ++j) max_score = std::max(max_score, row[j]);
          float sum = 0;
          for (int j = 0; j <= t; ++j) sum += row[j] = std::exp(row[j] - max_score);
          for (int j = 0; j <= t; ++j) row[j] /= sum;
          for (int j = t + 1; j < window_; ++j) row[j] = 0;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, window_, hd, window_, 1.0f, scores.data(),
                    window_, &v[start * kv_dim + kvh * hd], kv_dim, 0.0f, &(*out)[start * q_dim + h * hd],
                    q_dim);
      }
    }
  }

  const ModelConfig& config_;
  const TensorStore& store_;
  int bits_, group_size_;
  const CalibratedQuantizeFn& quantize_;
  const std::function<void(int, int)>& progress_;
  std::vector<float> inv_freq_;
  int window_ = 0;
  int64_t rows_ = 0;
  std::vector<float> hidden_;  // [rows, hidden] residual stream
  std::map<std::string, QuantizedMatrix> results_;
  int groups_done_ = 0;
};

}  // namespace

absl::StatusOr<std::map<std::string, QuantizedMatrix>> QuantizeWithCalibration(
    const ModelConfig& config, const TensorStore& store, const std::vector<int32_t>& tokens, int bits,
    int group_size, const CalibratedQuantizeFn& quantize, const CalibrationOptions& options,
    const std::function<void(int, int)>& progress) {
  const int64_t available = static_cast<int64_t>(tokens.size()) / options.window;
  if (available < 1) {
    return absl::InvalidArgumentError(absl::StrCat("calibration tokens: ", tokens.size(),
                                                   " tokens are fewer than one window of ", options.window));
  }
  const int windows = static_cast<int>(std::min<int64_t>(available, options.max_windows));
  LayerwiseCalibration calibration(config, store, bits, group_size, quantize, progress);
  RETURN_IF_ERROR(calibration.Run(tokens, options.window, windows));
  return std::move(calibration.results());
}

}  // namespace flute
