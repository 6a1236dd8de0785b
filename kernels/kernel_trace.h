// Per-block timestamps of the GPU kernels, for timelines of a decode step (where a step's time
// goes between and inside the kernels of its chain; nsys is not on the GPU machine). Only a
// build configured with -DFLUTE_KERNEL_TRACE=ON carries the trace code: otherwise the kernels
// are unchanged, Compiled() is false and Enable() returns Unimplemented.
//
// Each traced kernel's thread 0 of every block appends one Record to a device buffer at its
// exit: %gridid (one value per launch), %globaltimer (ns) at the block's first instruction,
// after its grid dependency wait (griddepcontrol.wait, kernels/pdl.cuh; 0 when it has none)
// and at its exit. The engine enables it with FLUTE_KERNEL_TRACE_OUT=FILE (engine/cuda): the
// records of the last step go to FILE as CSV; tools/trace_timeline.py prints the timeline.
// A kernel may also call trace::Mark(i) (kernel_trace.cuh, i < 4): thread 0's time since its
// wait, in 8 ns units, replaces the record's aux fields (the decode attention's columns kernel
// marks its RoPE, first item, last item's copies and the end of its items: `--marks`).
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace flute::trace {

enum Kind : uint32_t {
  kEmbedding = 1,
  kAddRmsNorm = 2,
  kLutStrip = 3,         // aux0 = n, aux1 = k
  kDecodeAttention = 4,  // aux0 = sequences in the grid (the columns kernel: its marks)
  kDenseGemv = 5,        // aux0 = n, aux1 = k
  kSampling = 6,
  kLutTensorCore = 7,    // aux0 = n, aux1 = k
};

struct Record {
  uint64_t grid;    // %gridid
  uint32_t kind;    // Kind
  uint32_t block;   // linear block index
  uint64_t start;   // %globaltimer at the block's start, ns
  uint64_t waited;  // after the grid dependency wait (0: none)
  uint64_t end;     // at thread 0's exit
  int32_t aux0;
  int32_t aux1;
};

constexpr uint32_t kMaxRecords = 1u << 17;
constexpr size_t kHeaderBytes = 16;  // uint32 count of records written, then padding

// Device bytes of a trace buffer: the header and kMaxRecords records. Zero the count (the first
// 4 bytes) before each traced step.
constexpr size_t BufferBytes() { return kHeaderBytes + size_t{kMaxRecords} * sizeof(Record); }

// Whether the kernels were built with the trace code.
bool Compiled();

// Points every traced kernel at `buffer` (device memory of BufferBytes(); nullptr turns tracing
// off). Unimplemented without the trace code, Internal on a CUDA error.
absl::Status Enable(void* buffer);

}  // namespace flute::trace
