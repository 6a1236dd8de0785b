// Rotary position embeddings as transformers' LLaMA computes them (rotate_half form),
// with default, linear and llama3 frequency scaling.
#pragma once

#include <vector>

#include "engine/model_config.h"

namespace flute {

// head_dim / 2 inverse frequencies, in fp32 exactly as transformers'
// _compute_default_rope_parameters / _compute_llama3_parameters produce them; linear
// scaling is folded in (positions / factor == inv_freq / factor).
std::vector<float> RopeInverseFrequencies(const RopeConfig& rope, int head_dim);

// Rotates one head vector x[head_dim] in place for `position`: for i < d/2,
// (x[i], x[i + d/2]) -> (x[i] cos - x[i + d/2] sin, x[i + d/2] cos + x[i] sin).
void ApplyRope(const std::vector<float>& inv_freq, int position, int head_dim, float* x);

}  // namespace flute
