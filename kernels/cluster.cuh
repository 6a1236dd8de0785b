// Thread-block cluster helpers (sm_90): the CTA's rank and its cluster's index in a 1-D grid of
// 1-D clusters, the cluster barrier (whole or split into arrive / wait), and loads from another
// CTA's shared memory (distributed shared memory).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace flute {

__device__ __forceinline__ int ClusterRank() {
  uint32_t r;
  asm("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return static_cast<int>(r);
}
__device__ __forceinline__ int ClusterIndex() {  // 1-D grid and clusters: the cluster's x index
  uint32_t r;
  asm("mov.u32 %0, %%clusterid.x;\n" : "=r"(r));
  return static_cast<int>(r);
}
__device__ __forceinline__ int ClusterCount() {
  uint32_t r;
  asm("mov.u32 %0, %%nclusterid.x;\n" : "=r"(r));
  return static_cast<int>(r);
}
// Every thread of every CTA of the cluster; this CTA's shared-memory writes before it are
// visible to the cluster's reads after it. (The release is a MEMBAR.ALL.GPU: it also waits for
// the thread's outstanding global stores.)
__device__ __forceinline__ void ClusterSync() {
  asm volatile(
      "barrier.cluster.arrive.release.aligned;\n"
      "barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// The same barrier without ordering: for when only execution must meet (e.g. no CTA may exit
// while another still reads its shared memory, and those reads have completed).
__device__ __forceinline__ void ClusterSyncRelaxed() {
  asm volatile(
      "barrier.cluster.arrive.relaxed.aligned;\n"
      "barrier.cluster.wait.aligned;\n" ::: "memory");
}
// The shared::cluster address of the same shared-memory byte in CTA `rank` of the cluster.
__device__ __forceinline__ uint32_t MapShared(uint32_t addr, int rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(addr), "r"(rank));
  return r;
}
// volatile: stays after the cluster barrier that published the value.
__device__ __forceinline__ float LoadSharedCluster(uint32_t addr) {
  float v;
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(addr));
  return v;
}
__device__ __forceinline__ int LoadSharedClusterS32(uint32_t addr) {
  int v;
  asm volatile("ld.shared::cluster.s32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}
__device__ __forceinline__ float2 LoadSharedCluster2(uint32_t addr) {
  float2 v;
  asm volatile("ld.shared::cluster.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(addr));
  return v;
}
__device__ __forceinline__ float4 LoadSharedCluster4(uint32_t addr) {
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(addr));
  return v;
}

}  // namespace flute
