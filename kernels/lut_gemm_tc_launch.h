// Internal to the tensor-core LUT-GEMM (lut_gemm_tc.cu lists its files): the plan that
// lut_gemm_tc.cu makes and the launchers it calls, defined in lut_gemm_tc_kernel.cuh and
// explicitly instantiated per bit width in lut_gemm_tc_2bit.cu, _3bit.cu and _4bit.cu (T =
// __half and __nv_bfloat16 each); the environment switches the launchers read (defined in
// lut_gemm_tc.cu); the setters of those files' trace buffers. Included only by the tensor-core
// LUT-GEMM's .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/lut_gemm_tc_common.cuh"

namespace flute::lut::tc_detail {

struct TcPlan {
  int mt = 64;  // rows of X per block: 64 for m <= 64, else 128
  int num_m_tiles = 0;
  int num_col_blocks = 0;
  int splits = 1;
  int ktiles_per_split = 0;
  int smem_bytes = 0;
  size_t counter_bytes = 0;  // workspace [0, counter_bytes): per-tile counters, then fp32 partials
  bool own_reduce = true;
  // Stream-K (TcArgs::stream_k): `grid` blocks share the k-tiles evenly, `splits` = the most
  // pieces any tile is cut into (the partials' slots).
  bool stream_k = false;
  int grid = 0;
  // > 1: the tile's `splits` (= cluster) blocks form a thread-block cluster and sum their
  // partials through distributed shared memory (TcLutGemmClusterKernel: MT = 128, plain calls),
  // with no workspace.
  int cluster = 1;
  // TcArgs::spread_reduce: the classic plan's reduction spread over each tile's split blocks
  // (UseSpread, lut_gemm_tc.cu).
  unsigned char spread = kSpreadOff;
};

// lut_gemm_tc_{2,3,4}bit.cu (kBits = 2, 3, 4): launches the kernel instance of plan p's MT and
// of the main-loop variant the call asks for (the fused kernel where norm asks for a fused
// norm; bf16 only). Returns the launch's error.
template <typename T, int kBits>
cudaError_t LaunchTcForBits(const TcArgs& args, const TcNormArgs& norm, const TcPlan& p, bool pdl, cudaStream_t stream);

// lut_gemm_tc_{2,3,4}bit.cu: the most clusters of `cluster` blocks of the MT = 128 cluster kernel
// (with smem_bytes of dynamic shared memory) resident at once on this device; 0 if the query fails.
template <typename T, int kBits>
int TcClusterCapacity(int cluster, int smem_bytes);

// lut_gemm_tc.cu: FLUTE_LUT_TC_FOLD and FLUTE_LUT_TC_TILEGROUP, read on every launch
// (LaunchTcInstance, lut_gemm_tc_kernel.cuh).
bool FoldFromEnv();
bool TileGroupFromEnv();
bool RawScalesFromEnv();

}  // namespace flute::lut::tc_detail

namespace flute::trace {
#ifdef FLUTE_KERNEL_TRACE
// lut_gemm_tc_{2,3,4}bit.cu: each file's copy of the trace buffer (kernels/kernel_trace.cuh);
// SetBufferLutTensorCore (lut_gemm_tc.cu) sets the three.
cudaError_t SetBufferLutTensorCore2Bit(void* buffer);
cudaError_t SetBufferLutTensorCore3Bit(void* buffer);
cudaError_t SetBufferLutTensorCore4Bit(void* buffer);
#endif
}  // namespace flute::trace
