// Arrival counting for "the last block to finish reduces" epilogues (split-K partials, decode
// attention splits): one thread per block publishes the whole block's earlier global stores
// and learns how many blocks arrived before it; and, for reductions spread over the arriving
// blocks, a bounded wait for the others.
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

// ld.acquire.gpu: a poll of a counter that later RMWs (AtomicAddAcqRelGpu) released; seeing
// their value makes the writes they published visible to this thread (and, after a
// __syncthreads(), to its block).
__device__ __forceinline__ int LoadAcquireGpu(const int* address) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(address) : "memory");
  return v;
}

// %globaltimer: nanoseconds, for bounded waits.
__device__ __forceinline__ unsigned long long GlobalTimerNs() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}

}  // namespace flute
