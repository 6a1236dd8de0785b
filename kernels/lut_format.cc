// The packed LUT weight layout (see kernels/README.md for the picture).
//
// W[N, K] is cut into tiles of 16 rows x 128 columns. Tiles are stored strip by strip
// (a strip = 16 consecutive rows), and inside a strip in increasing k:
//   tile(strip s, k-tile t) starts at byte (s * (K / 128) + t) * 256 * bits.
// A tile is what one warp of the CUDA kernel dequantizes for eight mma.m16n8k16 A operands
// (rows = n, columns = k). Lane l (g = l / 4, q = l % 4) owns 32 code PAIRS, pair p = 4 * kk + r
// (kk = 16-wide k sub-tile 0..7, r = A register 0..3):
//   row = g + 8 * (r & 1),  col = 16 * kk + 8 * (r >> 1) + 2 * q,  codes (row, col), (row, col + 1).
// Each pair is one index into the kernel's table of value pairs:
//   4-bit: 8-bit index c0 | c1 << 4; lane's 32 bytes = two 16-byte chunks, chunk c at byte
//          512 * c + 16 * l holding pairs 16 c .. 16 c + 15 (one byte each, in order).
//   2-bit: 4-bit index c0 | c1 << 2; lane's 16 bytes at 16 * l, pair p in nibble p (low first).
//   3-bit: two planes. Low plane (bytes 0..511): 4-bit index (c0 & 3) | (c1 & 3) << 2, laid out
//          as in 2-bit. High plane (bytes 512..767): lane's 8 bytes at 512 + 8 * l, the 2-bit
//          field (c0 >> 2) | (c1 >> 2) << 1 of pair p in byte 4 * (p >> 4) + ((p & 7) >> 1) at
//          bit 4 * (p & 1) + 2 * ((p >> 3) & 1) (HighPlaneField). So the fields of four pairs
//          whose low nibbles share a masked low-plane word (pairs 8i + 2j + o, j = 0..3) sit
//          in bits 4-5 of the four bytes of the high word after one shift, and one LOP3 then
//          gives four 6-bit pair indices a byte each (kernels/lut_gemm_device.cuh,
//          Pair3Indices). Format version 1 had pair p at bits 2p..2p+1 of the 8 bytes
//          (UpgradeLayoutFromVersion1 converts).
// So one 16-byte load (plus one 8-byte load at 3-bit) gives a lane whole mma fragments.
#include "kernels/lut_format.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace flute::lut {
namespace {

constexpr int kTileRows = 16;
constexpr int kTileCols = 128;
constexpr int kPairsPerLane = 32;

int64_t TileBytes(int bits) { return 256 * bits; }

// (row, col) inside a 16 x 128 tile of the first code of pair `pair` of lane `lane`.
inline void PairPosition(int lane, int pair, int* row, int* col) {
  const int g = lane >> 2, q = lane & 3;
  const int kk = pair >> 2, r = pair & 3;
  *row = g + 8 * (r & 1);
  *col = 16 * kk + 8 * (r >> 1) + 2 * q;
}

// 3-bit: where the high-plane field of pair p of lane `lane` lives (byte of the tile, shift).
inline void HighPlaneField(int lane, int p, int* byte, int* shift) {
  *byte = 512 + 8 * lane + 4 * (p >> 4) + ((p & 7) >> 1);
  *shift = 4 * (p & 1) + 2 * ((p >> 3) & 1);
}

// Writes the codes of one tile (tile_codes[16][128]) into its packed bytes.
void PackTile(int bits, const uint8_t* tile_codes, uint8_t* out) {
  std::memset(out, 0, static_cast<size_t>(TileBytes(bits)));
  for (int lane = 0; lane < 32; ++lane) {
    for (int p = 0; p < kPairsPerLane; ++p) {
      int row, col;
      PairPosition(lane, p, &row, &col);
      const unsigned c0 = tile_codes[row * kTileCols + col];
      const unsigned c1 = tile_codes[row * kTileCols + col + 1];
      if (bits == 4) {
        out[512 * (p >> 4) + 16 * lane + (p & 15)] = static_cast<uint8_t>(c0 | c1 << 4);
      } else if (bits == 2) {
        out[16 * lane + (p >> 1)] |= static_cast<uint8_t>((c0 | c1 << 2) << (4 * (p & 1)));
      } else {
        const unsigned lo = (c0 & 3) | (c1 & 3) << 2;
        const unsigned hi = (c0 >> 2) | (c1 >> 2) << 1;
        int hi_byte, hi_shift;
        HighPlaneField(lane, p, &hi_byte, &hi_shift);
        out[16 * lane + (p >> 1)] |= static_cast<uint8_t>(lo << (4 * (p & 1)));
        out[hi_byte] |= static_cast<uint8_t>(hi << hi_shift);
      }
    }
  }
}

// The inverse of PackTile: tile_codes[16][128]. Bits is a template argument so that the
// loops unroll without branches (DequantizeRows is the CPU backend's inner loop).
template <int kBits>
void UnpackTileT(const uint8_t* in, uint8_t* tile_codes) {
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, q = lane & 3;
    for (int p = 0; p < kPairsPerLane; ++p) {
      const int row = g + 8 * (p & 1);
      const int col = 16 * (p >> 2) + 8 * ((p >> 1) & 1) + 2 * q;
      unsigned c0, c1;
      if (kBits == 4) {
        const unsigned v = in[512 * (p >> 4) + 16 * lane + (p & 15)];
        c0 = v & 15;
        c1 = v >> 4;
      } else if (kBits == 2) {
        const unsigned v = (in[16 * lane + (p >> 1)] >> (4 * (p & 1))) & 15;
        c0 = v & 3;
        c1 = v >> 2;
      } else {
        int hi_byte, hi_shift;
        HighPlaneField(lane, p, &hi_byte, &hi_shift);
        const unsigned lo = (in[16 * lane + (p >> 1)] >> (4 * (p & 1))) & 15;
        const unsigned hi = (in[hi_byte] >> hi_shift) & 3;
        c0 = (lo & 3) | (hi & 1) << 2;
        c1 = (lo >> 2) | (hi >> 1) << 2;
      }
      tile_codes[row * kTileCols + col] = static_cast<uint8_t>(c0);
      tile_codes[row * kTileCols + col + 1] = static_cast<uint8_t>(c1);
    }
  }
}

void UnpackTile(int bits, const uint8_t* in, uint8_t* tile_codes) {
  if (bits == 4) {
    UnpackTileT<4>(in, tile_codes);
  } else if (bits == 3) {
    UnpackTileT<3>(in, tile_codes);
  } else {
    UnpackTileT<2>(in, tile_codes);
  }
}

const uint8_t* TilePtr(const LutShape& s, const uint8_t* packed, int64_t strip, int64_t ktile) {
  return packed + (strip * (s.k / kTileCols) + ktile) * TileBytes(s.bits);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        mant <<= 1;
        ++e;
      } while ((mant & 0x400) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

}  // namespace

absl::Status CheckShape(const LutShape& s) {
  if (s.bits != 2 && s.bits != 3 && s.bits != 4) {
    return absl::InvalidArgumentError(absl::StrCat("LUT bits must be 2, 3 or 4, got ", s.bits));
  }
  if (s.group_size != 32 && s.group_size != 64 && s.group_size != 128 && s.group_size != 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("LUT group_size must be 32, 64, 128 or 256, got ", s.group_size));
  }
  if (s.n <= 0 || s.n % kTileRows != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LUT out_features (n) must be a positive multiple of ", kTileRows, ", got ", s.n));
  }
  const int64_t k_multiple = std::max<int64_t>(kTileCols, s.group_size);
  if (s.k <= 0 || s.k % k_multiple != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LUT in_features (k) must be a positive multiple of max(128, group_size) = ", k_multiple,
        ", got ", s.k, " (group_size ", s.group_size, ")"));
  }
  return absl::OkStatus();
}

size_t PackedCodeBytes(const LutShape& s) {
  return static_cast<size_t>(s.n / kTileRows) * static_cast<size_t>(s.k / kTileCols) *
         static_cast<size_t>(TileBytes(s.bits));
}

int RowAlignment(const LutShape&) { return kTileRows; }

void PackCodes(const LutShape& s, const uint8_t* codes, uint8_t* packed) {
  std::vector<uint8_t> tile(kTileRows * kTileCols);
  for (int64_t strip = 0; strip < s.n / kTileRows; ++strip) {
    for (int64_t kt = 0; kt < s.k / kTileCols; ++kt) {
      for (int r = 0; r < kTileRows; ++r) {
        std::memcpy(&tile[r * kTileCols], codes + (strip * kTileRows + r) * s.k + kt * kTileCols,
                    kTileCols);
      }
      PackTile(s.bits, tile.data(),
               const_cast<uint8_t*>(TilePtr(s, packed, strip, kt)));
    }
  }
}

void UnpackCodes(const LutShape& s, const uint8_t* packed, uint8_t* codes) {
  std::vector<uint8_t> tile(kTileRows * kTileCols);
  for (int64_t strip = 0; strip < s.n / kTileRows; ++strip) {
    for (int64_t kt = 0; kt < s.k / kTileCols; ++kt) {
      UnpackTile(s.bits, TilePtr(s, packed, strip, kt), tile.data());
      for (int r = 0; r < kTileRows; ++r) {
        std::memcpy(codes + (strip * kTileRows + r) * s.k + kt * kTileCols, &tile[r * kTileCols],
                    kTileCols);
      }
    }
  }
}

void UpgradeLayoutFromVersion1(const LutShape& s, uint8_t* packed) {
  if (s.bits != 3) return;  // versions 1 and 2 differ in the 3-bit high plane only
  const int64_t tiles = (s.n / kTileRows) * (s.k / kTileCols);
  for (int64_t t = 0; t < tiles; ++t) {
    uint8_t* high = packed + t * TileBytes(3) + 512;
    for (int lane = 0; lane < 32; ++lane) {
      uint8_t* lane_bytes = high + 8 * lane;
      uint64_t old_fields = 0;  // version 1: pair p at bits 2p..2p+1 of the lane's 8 bytes
      for (int i = 0; i < 8; ++i) old_fields |= static_cast<uint64_t>(lane_bytes[i]) << (8 * i);
      std::memset(lane_bytes, 0, 8);
      for (int p = 0; p < kPairsPerLane; ++p) {
        int byte, shift;
        HighPlaneField(lane, p, &byte, &shift);
        packed[t * TileBytes(3) + byte] |= static_cast<uint8_t>(((old_fields >> (2 * p)) & 3) << shift);
      }
    }
  }
}

// Where the pair (row, 2i), (row, 2i + 1) of a tile lives in its packed bytes: the inverse
// of the lane/pair mapping above, tabulated once so that DequantizeTile walks rows in order.
struct PairSource {
  uint16_t lo_byte;  // byte holding the pair's index (4/2-bit) or low plane nibble (3-bit)
  uint8_t lo_shift;  // 0 or 4
  uint16_t hi_byte;  // 3-bit: byte of the high plane
  uint8_t hi_shift;  // 3-bit: 0, 2, 4 or 6
};

const PairSource* PairSources(int bits) {  // [16 rows][64 pairs]
  static const std::vector<PairSource>* tables = [] {
    auto* t = new std::vector<PairSource>[5];
    for (int b : {2, 3, 4}) {
      t[b].resize(kTileRows * kTileCols / 2);
      for (int lane = 0; lane < 32; ++lane) {
        for (int p = 0; p < kPairsPerLane; ++p) {
          int row, col;
          PairPosition(lane, p, &row, &col);
          PairSource src{};
          if (b == 4) {
            src.lo_byte = static_cast<uint16_t>(512 * (p >> 4) + 16 * lane + (p & 15));
          } else {
            src.lo_byte = static_cast<uint16_t>(16 * lane + (p >> 1));
            src.lo_shift = static_cast<uint8_t>(4 * (p & 1));
            int hi_byte, hi_shift;
            HighPlaneField(lane, p, &hi_byte, &hi_shift);
            src.hi_byte = static_cast<uint16_t>(hi_byte);
            src.hi_shift = static_cast<uint8_t>(hi_shift);
          }
          t[b][row * (kTileCols / 2) + col / 2] = src;
        }
      }
    }
    return t;
  }();
  return tables[bits].data();
}

namespace {

// The b-bit pair index at `src` of a packed tile, and its inverse.
unsigned GetPair(int bits, const uint8_t* tile, const PairSource& src) {
  if (bits == 4) return tile[src.lo_byte];
  const unsigned lo = (tile[src.lo_byte] >> src.lo_shift) & 15;
  if (bits == 2) return lo;
  return lo | ((tile[src.hi_byte] >> src.hi_shift) & 3) << 4;
}

void SetPair(int bits, uint8_t* tile, const PairSource& dst, unsigned v) {
  if (bits == 4) {
    tile[dst.lo_byte] = static_cast<uint8_t>(v);
    return;
  }
  tile[dst.lo_byte] = static_cast<uint8_t>((tile[dst.lo_byte] & ~(15u << dst.lo_shift)) | (v & 15) << dst.lo_shift);
  if (bits == 3) {
    tile[dst.hi_byte] =
        static_cast<uint8_t>((tile[dst.hi_byte] & ~(3u << dst.hi_shift)) | ((v >> 4) & 3) << dst.hi_shift);
  }
}

// Strips [strip_begin, strip_end) of InterleaveRowHalves' output.
void InterleaveStrips(const LutShape& half, const uint8_t* gate, const uint8_t* up, int64_t strip_begin,
                      int64_t strip_end, uint8_t* out) {
  const LutShape whole{2 * half.n, half.k, half.bits, half.group_size};
  const PairSource* sources = PairSources(half.bits);
  constexpr int kPairsPerRow = kTileCols / 2;
  for (int64_t strip = strip_begin; strip < strip_end; ++strip) {
    for (int64_t kt = 0; kt < whole.k / kTileCols; ++kt) {
      uint8_t* dst = const_cast<uint8_t*>(TilePtr(whole, out, strip, kt));
      for (int row = 0; row < kTileRows; ++row) {
        // Destination rows 0-7: gate, 8-15: up; both rows (row & 7) + 8 (strip & 1) of the
        // source strip strip / 2.
        const uint8_t* src = TilePtr(half, row < 8 ? gate : up, strip / 2, kt);
        const int src_row = (row & 7) + 8 * static_cast<int>(strip & 1);
        for (int i = 0; i < kPairsPerRow; ++i) {
          SetPair(half.bits, dst, sources[row * kPairsPerRow + i],
                  GetPair(half.bits, src, sources[src_row * kPairsPerRow + i]));
        }
      }
    }
  }
}

}  // namespace

void InterleaveRowHalves(const LutShape& half, const uint8_t* gate, const uint8_t* up, uint8_t* out) {
  const LutShape whole{2 * half.n, half.k, half.bits, half.group_size};
  const int64_t strips = whole.n / kTileRows;
  // A 70B gate/up matrix is 235M pairs: the strips are shared among threads.
  const int num_threads = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>({16, std::thread::hardware_concurrency(), strips / 64})));
  std::vector<std::thread> threads;
  for (int t = 0; t < num_threads; ++t) {
    threads.emplace_back([&, t] {
      InterleaveStrips(half, gate, up, strips * t / num_threads, strips * (t + 1) / num_threads, out);
    });
  }
  for (std::thread& th : threads) th.join();
}

void InterleaveRowBlocks(const void* a, const void* b, int64_t rows, size_t row_bytes, void* out) {
  const size_t block = 8 * row_bytes;
  for (int64_t j = 0; j < rows / 8; ++j) {
    std::memcpy(static_cast<char*>(out) + 2 * j * block, static_cast<const char*>(a) + j * block, block);
    std::memcpy(static_cast<char*>(out) + (2 * j + 1) * block, static_cast<const char*>(b) + j * block, block);
  }
}

// Dequantizes one tile into out (row stride ld), row by row in increasing column:
// scaled[row][group in tile][value] holds table[value] * scale.
template <int kBits>
void DequantizeTile(const uint8_t* in, const float* scaled, int groups_per_tile, int group_cols,
                    int rows, int64_t ld, float* out) {
  constexpr int kValues = 1 << kBits;
  const PairSource* sources = PairSources(kBits);
  for (int row = 0; row < rows; ++row) {
    const PairSource* src = sources + row * (kTileCols / 2);
    float* o = out + row * ld;
    for (int gt = 0; gt < groups_per_tile; ++gt) {
      const float* t = scaled + (row * groups_per_tile + gt) * kValues;
      for (int i = gt * group_cols / 2; i < (gt + 1) * group_cols / 2; ++i) {
        unsigned c0, c1;
        if (kBits == 4) {
          const unsigned v = in[src[i].lo_byte];
          c0 = v & 15;
          c1 = v >> 4;
        } else if (kBits == 2) {
          const unsigned v = (in[src[i].lo_byte] >> src[i].lo_shift) & 15;
          c0 = v & 3;
          c1 = v >> 2;
        } else {
          const unsigned lo = (in[src[i].lo_byte] >> src[i].lo_shift) & 15;
          const unsigned hi = (in[src[i].hi_byte] >> src[i].hi_shift) & 3;
          c0 = (lo & 3) | (hi & 1) << 2;
          c1 = (lo >> 2) | (hi >> 1) << 2;
        }
        o[2 * i] = t[c0];
        o[2 * i + 1] = t[c1];
      }
    }
  }
}

template <int kBits>
void DequantizeRowsT(const LutShape& s, const uint8_t* packed, const uint16_t* scales_f16,
                     const float* table, int64_t row_begin, int64_t row_end, float* out) {
  constexpr int kValues = 1 << kBits;
  const int64_t groups_per_row = s.k / s.group_size;
  const int group_cols = std::min(s.group_size, kTileCols);  // columns of one group in a tile
  const int groups_per_tile = kTileCols / group_cols;
  float scaled[kTileRows * 4 * kValues];  // [row][group in tile][value]
  for (int64_t row0 = row_begin; row0 < row_end; row0 += kTileRows) {
    const int64_t strip = row0 / kTileRows;
    const int rows = static_cast<int>(std::min<int64_t>(kTileRows, row_end - row0));
    for (int64_t kt = 0; kt < s.k / kTileCols; ++kt) {
      for (int r = 0; r < rows; ++r) {
        for (int gt = 0; gt < groups_per_tile; ++gt) {
          const int64_t group = (kt * kTileCols + gt * group_cols) / s.group_size;
          const float scale = HalfToFloat(scales_f16[(row0 + r) * groups_per_row + group]);
          float* t = scaled + (r * groups_per_tile + gt) * kValues;
          for (int v = 0; v < kValues; ++v) t[v] = table[v] * scale;
        }
      }
      DequantizeTile<kBits>(TilePtr(s, packed, strip, kt), scaled, groups_per_tile, group_cols,
                            rows, s.k, out + (row0 - row_begin) * s.k + kt * kTileCols);
    }
  }
}

void DequantizeRows(const LutShape& s, const uint8_t* packed, const uint16_t* scales_f16,
                    const float* table, int64_t row_begin, int64_t row_end, float* out) {
  if (s.bits == 4) {
    DequantizeRowsT<4>(s, packed, scales_f16, table, row_begin, row_end, out);
  } else if (s.bits == 3) {
    DequantizeRowsT<3>(s, packed, scales_f16, table, row_begin, row_end, out);
  } else {
    DequantizeRowsT<2>(s, packed, scales_f16, table, row_begin, row_end, out);
  }
}

void ReferenceMatmul(const LutShape& s, const uint8_t* packed, const uint16_t* scales_f16,
                     const float* table, const float* x, int64_t m, float* y) {
  std::vector<float> w(static_cast<size_t>(kTileRows * s.k));
  for (int64_t row0 = 0; row0 < s.n; row0 += kTileRows) {
    DequantizeRows(s, packed, scales_f16, table, row0, row0 + kTileRows, w.data());
    for (int64_t i = 0; i < m; ++i) {
      for (int r = 0; r < kTileRows; ++r) {
        float acc = 0.0f;
        const float* wr = w.data() + r * s.k;
        const float* xr = x + i * s.k;
        for (int64_t c = 0; c < s.k; ++c) acc += xr[c] * wr[c];
        y[i * s.n + row0 + r] = acc;
      }
    }
  }
}

}  // namespace flute::lut
