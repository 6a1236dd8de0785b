// The LUT-quantized weight format shared by the checkpoint, the CPU reference and the CUDA
// kernel. A weight matrix W[N, K] (nn.Linear layout) is stored as
//   codes   : b-bit indices code[n, k] in [0, 2^b), PACKED in the order the CUDA kernel
//             reads them (restructured offline; the layout depends only on (N, K, b), never
//             on the GPU, its SM count or a tile choice made at run time);
//   scales  : fp16 [N, K / G], one per group of G consecutive k of row n;
//   table   : 2^b values (fp32 in the checkpoint; the kernel rounds them to its 16-bit type).
// and Ŵ[n, k] = table[code[n, k]] * scale[n, k / G].
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace flute::lut {

struct LutShape {
  int64_t n = 0;       // out_features (rows of W)
  int64_t k = 0;       // in_features
  int bits = 4;        // 2, 3 or 4
  int group_size = 128;  // 32, 64, 128 or 256
};

// The shape rules (documented in kernels/README.md). InvalidArgument naming the value and
// the rule when (n, k, bits, group_size) cannot be stored in this format.
absl::Status CheckShape(const LutShape& shape);

// Bytes of the packed codes of `shape` (exactly n * k * bits / 8).
size_t PackedCodeBytes(const LutShape& shape);

// Rows that share packed tiles: DequantizeRows ranges must start at a multiple of this
// (and end at one, or at n).
int RowAlignment(const LutShape& shape);

// The packed layout's version, written to checkpoints as quantization_config.format_version.
// 2 since the 3-bit high plane was reordered so that four pair indices come from one LOP3
// (lut_format.cc); version 1 differs at 3 bits only.
constexpr int kLayoutVersion = 2;
// Rewrites `packed` (PackedCodeBytes(shape) bytes in the version-1 layout) in place into the
// current one: at 3 bits it moves the high plane's fields; at 2 and 4 bits it does nothing.
void UpgradeLayoutFromVersion1(const LutShape& shape, uint8_t* packed);

// codes: [n, k] row-major, one index per byte  ->  packed: PackedCodeBytes(shape) bytes.
void PackCodes(const LutShape& shape, const uint8_t* codes, uint8_t* packed);
// The exact inverse of PackCodes.
void UnpackCodes(const LutShape& shape, const uint8_t* packed, uint8_t* codes);

// Gate and up matrices of the same `half` shape -> one packed matrix of n = 2 * half.n rows
// whose strip s holds gate rows [8s, 8s + 8) as its rows 0-7 and the same up rows as its
// rows 8-15: the row order of the LUT-GEMM's SwiGLU epilogue (LutGemmParams::swiglu). Moves
// the packed pair fields, no unpacking; `out` has PackedCodeBytes({2 * half.n, ...}) bytes.
// The scales (and any per-row data) follow with InterleaveRowBlocks(rows of 8).
void InterleaveRowHalves(const LutShape& half, const uint8_t* gate, const uint8_t* up, uint8_t* out);

// Row-major [rows, row_bytes] a and b -> out[2 * rows, row_bytes] with rows [16j, 16j + 8)
// = a's rows [8j, 8j + 8) and rows [16j + 8, 16j + 16) = b's rows [8j, 8j + 8). rows % 8 == 0.
void InterleaveRowBlocks(const void* a, const void* b, int64_t rows, size_t row_bytes, void* out);

// Writes rows [row_begin, row_end) of Ŵ in fp32 to out[(row_end - row_begin) * k]:
// table[code] * scale, computed exactly in fp32 (scale converted from fp16).
void DequantizeRows(const LutShape& shape, const uint8_t* packed, const uint16_t* scales_f16,
                    const float* table, int64_t row_begin, int64_t row_end, float* out);

// Reference matmul: y[m, n] = sum_k x[m, k] * Ŵ[n, k], fp32 inputs and accumulation.
// Slow and obviously correct: what every fast path is tested against.
void ReferenceMatmul(const LutShape& shape, const uint8_t* packed, const uint16_t* scales_f16,
                     const float* table, const float* x, int64_t m, float* y);

}  // namespace flute::lut
