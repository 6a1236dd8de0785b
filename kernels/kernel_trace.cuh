// Device side of kernels/kernel_trace.h. A traced kernel declares `trace::Scope scope(kind,
// aux0, aux1);` first; GridDependencyWait (kernels/pdl.cuh) marks the wait. Each .cu file with
// traced kernels has its own copy of the buffer pointer (no relocatable device code), set by
// the setter that FLUTE_TRACE_SETTER(name) defines in it and Enable (kernel_trace.cu) calls.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/kernel_trace.h"

namespace flute::trace {

#ifdef FLUTE_KERNEL_TRACE

namespace {
__device__ unsigned char* g_buffer = nullptr;  // this file's copy
}  // namespace

__device__ __forceinline__ uint64_t GlobalTimer() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}

// The block's wait time, in shared memory (written and read by thread 0 only).
__device__ __forceinline__ uint64_t& WaitedSlot() {
  __shared__ uint64_t waited;
  return waited;
}

__device__ __forceinline__ void MarkWaited() {
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) WaitedSlot() = GlobalTimer();
}

// Diagnostic marks (thread 0): up to 4 times after the wait, in units of 8 ns (16 bits each),
// packed into the record's aux fields in place of the values the Scope was given.
__device__ __forceinline__ uint32_t* MarkSlots() {
  __shared__ uint32_t marks[3];  // [0..1]: packed times, [2]: 1 when any mark was set
  return marks;
}
__device__ __forceinline__ void Mark(int i) {
  if (threadIdx.x != 0 || threadIdx.y != 0 || threadIdx.z != 0) return;
  const uint64_t w = WaitedSlot();
  const uint32_t units = w == 0 ? 0u : static_cast<uint32_t>(min((GlobalTimer() - w) / 8, uint64_t{0xffff}));
  uint32_t* m = MarkSlots();
  m[i / 2] = (m[i / 2] & (0xffffu << (16 * (1 - i % 2)))) | (units << (16 * (i % 2)));
  m[2] = 1;
}

class Scope {
 public:
  __device__ explicit Scope(uint32_t kind, int32_t aux0 = 0, int32_t aux1 = 0)
      : kind_(kind), aux0_(aux0), aux1_(aux1) {
    on_ = g_buffer != nullptr && threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
    if (on_) {
      start_ = GlobalTimer();
      WaitedSlot() = 0;
      MarkSlots()[0] = MarkSlots()[1] = MarkSlots()[2] = 0;
    }
  }
  __device__ ~Scope() {
    if (!on_) return;
    const uint64_t end = GlobalTimer();
    const unsigned int i = atomicAdd(reinterpret_cast<unsigned int*>(g_buffer), 1u);
    if (i >= kMaxRecords) return;
    Record* r = reinterpret_cast<Record*>(g_buffer + kHeaderBytes) + i;
    uint64_t grid;
    asm("mov.u64 %0, %%gridid;\n" : "=l"(grid));
    r->grid = grid;
    r->kind = kind_;
    r->block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    r->start = start_;
    r->waited = WaitedSlot();
    r->end = end;
    const bool marked = MarkSlots()[2] != 0;
    r->aux0 = marked ? static_cast<int32_t>(MarkSlots()[0]) : aux0_;
    r->aux1 = marked ? static_cast<int32_t>(MarkSlots()[1]) : aux1_;
  }

 private:
  uint64_t start_ = 0;
  uint32_t kind_;
  int32_t aux0_, aux1_;
  bool on_ = false;
};

#define FLUTE_TRACE_SETTER(name)                                                             \
  cudaError_t name(void* buffer) {                                                           \
    unsigned char* p = static_cast<unsigned char*>(buffer);                                  \
    return cudaMemcpyToSymbol(::flute::trace::g_buffer, &p, sizeof(p));                      \
  }

#else  // FLUTE_KERNEL_TRACE

__device__ __forceinline__ void MarkWaited() {}
__device__ __forceinline__ void Mark(int) {}

class Scope {
 public:
  __device__ explicit Scope(uint32_t, int32_t = 0, int32_t = 0) {}
};

#define FLUTE_TRACE_SETTER(name)

#endif  // FLUTE_KERNEL_TRACE

}  // namespace flute::trace
