// The tensor-core LUT-GEMM's 2-bit instances (lut_gemm_tc.cu lists the files):
// LaunchTcForBits<T, 2> for T = __half and __nv_bfloat16 (lut_gemm_tc_launch.h), and with it
// every TcLutGemmKernel, TcLutGemmClusterKernel and TcLutGemmFusedKernel instance of 2 bits
// (lut_gemm_tc_kernel.cuh) and TcClusterCapacity, in a file of their own so that the bit widths
// compile in parallel; this file's trace setter.
#include "kernels/lut_gemm_tc_kernel.cuh"
#include "kernels/lut_gemm_tc_launch.h"

namespace flute::lut::tc_detail {

template cudaError_t LaunchTcForBits<__half, 2>(const TcArgs&, const TcNormArgs&, const TcPlan&, bool, cudaStream_t);
template cudaError_t LaunchTcForBits<__nv_bfloat16, 2>(const TcArgs&, const TcNormArgs&, const TcPlan&, bool,
                                                         cudaStream_t);
template int TcClusterCapacity<__half, 2>(int, int);
template int TcClusterCapacity<__nv_bfloat16, 2>(int, int);

}  // namespace flute::lut::tc_detail

// This file's copy of the trace buffer (SetBufferLutTensorCore in lut_gemm_tc.cu calls the three).
namespace flute::trace {
FLUTE_TRACE_SETTER(SetBufferLutTensorCore2Bit)  // (trace builds only: kernels/kernel_trace.h)
}  // namespace flute::trace
