// Arrival counting for "the last block to finish reduces" epilogues (split-K partials, decode
// attention splits): one thread per block publishes the whole block's earlier global stores
// and learns how many blocks arrived before it.
#pragma once

#include <cuda_runtime.h>

namespace flute {

// atom.add.acq_rel.gpu: the release half publishes this thread's earlier writes, and, after a
// __syncthreads(), those of its whole block (cumulativity through the barrier, the pattern of
// cooperative groups' grid sync); the acquire half makes the writes published by the adds it
// observes visible to this thread, and after a second __syncthreads() to its block. One fence
// per block instead of a __threadfence() per thread.
__device__ __forceinline__ int AtomicAddAcqRelGpu(int* address, int value) {
  int old;
  asm volatile("atom.add.acq_rel.gpu.global.s32 %0, [%1], %2;\n" : "=r"(old) : "l"(address), "r"(value) : "memory");
  return old;
}

}  // namespace flute
