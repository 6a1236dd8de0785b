// The packed layout of checkpoint format version 1, written out independently of
// kernels/lut_format.cc: what 3-bit checkpoints written before version 2 hold. Tests pack
// codes with it to check that the loaders convert such checkpoints (version 1 differs from
// the current layout in the 3-bit high plane only).
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/lut_format.h"

namespace flute::testing {

// codes [n, k] row-major -> packed bytes (lut::PackedCodeBytes(shape)) in the version-1 layout.
inline void PackCodesLayoutVersion1(const lut::LutShape& s, const uint8_t* codes, uint8_t* packed) {
  const int tile_bytes = 256 * s.bits;
  std::memset(packed, 0, lut::PackedCodeBytes(s));
  for (int64_t strip = 0; strip < s.n / 16; ++strip) {
    for (int64_t kt = 0; kt < s.k / 128; ++kt) {
      uint8_t* out = packed + (strip * (s.k / 128) + kt) * tile_bytes;
      for (int lane = 0; lane < 32; ++lane) {
        for (int p = 0; p < 32; ++p) {  // pair p of lane l: row g + 8 (r & 1), column 16 kk + 8 (r >> 1) + 2 q
          const int row = (lane >> 2) + 8 * (p & 1);
          const int col = 16 * (p >> 2) + 8 * ((p >> 1) & 1) + 2 * (lane & 3);
          const uint8_t* src = codes + (strip * 16 + row) * s.k + kt * 128 + col;
          const unsigned c0 = src[0], c1 = src[1];
          if (s.bits == 4) {
            out[512 * (p >> 4) + 16 * lane + (p & 15)] = static_cast<uint8_t>(c0 | c1 << 4);
          } else if (s.bits == 2) {
            out[16 * lane + (p >> 1)] |= static_cast<uint8_t>((c0 | c1 << 2) << (4 * (p & 1)));
          } else {  // version 1's high plane: pair p in bits 2p..2p+1 of the lane's 8 bytes
            out[16 * lane + (p >> 1)] |= static_cast<uint8_t>(((c0 & 3) | (c1 & 3) << 2) << (4 * (p & 1)));
            out[512 + 8 * lane + (p >> 2)] |= static_cast<uint8_t>(((c0 >> 2) | (c1 >> 2) << 1) << (2 * (p & 3)));
          }
        }
      }
    }
  }
}

}  // namespace flute::testing
