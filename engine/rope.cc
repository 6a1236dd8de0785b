#include "engine/rope.h"

#include <cmath>

namespace flute {

std::vector<float> RopeInverseFrequencies(const RopeConfig& rope, int head_dim) {
  const int half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in fp32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(rope.theta), exponent);
  }
  if (rope.type == RopeConfig::Type::kLinear) {
    for (float& f : inv_freq) f = f / static_cast<float>(rope.factor);
  } else if (rope.type == RopeConfig::Type::kLlama3) {
    const float factor = static_cast<float>(rope.factor);
    const float low = static_cast<float>(rope.low_freq_factor);
    const float high = static_cast<float>(rope.high_freq_factor);
    const float old_context = static_cast<float>(rope.original_max_position_embeddings);
    const float low_freq_wavelen = old_context / low;
    const float high_freq_wavelen = old_context / high;
    const float pi = 3.141592653589793f;
    for (float& f : inv_freq) {
      const float wavelen = 2.0f * pi / f;
      float scaled = wavelen > low_freq_wavelen ? f / factor : f;
      const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      if (medium) {
        const float smooth = (old_context / wavelen - low) / (high - low);
        scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
      }
      f = scaled;
    }
  }
  return inv_freq;
}

void ApplyRope(const std::vector<float>& inv_freq, int position, int head_dim, float* x) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float angle = inv_freq[i] * static_cast<float>(position);  // fp32, as torch
    const float c = static_cast<float>(std::cos(static_cast<double>(angle)));
    const float s = static_cast<float>(std::sin(static_cast<double>(angle)));
    const float a = x[i];
    const float b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

}  // namespace flute
