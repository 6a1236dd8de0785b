// Programmatic dependent launch (PDL, sm_90): a kernel launched with programmatic stream
// serialization may start before the previous kernel on its stream has finished, once every
// block of that kernel has called LaunchDependents() (or exited). It must call
// GridDependencyWait() before it reads anything the previous kernel writes, or writes
// anything it reads. Both are no-ops for launches without the attribute. Today the LUT-GEMM
// strip kernel is launched this way (LutGemmParams::pdl), and the kernels that precede it in
// a decoder layer (residual add + RMSNorm, SwiGLU, attention) let it start early. The other
// kernels of a forward pass are launched with LaunchWithPdl and begin with PdlPrologue():
// they wait at their very top, so their semantics are those of plain stream order, but each
// is already resident when its predecessor ends, which hides the launch latency that
// dominates a decode step's small kernels.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/kernel_trace.cuh"

namespace flute {

__device__ __forceinline__ void GridDependencyWait() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  trace::MarkWaited();  // (trace builds only, kernels/kernel_trace.h)
}
__device__ __forceinline__ void LaunchDependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::); }

// The first statement of a kernel launched with LaunchWithPdl: let the next kernel be
// scheduled, then wait for the previous one. Triggering first lets a chain of small kernels
// and the LUT-GEMM after them all become resident early, so the GEMM streams its first weight
// stages while the whole chain runs (its window is longer than one small kernel). Safe: each
// kernel still waits for its predecessor's completion before touching activations, and that
// predecessor completed only after its own wait, so completion is transitive; and a
// dependent grid is launched only once every block of its primary has started, so waiting
// blocks can never keep their primary from running.
__device__ __forceinline__ void PdlPrologue() {
  LaunchDependents();
  GridDependencyWait();
}

// kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization. The
// error, if any, is also left for cudaGetLastError().
template <typename... Params, typename... Args>
cudaError_t LaunchWithPdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          Args&&... args) {
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace flute
