// The dense products' wgmma kernel for 9-32 rows (internal to kernels/: LaunchDenseGemv runs
// it, DenseGemvParams::variant 3 or the launcher's choice: DenseGemvRunsWgmma). See
// dense_gemv_wgmma.cu.
#pragma once

#include "absl/status/status.h"
#include "kernels/dense_gemv.h"

namespace flute::gpu {

// Launches `p` (already checked by CheckDenseGemvParams) on the wgmma kernel. splits: CTAs per
// cluster, each summing one contiguous piece of k of a 128-feature tile (1..8; 0 = the
// launcher's choice, or the FLUTE_DENSE_WGMMA_SPLITS environment variable for A/B runs).
absl::Status LaunchDenseGemvWgmma(const DenseGemvParams& p, int splits, CUstream_st* stream);

// The launcher's split count for an n x k product cut into tiles of tile_n features (1 <= result
// <= 8: the most pieces whose clusters all fit at once with 1/8 of the cluster slots to spare),
// given the CTAs that fit the device at once and how many clusters of each size do
// (resident_clusters[s - 1] for clusters of s CTAs). Pure host code: the rule, for tests and the
// file comment.
int ChooseDenseWgmmaSplits(int64_t n, int64_t k, int resident_ctas, const int* resident_clusters, int tile_n = 128);

// The launcher's tile (features per CTA: 128, 112, 96, 80 or 64) and split count. Where tiles of
// 128 need no split (k in one piece per CTA), the tile size whose CTAs fill the resident slots of
// their waves best, 128 unless a smaller one fills them 2 points better (8B gate/up: 224 tiles of
// 128 for the H100's 264 slots, 256 of 112); else 128 with the split rule. Pure host code.
struct DenseWgmmaPlan {
  int tile_n;
  int splits;
};
DenseWgmmaPlan ChooseDenseWgmmaPlan(int64_t n, int64_t k, int resident_ctas, const int* resident_clusters);

}  // namespace flute::gpu
