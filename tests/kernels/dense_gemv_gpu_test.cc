// The dense GEMV (kernels/dense_gemv.h) against a CPU reference that sums the exact 16-bit
// inputs in double, on fresh random data every run, with the output poisoned (NaN) before each
// call: fp16 and bf16, 16-bit and fp32 output, m in 1..8 (one CTA per strip) and 9, 12, 15,
// 16, 17, 24, 31, 32 (the cluster kernel, with clusters of 4 and of 8 CTAs, and at m <= 16 the
// flat variant, DenseGemvParams::variant = 2; the wgmma kernel at every m with 1, 3 and the
// launcher's split count), k from 8 to 14336 (odd multiples of 8 included), n from 1 to 6144
// and the LM head (128256 x 4096, many strips per cluster); rows bitwise independent of m across
// 1..32 (the first three kernels together, the wgmma kernel on its own), bitwise determinism,
// programmatic dependent launch behind a kernel that writes X, the fused epilogues bitwise
// against the unfused kernels. The argument checks run everywhere; the GPU tests skip without
// a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/dense_gemv.h"
#include "kernels/dense_gemv_wgmma.h"
#include "kernels/llama_ops.h"
#include "tests/kernels/gpu_test_util.h"

#ifdef FLUTE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace flute::gpu {
namespace {

using ::testing::HasSubstr;

// ---- Argument checks (host code only: no GPU needed) -----------------------------------------

// A call that passes every check; its pointers are never dereferenced by these tests.
DenseGemvParams ValidLookingCall() {
  DenseGemvParams p;
  p.m = 1;
  p.n = 4096;
  p.k = 4096;
  p.x = reinterpret_cast<const void*>(uintptr_t{0x10000});
  p.w = reinterpret_cast<const void*>(uintptr_t{0x20000});
  p.y = reinterpret_cast<void*>(uintptr_t{0x30000});
  return p;
}

TEST(DenseGemvArgsTest, SupportsStatesTheShapeRules) {
  struct Shape {
    int64_t m, n, k;
  };
  for (int64_t m = 1; m <= 32; ++m) EXPECT_TRUE(DenseGemvSupports(m, 4096, 4096)) << m;
  for (const Shape& s : {Shape{1, 1, 8}, Shape{1, 128256, 8192}, Shape{8, 8192, 28672}, Shape{32, 8192, 28672},
                         Shape{17, 128256, 4096}, Shape{3, 37, 1000}}) {
    EXPECT_TRUE(DenseGemvSupports(s.m, s.n, s.k)) << "m=" << s.m << " n=" << s.n << " k=" << s.k;
  }
  // m outside [1, 32], n or k zero, k not a multiple of 8, n past 2^30.
  for (const Shape& s : {Shape{0, 4096, 4096}, Shape{33, 4096, 4096}, Shape{64, 4096, 4096}, Shape{1, 0, 4096},
                         Shape{1, 4096, 0}, Shape{1, 4096, 1001}, Shape{1, 4096, 4},
                         Shape{1, int64_t{1} << 31, 4096}}) {
    EXPECT_FALSE(DenseGemvSupports(s.m, s.n, s.k)) << "m=" << s.m << " n=" << s.n << " k=" << s.k;
  }
  EXPECT_TRUE(CheckDenseGemvParams(ValidLookingCall()).ok());
  for (int cluster : {0, 2, 4, 8}) {
    DenseGemvParams p = ValidLookingCall();
    p.m = cluster == 2 ? 16 : 20;
    p.cluster = cluster;
    EXPECT_TRUE(CheckDenseGemvParams(p).ok()) << cluster;
  }
  for (int variant : {0, 1, 2}) {
    DenseGemvParams p = ValidLookingCall();
    p.m = 12;
    p.variant = variant;
    EXPECT_TRUE(CheckDenseGemvParams(p).ok()) << variant;
    p.m = 3;  // ignored at m <= 8
    EXPECT_TRUE(CheckDenseGemvParams(p).ok()) << variant;
  }
}

TEST(DenseGemvArgsTest, RejectsBadCallsNamingFieldExpectedAndFound) {
  struct Case {
    const char* what;
    std::function<void(DenseGemvParams*)> spoil;
    std::vector<std::string> message_parts;  // field, rule, value found
  };
  const std::vector<Case> cases = {
      {"m = 0", [](DenseGemvParams* p) { p->m = 0; }, {"m must be in [1, 32]", "got 0"}},
      {"m = 33", [](DenseGemvParams* p) { p->m = 33; }, {"m must be in [1, 32]", "got 33"}},
      {"m < 0", [](DenseGemvParams* p) { p->m = -1; }, {"m must be in [1, 32]", "got -1"}},
      {"cluster = 3",
       [](DenseGemvParams* p) {
         p->m = 16;
         p->cluster = 3;
       },
       {"cluster must be 0 (the launcher's choice), 2, 4 or 8", "got 3"}},
      {"cluster = 2 at m = 17",
       [](DenseGemvParams* p) {
         p->m = 17;
         p->cluster = 2;
       },
       {"cluster 2 (strips of 32 rows) takes m <= 16", "got m = 17"}},
      {"cluster = -1", [](DenseGemvParams* p) { p->cluster = -1; }, {"cluster must be", "got -1"}},
      {"variant = 4",
       [](DenseGemvParams* p) { p->variant = 4; },
       {"variant must be 0 (the launcher's choice), 1 (cluster kernel), 2 (flat kernel) or 3 (wgmma kernel)",
        "got 4"}},
      {"splits = 9", [](DenseGemvParams* p) { p->splits = 9; }, {"splits must be in [0, 8]", "got 9"}},
      {"splits = -1", [](DenseGemvParams* p) { p->splits = -1; }, {"splits must be in [0, 8]", "got -1"}},
      {"variant = -1", [](DenseGemvParams* p) { p->variant = -1; }, {"variant must be", "got -1"}},
      {"tile_n = 100",
       [](DenseGemvParams* p) { p->tile_n = 100; },
       {"tile_n must be 0 (the launcher's choice), 64, 80, 96, 112 or 128", "got 100"}},
      {"tile_n = 48", [](DenseGemvParams* p) { p->tile_n = 48; }, {"tile_n must be", "got 48"}},
      {"tile_n = 144", [](DenseGemvParams* p) { p->tile_n = 144; }, {"tile_n must be", "got 144"}},
      {"variant 2 at m = 17",
       [](DenseGemvParams* p) {
         p->m = 17;
         p->variant = 2;
       },
       {"variant 2 (the flat kernel) takes m <= 16", "got m = 17"}},
      {"k % 8 != 0", [](DenseGemvParams* p) { p->k = 1001; }, {"k must be a multiple of 8", "got 1001"}},
      {"k = 4", [](DenseGemvParams* p) { p->k = 4; }, {"k must be a multiple of 8", "got 4"}},
      {"k = 0", [](DenseGemvParams* p) { p->k = 0; }, {"k must be", "got 0"}},
      {"n = 0", [](DenseGemvParams* p) { p->n = 0; }, {"n must be in [1, 2^30]", "got 0"}},
      {"n too large", [](DenseGemvParams* p) { p->n = int64_t{1} << 31; }, {"n must be", "got 2147483648"}},
      {"x null", [](DenseGemvParams* p) { p->x = nullptr; }, {"x must be set"}},
      {"w null", [](DenseGemvParams* p) { p->w = nullptr; }, {"w must be set"}},
      {"y null", [](DenseGemvParams* p) { p->y = nullptr; }, {"y must be set"}},
      {"x misaligned",
       [](DenseGemvParams* p) { p->x = static_cast<const char*>(p->x) + 8; },
       {"x must be 16-byte aligned", "8 bytes past"}},
      {"w misaligned",
       [](DenseGemvParams* p) { p->w = static_cast<const char*>(p->w) + 2; },
       {"w must be 16-byte aligned", "2 bytes past"}},
      {"y misaligned (16-bit)",
       [](DenseGemvParams* p) { p->y = static_cast<char*>(p->y) + 1; },
       {"y must be 2-byte aligned", "1 bytes past"}},
      {"y misaligned (fp32)",
       [](DenseGemvParams* p) {
         p->y_fp32 = true;
         p->y = static_cast<char*>(p->y) + 2;
       },
       {"y must be 4-byte aligned", "fp32", "2 bytes past"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    DenseGemvParams p = ValidLookingCall();
    c.spoil(&p);
    const absl::Status st = CheckDenseGemvParams(p);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr("dense GEMV"));
    for (const std::string& part : c.message_parts) EXPECT_THAT(std::string(st.message()), HasSubstr(part));
#ifdef FLUTE_HAVE_CUDA
    // The launcher refuses the same call before any CUDA call (so this runs without a GPU).
    const absl::Status launched = LaunchDenseGemv(p, nullptr);
    EXPECT_EQ(launched, st);
#endif
  }
}

// The epilogues' rules (cluster kernel only, 16-bit y, n % 16, k % 64 for the deferred norm,
// the fields that go together), each refused with a message naming the field.
#ifdef FLUTE_HAVE_CUDA
// The wgmma kernel's split rule (host code): the most pieces of k, each >= 8 k-tiles of 64, whose
// clusters are all resident at once with 1/8 of the device's clusters of that size to spare; 1
// where the tiles alone fill the device or k is short.
TEST(DenseGemvArgsTest, WgmmaSplitRule) {
  // An H100-like device: 264 CTAs, and fewer clusters of the larger sizes (GPC boundaries).
  const int clusters[8] = {264, 132, 88, 66, 52, 44, 32, 30};
  EXPECT_EQ(ChooseDenseWgmmaSplits(28672, 4096, 264, clusters), 1);  // 224 tiles
  // 48 tiles: clusters of 5 would take 48 of 52 (more than 7/8), of 4 48 of 66.
  EXPECT_EQ(ChooseDenseWgmmaSplits(6144, 4096, 264, clusters), 4);
  // 32 tiles: clusters of 8 do not fit, of 7 would take all 32 (stragglers), of 6 32 of 44.
  EXPECT_EQ(ChooseDenseWgmmaSplits(4096, 4096, 264, clusters), 6);
  EXPECT_EQ(ChooseDenseWgmmaSplits(4096, 14336, 264, clusters), 6);
  EXPECT_EQ(ChooseDenseWgmmaSplits(4096, 1024, 264, clusters), 2);   // 16 k-tiles: pieces of 8
  EXPECT_EQ(ChooseDenseWgmmaSplits(256, 960, 264, clusters), 1);     // 15 k-tiles
  EXPECT_EQ(ChooseDenseWgmmaSplits(128256, 4096, 264, clusters), 1);  // more tiles than CTAs
  EXPECT_EQ(ChooseDenseWgmmaSplits(4096, 4096, 264, clusters, 96), 5);  // 43 tiles: 43 of 52 clusters of 5
  EXPECT_EQ(ChooseDenseWgmmaSplits(28672, 4096, 264, clusters, 112), 1);
}

// The tile rule: where tiles of 128 need no split, the tile whose CTAs fill the slots of their
// waves best (128 unless a smaller one fills them more than 2 points better, also unsplit);
// split products keep 128.
TEST(DenseGemvArgsTest, WgmmaTileRule) {
  const int clusters[8] = {264, 132, 88, 66, 52, 44, 32, 30};
  const auto plan = [&](int64_t n, int64_t k) {
    const DenseWgmmaPlan p = ChooseDenseWgmmaPlan(n, k, 264, clusters);
    return std::make_pair(p.tile_n, p.splits);
  };
  EXPECT_EQ(plan(28672, 4096), std::make_pair(112, 1));   // 256 tiles (224 of 128)
  EXPECT_EQ(plan(57344, 8192), std::make_pair(112, 1));   // 512 tiles in 2 waves: 97 % (448: 85 %)
  EXPECT_EQ(plan(4096, 4096), std::make_pair(128, 6));    // split: 128
  EXPECT_EQ(plan(4096, 14336), std::make_pair(128, 6));
  EXPECT_EQ(plan(6144, 4096), std::make_pair(128, 4));
  EXPECT_EQ(plan(8192, 8192), std::make_pair(128, 3));    // 64 tiles: 64 of 66 clusters of 4 is too tight
  EXPECT_EQ(plan(128256, 4096), std::make_pair(128, 1));  // 1002 tiles in 4 waves: 95 % (112: 87 %)
  EXPECT_EQ(plan(256, 960), std::make_pair(128, 1));      // 2 tiles: no size fills the device
}
#endif

TEST(DenseGemvArgsTest, RejectsBadEpiloguesNamingTheField) {
  const auto epilogue_call = [] {
    DenseGemvParams p = ValidLookingCall();
    p.m = 16;
    return p;
  };
  float* const residual = reinterpret_cast<float*>(uintptr_t{0x40000});
  float* const sums = reinterpret_cast<float*>(uintptr_t{0x50000});
  struct Case {
    const char* what;
    std::function<void(DenseGemvParams*)> spoil;
    std::vector<std::string> message_parts;
  };
  const std::vector<Case> cases = {
      {"swiglu at m = 8 on the strip kernel",
       [](DenseGemvParams* p) {
         p->swiglu = true;
         p->m = 8;
         p->variant = 1;
       },
       {"swiglu runs on the cluster kernel", "with variant 1 m must be in [9, 16], got 8"}},
      {"swiglu at m = 17 on the cluster kernel",
       [](DenseGemvParams* p) {
         p->swiglu = true;
         p->m = 17;
         p->variant = 1;
       },
       {"swiglu runs on the cluster kernel", "with variant 1 m must be in [9, 16], got 17"}},
      {"swiglu on the flat variant", [](DenseGemvParams* p) { p->swiglu = true; p->variant = 2; },
       {"swiglu runs on the cluster or wgmma kernel only", "variant must be 0, 1 or 3, got 2"}},
      {"swiglu with fp32 y", [](DenseGemvParams* p) { p->swiglu = true; p->y_fp32 = true; },
       {"swiglu writes 16-bit outputs", "y_fp32 must be false"}},
      {"swiglu with n % 16", [](DenseGemvParams* p) { p->swiglu = true; p->n = 4104; },
       {"swiglu needs n to be a multiple of 16", "got 4104"}},
      {"residual without sums", [&](DenseGemvParams* p) { p->residual = residual; },
       {"the residual epilogue needs sumsq_out"}},
      {"residual at m = 3 on the strip kernel",
       [&](DenseGemvParams* p) {
         p->residual = residual;
         p->sumsq_out = sums;
         p->m = 3;
         p->variant = 1;
       },
       {"the residual epilogue runs on the cluster kernel", "got 3"}},
      {"residual and swiglu", [&](DenseGemvParams* p) { p->residual = residual; p->sumsq_out = sums; p->swiglu = true; },
       {"swiglu and the residual epilogue cannot be combined"}},
      {"prenorm_out without its weight",
       [&](DenseGemvParams* p) {
         p->residual = residual;
         p->sumsq_out = sums;
         p->prenorm_out = sums;
       },
       {"prenorm_out and prenorm_weight must be set together"}},
      {"sums without residual", [&](DenseGemvParams* p) { p->sumsq_out = sums; },
       {"outputs of the residual epilogue", "residual must be set"}},
      {"deferred norm with k % 64", [&](DenseGemvParams* p) { p->deferred_sumsq = sums; p->k = 4104; },
       {"the deferred norm needs k to be a multiple of 64", "got 4104"}},
      {"deferred norm misaligned", [&](DenseGemvParams* p) { p->deferred_sumsq = sums + 1; },
       {"deferred_sumsq must be 16-byte aligned"}},
      {"deferred norm with eps < 0", [&](DenseGemvParams* p) { p->deferred_sumsq = sums; p->norm_eps = -1.0f; },
       {"norm_eps must be >= 0", "got -1"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    DenseGemvParams p = epilogue_call();
    c.spoil(&p);
    const absl::Status st = CheckDenseGemvParams(p);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    for (const std::string& part : c.message_parts) EXPECT_THAT(std::string(st.message()), HasSubstr(part));
#ifdef FLUTE_HAVE_CUDA
    EXPECT_EQ(LaunchDenseGemv(p, nullptr), st);
#endif
  }
  // Valid: each epilogue alone, SwiGLU with the deferred norm, the residual one without y.
  DenseGemvParams ok = epilogue_call();
  ok.swiglu = true;
  ok.deferred_sumsq = sums;
  EXPECT_TRUE(CheckDenseGemvParams(ok).ok());
  DenseGemvParams res = epilogue_call();
  res.y = nullptr;
  res.residual = residual;
  res.sumsq_out = sums;
  res.prenorm_out = sums;
  res.prenorm_weight = residual;
  EXPECT_TRUE(CheckDenseGemvParams(res).ok());
  // The wgmma kernel takes them at any m: the launcher's choice (16-bit outputs), or variant 3.
  for (int64_t m : {1, 8, 17, 32}) {
    DenseGemvParams wide = ok;
    wide.m = m;
    EXPECT_TRUE(CheckDenseGemvParams(wide).ok()) << m;
  }
  DenseGemvParams small = res;
  small.m = 3;
  small.variant = 3;
  EXPECT_TRUE(CheckDenseGemvParams(small).ok());
}

#ifndef FLUTE_HAVE_CUDA
TEST(DenseGemvGpuTest, SkippedWithoutCuda) {
  EXPECT_TRUE(absl::IsUnimplemented(LaunchDenseGemv(ValidLookingCall(), nullptr)));
  GTEST_SKIP() << "built without CUDA: the GPU dense GEMV tests need nvcc at build time";
}
#else

#define REQUIRE_GPU() REQUIRE_GPU_FOR("dense GEMV")
using flute::testing::ActivationName;
using flute::testing::Bf16ToFloat;
using flute::testing::DeviceBuffer;
using flute::testing::FloatToBf16;
using flute::testing::FloatToHalf;
using flute::testing::HalfToFloat;

// The exact value of every 16-bit pattern of dtype.
const std::vector<float>& Values(ActivationType dtype) {
  static const std::vector<float> tables[2] = {
      [] {
        std::vector<float> t(65536);
        for (uint32_t i = 0; i < 65536; ++i) t[i] = HalfToFloat(static_cast<uint16_t>(i));
        return t;
      }(),
      [] {
        std::vector<float> t(65536);
        for (uint32_t i = 0; i < 65536; ++i) t[i] = Bf16ToFloat(static_cast<uint16_t>(i));
        return t;
      }()};
  return tables[dtype == ActivationType::kFloat16 ? 0 : 1];
}

// count normally distributed values (standard deviation `scale`) in dtype, as bit patterns:
// a fresh pool of 65536 values from rng, placed by a generator seeded from rng (fast enough for
// the LM head's 525M weights).
std::vector<uint16_t> RandomBits(ActivationType dtype, size_t count, float scale, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<uint16_t> pool(65536);
  for (auto& b : pool) {
    const float f = normal(rng);
    b = dtype == ActivationType::kFloat16 ? FloatToHalf(f) : FloatToBf16(f);
  }
  uint64_t s = (static_cast<uint64_t>(rng()) << 32) | rng() | 1;
  std::vector<uint16_t> out(count);
  for (auto& b : out) {
    s ^= s << 13;  // xorshift64
    s ^= s >> 7;
    s ^= s << 17;
    b = pool[(s >> 20) & 0xffff];
  }
  return out;
}

// Y = X · Wᵀ summed in double from the exact inputs ([rows, n]), with sum |x·w| per element
// for the error bound. Threads over the columns; four partial sums per element (the products
// are exact, the double sums far below the tolerances), so the latency of dependent adds does
// not bound it: 32 rows of the LM head are ~17 G products.
struct Reference {
  int64_t n = 0;
  std::vector<double> y, abs_sum;
};

Reference ReferenceProduct(ActivationType dtype, const std::vector<uint16_t>& x, const std::vector<uint16_t>& w,
                           int64_t rows, int64_t n, int64_t k) {
  const std::vector<float>& v = Values(dtype);
  std::vector<float> xf(static_cast<size_t>(rows * k));
  for (size_t i = 0; i < xf.size(); ++i) xf[i] = v[x[i]];
  Reference ref;
  ref.n = n;
  ref.y.assign(static_cast<size_t>(rows * n), 0.0);
  ref.abs_sum.assign(static_cast<size_t>(rows * n), 0.0);
  const int threads = static_cast<int>(std::clamp<unsigned>(std::thread::hardware_concurrency(), 1, 32));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::vector<float> wrow(static_cast<size_t>(k));
      for (int64_t c = t; c < n; c += threads) {
        for (int64_t i = 0; i < k; ++i) wrow[i] = v[w[c * k + i]];
        for (int64_t r = 0; r < rows; ++r) {
          const float* xr = xf.data() + r * k;
          double s[4] = {0.0, 0.0, 0.0, 0.0}, a[4] = {0.0, 0.0, 0.0, 0.0};
          for (int64_t i = 0; i < k; i += 4) {  // k % 8 == 0
            for (int j = 0; j < 4; ++j) {
              const double p = static_cast<double>(xr[i + j]) * wrow[i + j];  // exact
              s[j] += p;
              a[j] += std::fabs(p);
            }
          }
          ref.y[r * n + c] = (s[0] + s[1]) + (s[2] + s[3]);
          ref.abs_sum[r * n + c] = (a[0] + a[1]) + (a[2] + a[3]);
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  return ref;
}

size_t OutBytes(bool y_fp32) { return y_fp32 ? 4 : 2; }

float OutValue(ActivationType dtype, bool y_fp32, const std::vector<uint8_t>& raw, size_t i) {
  if (y_fp32) {
    float f;
    std::memcpy(&f, raw.data() + 4 * i, 4);
    return f;
  }
  uint16_t b;
  std::memcpy(&b, raw.data() + 2 * i, 2);
  return dtype == ActivationType::kFloat16 ? HalfToFloat(b) : Bf16ToFloat(b);
}

// The first m rows of ref against the output: every element written and finite, within the
// element bound u·|ref| + (1 + u)·acc + floor (u: the output's rounding, acc: fp32 summation of
// k / 32 steps with some slack for the tensor core's internal sum, relative to sum |x·w|), and
// the normalized error ‖y − ref‖ / ‖ref‖ within the tolerance of the output type.
::testing::AssertionResult Compare(ActivationType dtype, bool y_fp32, const std::vector<uint8_t>& raw,
                                   const Reference& ref, int64_t m, int64_t k, double* err_out) {
  const double u = y_fp32 ? 0.0 : dtype == ActivationType::kFloat16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
  const double floor = (!y_fp32 && dtype == ActivationType::kFloat16) ? std::ldexp(1.0, -24) : 1e-30;
  const double acc_rel = (static_cast<double>(k) / 32.0 + 128.0) * std::ldexp(1.0, -21);
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < m * ref.n; ++i) {
    const double y = OutValue(dtype, y_fp32, raw, static_cast<size_t>(i));
    const double r = ref.y[i];
    if (!std::isfinite(y)) {
      return ::testing::AssertionFailure() << "element (" << i / ref.n << ", " << i % ref.n << ") not written/finite";
    }
    const double bound = u * std::fabs(r) + (1.0 + u) * acc_rel * ref.abs_sum[i] + floor;
    if (std::fabs(y - r) > bound) {
      return ::testing::AssertionFailure() << "element (" << i / ref.n << ", " << i % ref.n << "): got " << y
                                           << ", reference " << r << ", bound " << bound;
    }
    num += (y - r) * (y - r);
    den += r * r;
  }
  const double err = std::sqrt(num / std::max(den, 1e-300));
  *err_out = err;
  const double tol = y_fp32 ? 2e-5 : dtype == ActivationType::kFloat16 ? 1e-3 : 8e-3;
  // Over a handful of outputs the normalized error is one sum's relative error, unbounded where
  // its terms cancel (n = 1, k = 14336, fp32 output: 3.9e-4 for one random seed on the H100,
  // within its element bound); the element bounds above hold there, and the aggregate from 64.
  if (m * ref.n >= 64 && err > tol) return ::testing::AssertionFailure() << "normalized error " << err << " > " << tol;
  return ::testing::AssertionSuccess();
}

constexpr int64_t kMaxRows = kDenseGemvMaxM;  // rows of X a Problem holds

// X and W of one problem on the device: up to 32 rows of X.
struct Problem {
  ActivationType dtype;
  int64_t n, k;
  std::vector<uint16_t> x, w;  // [32, k], [n, k]
  DeviceBuffer d_x, d_w;
  Problem(ActivationType dtype_, int64_t n_, int64_t k_, std::mt19937& rng)
      : dtype(dtype_),
        n(n_),
        k(k_),
        x(RandomBits(dtype_, static_cast<size_t>(kMaxRows * k_), 1.0f, rng)),
        w(RandomBits(dtype_, static_cast<size_t>(n_ * k_), 1.0f / std::sqrt(static_cast<float>(k_)), rng)),
        d_x(x.size() * 2),
        d_w(w.size() * 2) {
    cudaMemcpy(d_x.ptr, x.data(), x.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(d_w.ptr, w.data(), w.size() * 2, cudaMemcpyHostToDevice);
  }
  int tile_n = 0;  // DenseGemvParams::tile_n of every call of Params
  bool ok() const { return d_x.ptr != nullptr && d_w.ptr != nullptr; }
  // Rows [row0, row0 + m) of X as the call's input; cluster, variant: DenseGemvParams's.
  DenseGemvParams Params(int64_t m, bool y_fp32, bool pdl, int64_t row0 = 0, int cluster = 0, int variant = 0) const {
    DenseGemvParams p;
    p.dtype = dtype;
    p.m = m;
    p.n = n;
    p.k = k;
    p.x = static_cast<const uint16_t*>(d_x.ptr) + row0 * k;
    p.w = d_w.ptr;
    p.y_fp32 = y_fp32;
    p.pdl = pdl;
    p.cluster = cluster;
    p.variant = variant;
    p.tile_n = tile_n;
    return p;
  }
};

// One call into a fresh output buffer poisoned with 0xFF bytes (NaN in fp16, bf16 and fp32) on
// `stream`; the output's raw bytes.
::testing::AssertionResult RunGemv(DenseGemvParams p, cudaStream_t stream, std::vector<uint8_t>* raw) {
  const size_t bytes = static_cast<size_t>(p.m * p.n) * OutBytes(p.y_fp32);
  DeviceBuffer d_y(bytes);
  if (d_y.ptr == nullptr) return ::testing::AssertionFailure() << "cudaMalloc of " << bytes << " bytes failed";
  p.y = d_y.ptr;
  if (cudaMemsetAsync(d_y.ptr, 0xFF, bytes, stream) != cudaSuccess) return ::testing::AssertionFailure() << "memset";
  const absl::Status st = LaunchDenseGemv(p, stream);
  if (!st.ok()) return ::testing::AssertionFailure() << st;
  const cudaError_t err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return ::testing::AssertionFailure() << cudaGetErrorString(err);
  raw->resize(bytes);
  cudaMemcpy(raw->data(), d_y.ptr, bytes, cudaMemcpyDeviceToHost);
  return ::testing::AssertionSuccess();
}

// A non-blocking stream for one test.
struct TestStream {
  cudaStream_t s = nullptr;
  TestStream() { cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking); }
  ~TestStream() {
    if (s) cudaStreamDestroy(s);
  }
};

// A kernel choice: DenseGemvParams::cluster and ::variant.
struct KernelConfig {
  int cluster;
  int variant;
};
std::string Describe(const KernelConfig& c) {
  return c.variant == 2 ? std::string("flat") : "cluster=" + std::to_string(c.cluster);
}

// The strip and cluster kernels a call of m rows runs with (variant 1; the launcher's choice,
// the wgmma kernel for 16-bit outputs, is CheckWgmma's): m <= 8 the strip kernel, else the
// cluster kernel with its sizes forced (4: strips of 64 rows, 8: of 128, and at m <= 16 2: of 32)
// and, at m <= 16, the flat variant.
std::vector<KernelConfig> ConfigsFor(int64_t m) {
  if (m <= 8) return {{0, 1}};
  if (m <= 16) return {{4, 1}, {8, 1}, {2, 1}, {0, 2}};
  return {{4, 1}, {8, 1}};
}


// The wgmma kernel (variant 3) at every m of ms with the launcher's split count and two forced
// ones (1: one CTA per tile; 3: clusters of 3 CTAs, uneven pieces of k), against the reference.
// For each split count the rows of every call are bitwise those of the largest m's call (the
// summation order depends on n, k and the splits, never on m), and W copied by cp.async gives
// the bits of W by TMA. The strip counter is not used.
void CheckWgmma(const Problem& prob, const std::vector<int64_t>& ms, cudaStream_t stream, bool pdl, bool y_fp32,
                const Reference& ref, double* worst, int* calls) {
  const int64_t rows = *std::max_element(ms.begin(), ms.end());
  // (splits, tile_n): the launcher's plan, forced split counts, and the smaller tiles (whose last
  // stage rows are never loaded).
  const std::pair<int, int> plans[] = {{0, 0}, {1, 128}, {3, 128}, {0, 112}, {2, 96}, {0, 80}, {1, 64}};
  for (const auto& [splits, tile_n] : plans) {
    SCOPED_TRACE(::testing::Message() << "wgmma splits=" << splits << " tile_n=" << tile_n << " y_fp32=" << y_fp32);
    DenseGemvParams p = prob.Params(rows, y_fp32, pdl, 0, 0, 3);
    p.splits = splits;
    p.tile_n = tile_n;
    std::vector<uint8_t> full;
    ASSERT_TRUE(RunGemv(p, stream, &full));
    for (int64_t m : ms) {
      p.m = m;
      std::vector<uint8_t> raw;
      ASSERT_TRUE(RunGemv(p, stream, &raw)) << "m=" << m;
      double err = 0.0;
      EXPECT_TRUE(Compare(prob.dtype, y_fp32, raw, ref, m, prob.k, &err)) << "m=" << m;
      *worst = std::max(*worst, err);
      ++*calls;
      EXPECT_TRUE(std::equal(raw.begin(), raw.end(), full.begin())) << "m=" << m << ": rows differ from m=" << rows;
    }
    // W copied by cp.async instead of TMA (FLUTE_DENSE_WGMMA_TMA=0, read at each launch): the
    // same operands in the same shared-memory layout, so the same bits.
    p.m = rows;
    setenv("FLUTE_DENSE_WGMMA_TMA", "0", 1);
    std::vector<uint8_t> copied;
    const bool ran = RunGemv(p, stream, &copied);
    unsetenv("FLUTE_DENSE_WGMMA_TMA");
    ASSERT_TRUE(ran);
    EXPECT_TRUE(copied == full) << "W by cp.async differs from W by TMA";
  }
}

// Every m in ms (and each kernel of ConfigsFor(m)) and both output types against the reference of
// X's first rows; the kernels of one m must agree bitwise, and those without clusters give the
// same bits with dynamic strips (a strip counter, which each call must leave at 0; every kernel
// takes one) and with prefer_l1.
void CheckProblem(const Problem& prob, const std::vector<int64_t>& ms, cudaStream_t stream, bool pdl = false) {
  SCOPED_TRACE(::testing::Message() << ActivationName(prob.dtype) << " n=" << prob.n << " k=" << prob.k
                                    << " pdl=" << pdl);
  const int64_t rows = *std::max_element(ms.begin(), ms.end());
  const Reference ref = ReferenceProduct(prob.dtype, prob.x, prob.w, rows, prob.n, prob.k);
  DeviceBuffer d_counter(sizeof(unsigned int));
  ASSERT_NE(d_counter.ptr, nullptr);
  ASSERT_EQ(cudaMemset(d_counter.ptr, 0, sizeof(unsigned int)), cudaSuccess);
  for (bool y_fp32 : {false, true}) {
    double worst = 0.0;
    int calls = 0;
    for (int64_t m : ms) {
      std::vector<uint8_t> first;
      for (const KernelConfig& config : ConfigsFor(m)) {
        std::vector<uint8_t> raw;
        ASSERT_TRUE(RunGemv(prob.Params(m, y_fp32, pdl, 0, config.cluster, config.variant), stream, &raw))
            << "m=" << m << " " << Describe(config);
        double err = 0.0;
        EXPECT_TRUE(Compare(prob.dtype, y_fp32, raw, ref, m, prob.k, &err))
            << "m=" << m << " " << Describe(config) << " y_fp32=" << y_fp32;
        worst = std::max(worst, err);
        ++calls;
        if (first.empty()) {
          first = raw;
        } else {
          EXPECT_TRUE(raw == first) << "m=" << m << ": " << Describe(config)
                                    << " differs from clusters of 4, y_fp32=" << y_fp32;
        }
        {
          DenseGemvParams dynamic = prob.Params(m, y_fp32, pdl, 0, config.cluster, config.variant);
          dynamic.strip_counter = static_cast<unsigned int*>(d_counter.ptr);
          dynamic.prefer_l1 = true;  // (a launch attribute only: the same bits)
          std::vector<uint8_t> again;
          ASSERT_TRUE(RunGemv(dynamic, stream, &again)) << "m=" << m << " " << Describe(config) << " dynamic strips";
          EXPECT_TRUE(again == raw) << "m=" << m << " " << Describe(config) << ": dynamic strips with prefer_l1 differ, y_fp32=" << y_fp32;
          unsigned int left = 1;
          ASSERT_EQ(cudaMemcpy(&left, d_counter.ptr, sizeof(left), cudaMemcpyDeviceToHost), cudaSuccess);
          ASSERT_EQ(left, 0u) << "m=" << m << " " << Describe(config) << ": the strip counter was not reset";
        }
      }
    }
    CheckWgmma(prob, ms, stream, pdl, y_fp32, ref, &worst, &calls);
    if (::testing::Test::HasFatalFailure()) return;
    std::printf("%s n=%lld k=%lld y=%s: worst normalized error %.2e over %zu values of m (%d calls)\n",
                ActivationName(prob.dtype), static_cast<long long>(prob.n), static_cast<long long>(prob.k),
                y_fp32 ? "fp32" : ActivationName(prob.dtype), worst, ms.size(), calls);
  }
}

// m <= 8: DenseGemvKernel; 9..16: the cluster kernel with 2 groups of X rows and the flat
// variant; 17..32: the cluster kernel with 4 groups; every m: the wgmma kernel (CheckWgmma).
const std::vector<int64_t> kAllM = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32};
const std::vector<int64_t> kTestK = {8, 64, 1000, 4096, 14336};

TEST(DenseGemvGpuTest, SmallAndOddNEveryKMDtypeAndOutput) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TestStream stream;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int64_t n : {1, 3, 37, 1000}) {  // 1000: 16 (8) strips of 64 (128) rows, the last partial
      for (int64_t k : kTestK) {
        Problem prob(dtype, n, k, rng);
        ASSERT_TRUE(prob.ok());
        CheckProblem(prob, kAllM, stream.s);
      }
    }
  }
}

// A small subset for compute-sanitizer (memcheck, racecheck: scripts/gpu/cuda_engine_checks.sh
// sanitize-new): every kernel (m <= 8, both cluster instances, the flat variant at m = 13), a
// partial last strip and a
// k tail, both dtypes, PDL on.
TEST(DenseGemvGpuTest, SanitizerSubset) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TestStream stream;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    Problem prob(dtype, 100, 1000, rng);
    ASSERT_TRUE(prob.ok());
    CheckProblem(prob, {1, 5, 13, 32}, stream.s, /*pdl=*/true);
    // More strips than two per resident block or cluster: the dynamic strips' counter fetches.
    Problem wide(dtype, 20000, 128, rng);
    ASSERT_TRUE(wide.ok());
    CheckProblem(wide, {3, 13}, stream.s, /*pdl=*/true);
  }
}

TEST(DenseGemvGpuTest, LlamaWidthsEveryKMDtypeAndOutput) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TestStream stream;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (int64_t n : {4096, 6144}) {
      for (int64_t k : kTestK) {
        Problem prob(dtype, n, k, rng);
        ASSERT_TRUE(prob.ok());
        // A PDL launch with nothing before it behaves as a plain one (every other shape).
        CheckProblem(prob, kAllM, stream.s, /*pdl=*/k == 4096 || k == 64);
      }
    }
  }
}

// The 8B LM head (n = 128256, k = 4096) at m = 1, 9 and 32: most strips per block or cluster
// (~30 per cluster at m = 32), so the partial buffers alternate parity many times; fp32 logits.
TEST(DenseGemvGpuTest, LmHeadAtM1And9And32) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TestStream stream;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    Problem prob(dtype, 128256, 4096, rng);
    ASSERT_TRUE(prob.ok());
    CheckProblem(prob, {1, 9, 32}, stream.s);
  }
}

// Row r of an m-row call has the same bits as the 1-row call on X row r, for every m <= 32, across
// the kernels (m <= 8, the cluster kernel with both cluster sizes, the flat variant at
// m <= 16): the summation order depends on k alone (batch invariance). The wgmma kernel has its
// own order, the same for every m (and CheckWgmma checks every m).
TEST(DenseGemvGpuTest, RowsAreBitwiseIndependentOfM) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TestStream stream;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (const auto& nk : std::vector<std::pair<int64_t, int64_t>>{{6144, 4096}, {37, 1000}, {4096, 14336}, {3, 8}}) {
      Problem prob(dtype, nk.first, nk.second, rng);
      ASSERT_TRUE(prob.ok());
      for (bool y_fp32 : {false, true}) {
        SCOPED_TRACE(::testing::Message() << ActivationName(dtype) << " n=" << prob.n << " k=" << prob.k
                                          << " y_fp32=" << y_fp32);
        const size_t row_bytes = static_cast<size_t>(prob.n) * OutBytes(y_fp32);
        std::vector<uint8_t> y32;
        ASSERT_TRUE(RunGemv(prob.Params(kMaxRows, y_fp32, false, 0, 0, /*variant=*/1), stream.s, &y32));
        for (int64_t r = 0; r < kMaxRows; ++r) {  // one row at a time, from X row r
          std::vector<uint8_t> y1;
          ASSERT_TRUE(RunGemv(prob.Params(1, y_fp32, false, r, 0, /*variant=*/1), stream.s, &y1));
          EXPECT_TRUE(std::equal(y1.begin(), y1.end(), y32.begin() + r * row_bytes)) << "row " << r << " alone";
        }
        for (int64_t m = 2; m < kMaxRows; ++m) {  // the first m rows
          for (const KernelConfig& config : ConfigsFor(m)) {
            std::vector<uint8_t> ym;
            ASSERT_TRUE(RunGemv(prob.Params(m, y_fp32, m % 2 == 0, 0, config.cluster, config.variant), stream.s, &ym));
            EXPECT_TRUE(std::equal(ym.begin(), ym.end(), y32.begin())) << "m=" << m << " " << Describe(config);
          }
        }
        // The last 9 rows at once (the cluster kernel, 2 groups of X rows), against m = 32.
        std::vector<uint8_t> y9;
        ASSERT_TRUE(RunGemv(prob.Params(9, y_fp32, false, kMaxRows - 9, 0, /*variant=*/1), stream.s, &y9));
        EXPECT_TRUE(std::equal(y9.begin(), y9.end(), y32.begin() + (kMaxRows - 9) * row_bytes)) << "rows 23..31";
        // The last 16 rows with the flat variant (2 groups of X rows, no clusters).
        std::vector<uint8_t> y16;
        ASSERT_TRUE(RunGemv(prob.Params(16, y_fp32, true, kMaxRows - 16, 0, 2), stream.s, &y16));
        EXPECT_TRUE(std::equal(y16.begin(), y16.end(), y32.begin() + (kMaxRows - 16) * row_bytes)) << "rows 16..31, flat";
        // The wgmma kernel (its own order): rows 23..31 at m = 9 and row 5 alone against its m = 32.
        std::vector<uint8_t> w32, w9, w1;
        ASSERT_TRUE(RunGemv(prob.Params(kMaxRows, y_fp32, false, 0, 0, 3), stream.s, &w32));
        ASSERT_TRUE(RunGemv(prob.Params(9, y_fp32, true, kMaxRows - 9, 0, 3), stream.s, &w9));
        ASSERT_TRUE(RunGemv(prob.Params(1, y_fp32, false, 5, 0, 3), stream.s, &w1));
        EXPECT_TRUE(std::equal(w9.begin(), w9.end(), w32.begin() + (kMaxRows - 9) * row_bytes)) << "wgmma rows 23..31";
        EXPECT_TRUE(std::equal(w1.begin(), w1.end(), w32.begin() + 5 * row_bytes)) << "wgmma row 5 alone";
      }
    }
  }
}

// The same call gives the same bits every time, with or without PDL.
TEST(DenseGemvGpuTest, BitwiseDeterministicRunToRun) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TestStream stream;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    Problem prob(dtype, 6144, 14336, rng);
    ASSERT_TRUE(prob.ok());
    for (int64_t m : {3, 8, 12, 32}) {
      for (bool y_fp32 : {false, true}) {
        std::vector<uint8_t> first;
        ASSERT_TRUE(RunGemv(prob.Params(m, y_fp32, false), stream.s, &first));
        for (int rep = 0; rep < 6; ++rep) {
          std::vector<uint8_t> again;
          ASSERT_TRUE(RunGemv(prob.Params(m, y_fp32, rep % 2 == 1, 0, m > 8 && rep >= 3 ? 4 : 0), stream.s, &again));
          EXPECT_EQ(again, first) << ActivationName(dtype) << " m=" << m << " y_fp32=" << y_fp32 << " rep " << rep;
        }
      }
    }
  }
}

// With programmatic dependent launch the second GEMV of a chain loads its weights early but must
// read X (the first GEMV's output, poisoned with NaN before it runs) only once the first has
// finished. The first has few rows of W and a long k (8 blocks, or 16 CTAs in clusters,
// streaming for several µs), so the second's blocks start on the free SMs while it runs. m = 4 (one CTA
// per strip), 24 and 13 (the cluster kernel with 4 and with 2 groups of X rows, clusters of 4
// or 8 CTAs, or the launcher's choice: the wgmma kernel at 24, and at 13 for 16-bit outputs),
// each behind a call of the same kernel.
TEST(DenseGemvGpuTest, PdlLaunchWaitsForThePreviousKernel) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TestStream stream;
  const int64_t n1 = 256, k1 = 14336, n2 = 4096;
  for (int rep = 0; rep < 30; ++rep) {
    const int64_t m = rep % 3 == 0 ? 4 : rep % 3 == 1 ? 24 : 13;
    SCOPED_TRACE(::testing::Message() << "rep " << rep << " m=" << m);
    const ActivationType dtype = rep % 2 == 0 ? ActivationType::kFloat16 : ActivationType::kBFloat16;
    Problem first(dtype, n1, k1, rng);   // X [32, k1] (first m rows used) -> Y1 [m, n1]
    Problem second(dtype, n2, n1, rng);  // W [n2, n1]; its X is Y1
    ASSERT_TRUE(first.ok() && second.ok());
    DeviceBuffer d_y1(m * n1 * 2);
    const bool y2_fp32 = rep % 4 >= 2;
    const int cluster = rep % 5 < 2 ? 4 : rep % 5 < 4 ? 8 : 0;
    // The launcher's kernel (m = 13: the wgmma kernel for 16-bit outputs) or the cluster kernel.
    const int variant = rep % 4 < 2 ? 1 : 0;
    DeviceBuffer d_y2(m * n2 * OutBytes(y2_fp32));
    ASSERT_EQ(cudaMemsetAsync(d_y1.ptr, 0xFF, m * n1 * 2, stream.s), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(d_y2.ptr, 0xFF, m * n2 * OutBytes(y2_fp32), stream.s), cudaSuccess);
    DenseGemvParams g1 = first.Params(m, false, /*pdl=*/rep % 7 < 3, 0, cluster, variant);
    g1.y = d_y1.ptr;
    DenseGemvParams g2 = second.Params(m, y2_fp32, /*pdl=*/true, 0, cluster, variant);
    g2.x = d_y1.ptr;
    g2.y = d_y2.ptr;
    ASSERT_TRUE(LaunchDenseGemv(g1, stream.s).ok());
    ASSERT_TRUE(LaunchDenseGemv(g2, stream.s).ok());
    ASSERT_EQ(cudaStreamSynchronize(stream.s), cudaSuccess);
    std::vector<uint8_t> y1(m * n1 * 2), y2(m * n2 * OutBytes(y2_fp32));
    cudaMemcpy(y1.data(), d_y1.ptr, y1.size(), cudaMemcpyDeviceToHost);
    cudaMemcpy(y2.data(), d_y2.ptr, y2.size(), cudaMemcpyDeviceToHost);
    double err = 0.0;
    const Reference ref1 = ReferenceProduct(dtype, first.x, first.w, m, n1, k1);
    ASSERT_TRUE(Compare(dtype, false, y1, ref1, m, k1, &err)) << "first GEMV";
    std::vector<uint16_t> x2(m * n1);  // Y1 as the second GEMV's X, from the device
    std::memcpy(x2.data(), y1.data(), y1.size());
    const Reference ref2 = ReferenceProduct(dtype, x2, second.w, m, n2, n1);
    ASSERT_TRUE(Compare(dtype, y2_fp32, y2, ref2, m, n1, &err)) << "second GEMV";
  }
}

// ---- Epilogues (SwiGLU, residual, deferred norm) against the unfused kernels, bitwise -----------

float ToFloat16Bits(ActivationType dtype, uint16_t b) {
  return dtype == ActivationType::kFloat16 ? HalfToFloat(b) : Bf16ToFloat(b);
}
uint16_t Round16(ActivationType dtype, float f) {
  return dtype == ActivationType::kFloat16 ? FloatToHalf(f) : FloatToBf16(f);
}

// The kernel's xor tree over 16 lanes (offsets 1, 2, 4, 8), as lane 0 sees it.
float XorTreeSum16(const float* v) {
  float s[16];
  std::copy(v, v + 16, s);
  for (int offset = 1; offset < 16; offset <<= 1) {
    float next[16];
    for (int l = 0; l < 16; ++l) next[l] = s[l] + s[l ^ offset];
    std::copy(next, next + 16, s);
  }
  return s[0];
}

// DeferredNormFactor's order: lane l adds float4s l, l + 16, ... (x, y, z, w), then the tree.
float DeferredFactor(const std::vector<float>& sumsq, int64_t row, int64_t k, float eps) {
  const int64_t vecs = k / 64;
  float lanes[16];
  for (int l = 0; l < 16; ++l) {
    float sum = 0.0f;
    for (int64_t j = l; j < vecs; j += 16) {
      for (int e = 0; e < 4; ++e) sum += sumsq[row * (k / 16) + 4 * j + e];
    }
    lanes[l] = sum;
  }
  const float total = XorTreeSum16(lanes);
  return 1.0f / std::sqrt(total / static_cast<float>(k) + eps);
}

// Runs `p` (pointers set by the caller) and waits.
::testing::AssertionResult Launch(const DenseGemvParams& p, cudaStream_t stream) {
  const absl::Status st = LaunchDenseGemv(p, stream);
  if (!st.ok()) return ::testing::AssertionFailure() << st;
  const cudaError_t err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return ::testing::AssertionFailure() << cudaGetErrorString(err);
  return ::testing::AssertionSuccess();
}

template <typename V>
std::vector<V> Download(const DeviceBuffer& b, size_t count) {
  std::vector<V> out(count);
  cudaMemcpy(out.data(), b.ptr, count * sizeof(V), cudaMemcpyDeviceToHost);
  return out;
}

// One (problem, m, cluster size): every epilogue against the plain kernel's outputs (its fp32
// sums, its 16-bit outputs followed by gpu::LaunchSwiGlu), bitwise, with outputs poisoned.
void CheckEpilogues(const Problem& prob, int64_t m, int cluster, cudaStream_t stream, std::mt19937& rng,
                    int variant = 0) {
  SCOPED_TRACE(::testing::Message() << ActivationName(prob.dtype) << " n=" << prob.n << " k=" << prob.k << " m=" << m
                                    << " tile_n=" << prob.tile_n << " cluster=" << cluster << " variant=" << variant);
  const int64_t n = prob.n, k = prob.k, mn = m * n;
  const ActivationType dt = prob.dtype;
  std::vector<uint8_t> plain_raw, sums_raw;
  ASSERT_TRUE(RunGemv(prob.Params(m, false, true, 0, cluster, variant), stream, &plain_raw));
  ASSERT_TRUE(RunGemv(prob.Params(m, true, true, 0, cluster, variant), stream, &sums_raw));
  std::vector<uint16_t> plain(mn);
  std::vector<float> sums(mn);
  std::memcpy(plain.data(), plain_raw.data(), mn * 2);
  std::memcpy(sums.data(), sums_raw.data(), mn * 4);

  // Deferred norm: y = round(sum · inv[r]) with inv from random sums of squares [m, k / 16].
  std::uniform_real_distribution<float> positive(0.0f, 40.0f);
  std::vector<float> sumsq(static_cast<size_t>(m * (k / 16)));
  for (float& v : sumsq) v = positive(rng);
  const float eps = 1e-5f;
  DeviceBuffer d_sumsq(sumsq.size() * 4), d_deferred(mn * 2), d_swiglu(mn), d_both(mn);
  ASSERT_EQ(cudaMemcpy(d_sumsq.ptr, sumsq.data(), sumsq.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  // Every fused call takes its strips from a counter (the engine's way), which it leaves at 0.
  DeviceBuffer d_counter(sizeof(unsigned int));
  ASSERT_EQ(cudaMemset(d_counter.ptr, 0, sizeof(unsigned int)), cudaSuccess);
  const auto fused_call = [&] {
    DenseGemvParams p = prob.Params(m, false, true, 0, cluster, variant);
    p.strip_counter = static_cast<unsigned int*>(d_counter.ptr);
    return p;
  };
  for (const DeviceBuffer* b : {&d_deferred, &d_swiglu, &d_both}) {
    ASSERT_EQ(cudaMemset(b->ptr, 0xFF, b == &d_deferred ? mn * 2 : mn), cudaSuccess);
  }
  DenseGemvParams deferred = fused_call();
  deferred.y = d_deferred.ptr;
  deferred.deferred_sumsq = static_cast<const float*>(d_sumsq.ptr);
  deferred.norm_eps = eps;
  ASSERT_TRUE(Launch(deferred, stream));
  const std::vector<uint16_t> got_deferred = Download<uint16_t>(d_deferred, mn);
  int64_t mismatches = 0;
  for (int64_t r = 0; r < m; ++r) {
    const float inv = DeferredFactor(sumsq, r, k, eps);
    for (int64_t c = 0; c < n; ++c) mismatches += got_deferred[r * n + c] != Round16(dt, sums[r * n + c] * inv);
  }
  EXPECT_EQ(mismatches, 0) << "deferred norm: outputs differ from round(sum * inv)";

  // SwiGLU, without and with the deferred norm: the plain (deferred) outputs through LaunchSwiGlu.
  DeviceBuffer d_plain(mn * 2), d_ref(mn);
  ASSERT_EQ(cudaMemcpy(d_plain.ptr, plain.data(), mn * 2, cudaMemcpyHostToDevice), cudaSuccess);
  for (bool with_norm : {false, true}) {
    SCOPED_TRACE(with_norm ? "swiglu + deferred norm" : "swiglu");
    const DeviceBuffer& out = with_norm ? d_both : d_swiglu;
    DenseGemvParams swiglu = with_norm ? deferred : fused_call();
    swiglu.y = out.ptr;
    swiglu.swiglu = true;
    ASSERT_TRUE(Launch(swiglu, stream));
    ASSERT_TRUE(LaunchSwiGlu(dt, with_norm ? d_deferred.ptr : d_plain.ptr, static_cast<int>(m),
                             static_cast<int>(n / 2), d_ref.ptr, stream, /*interleave=*/8)
                    .ok());
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_TRUE(Download<uint16_t>(out, mn / 2) == Download<uint16_t>(d_ref, mn / 2));
  }

  // Residual epilogue, without and with prenorm_out.
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> old(mn), weight(n);
  for (float& v : old) v = normal(rng);
  for (float& v : weight) v = normal(rng);
  for (bool with_prenorm : {false, true}) {
    SCOPED_TRACE(with_prenorm ? "residual + prenorm" : "residual");
    DeviceBuffer d_res(mn * 4), d_out_sums(m * (n / 16) * 4), d_prenorm(mn * 2), d_weight(n * 4);
    ASSERT_EQ(cudaMemcpy(d_res.ptr, old.data(), mn * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d_weight.ptr, weight.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_out_sums.ptr, 0xFF, m * (n / 16) * 4), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_prenorm.ptr, 0xFF, mn * 2), cudaSuccess);
    DenseGemvParams res = fused_call();
    res.y = nullptr;
    res.residual = static_cast<float*>(d_res.ptr);
    res.sumsq_out = static_cast<float*>(d_out_sums.ptr);
    if (with_prenorm) {
      res.prenorm_out = d_prenorm.ptr;
      res.prenorm_weight = static_cast<const float*>(d_weight.ptr);
    }
    ASSERT_TRUE(Launch(res, stream));
    const std::vector<float> got_res = Download<float>(d_res, mn);
    const std::vector<float> got_sums = Download<float>(d_out_sums, m * (n / 16));
    const std::vector<uint16_t> got_prenorm = Download<uint16_t>(d_prenorm, mn);
    int64_t bad_res = 0, bad_prenorm = 0, bad_sums = 0, tree_differs = 0;
    std::string first_tree_difference;
    std::vector<float> expect(mn);
    for (int64_t i = 0; i < mn; ++i) {
      expect[i] = old[i] + ToFloat16Bits(dt, plain[i]);
      bad_res += got_res[i] != expect[i];
      if (with_prenorm) bad_prenorm += got_prenorm[i] != Round16(dt, weight[i % n] * expect[i]);
    }
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t s16 = 0; s16 < n / 16; ++s16) {
        float squares[16];
        double exact = 0.0;
        for (int l = 0; l < 16; ++l) {
          // (The product in double is exact; rounded once to float, it is the kernel's
          // __fmul_rn, and the compiler cannot contract it into the tree's adds.)
          const double v = expect[r * n + 16 * s16 + l];
          squares[l] = static_cast<float>(v * v);
          exact += v * v;
        }
        // Within the fp32 rounding of 16 squares and 15 adds of non-negative terms.
        const float got = got_sums[r * (n / 16) + s16];
        bad_sums += !(std::fabs(got - exact) <= 32.0 * std::ldexp(1.0, -24) * exact);
        const float tree = XorTreeSum16(squares);
        if (got != tree && tree_differs++ == 0) {
          float sequential = 0.0f;
          for (float q : squares) sequential += q;
          char line[256];
          std::snprintf(line, sizeof(line), "row %lld, columns %lld..: got %.9g, xor tree %.9g, sequential %.9g, exact %.12g",
                        static_cast<long long>(r), static_cast<long long>(16 * s16), got, tree, sequential, exact);
          first_tree_difference = line;
        }
      }
    }
    EXPECT_EQ(bad_res, 0) << "residual != old + round(Y)";
    EXPECT_EQ(bad_prenorm, 0) << "prenorm_out != round(weight * residual)";
    EXPECT_EQ(bad_sums, 0) << "sumsq_out differs from the 16-column sums";
    // (Diagnostic: how often the kernel's bits differ from a CPU replay of its xor tree.)
    if (tree_differs > 0) {
      std::printf("%s m=%lld: %lld of %lld sums differ from the CPU xor tree; first: %s\n", ActivationName(dt),
                  static_cast<long long>(m), static_cast<long long>(tree_differs),
                  static_cast<long long>(m * (n / 16)), first_tree_difference.c_str());
    }
  }
  unsigned int left = 1;
  ASSERT_EQ(cudaMemcpy(&left, d_counter.ptr, sizeof(left), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(left, 0u) << "the strip counter was not reset";
}

// Every epilogue on the cluster kernel (both sizes, both dtypes, m in 9..16, a partial last
// strip of 128 rows, k with a tail of a round, PDL, dynamic strips: n = 9216 has more strips
// than two per cluster), bitwise against the unfused kernels.
TEST(DenseGemvGpuTest, EpiloguesAreBitwiseTheUnfusedKernels) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TestStream stream;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (const auto& nk : std::vector<std::pair<int64_t, int64_t>>{{1040, 4096}, {9216, 1088}, {272, 14336}}) {
      Problem prob(dtype, nk.first, nk.second, rng);
      ASSERT_TRUE(prob.ok());
      for (int64_t m : {9, 13, 16}) {
        for (int cluster : {2, 4, 8}) CheckEpilogues(prob, m, cluster, stream.s, rng, /*variant=*/1);
      }
    }
  }
}

// Every epilogue on the wgmma kernel (the launcher's choice at m = 17..32, variant 3 at m = 5 and 16),
// bitwise against its own plain calls followed by the unfused kernels: partial last tiles
// (n = 1040, 272) and the launcher's split counts 1 (k = 128: 2 k-tiles), 2 (n = 9216: 72 tiles
// of 17 k-tiles) and 8 (n = 1040 and 272 with k = 4096 and 14336).
TEST(DenseGemvGpuTest, WgmmaEpiloguesAreBitwiseTheUnfusedKernels) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TestStream stream;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    for (const auto& nk :
         std::vector<std::pair<int64_t, int64_t>>{{1040, 4096}, {9216, 1088}, {272, 14336}, {1040, 128}}) {
      Problem prob(dtype, nk.first, nk.second, rng);
      ASSERT_TRUE(prob.ok());
      for (int64_t m : {17, 24, 32}) CheckEpilogues(prob, m, 0, stream.s, rng);
      // m <= 16: the 16-row instances (6 stages), which must give the 32-row instances' bits.
      for (int64_t m : {5, 16}) CheckEpilogues(prob, m, 0, stream.s, rng, /*variant=*/3);
      for (int tile_n : {112, 80}) {  // the smaller tiles' epilogues (fewer 16-feature groups)
        prob.tile_n = tile_n;
        CheckEpilogues(prob, 24, 0, stream.s, rng);
      }
    }
  }
}

// A small subset of the epilogues for compute-sanitizer (memcheck, racecheck): every epilogue,
// clusters of 2 and 4, a partial last strip, both dtypes, PDL and dynamic strips; the wgmma
// kernel at m = 20 (3 tiles, the last partial; clusters of 2) and at m = 13 (its 16-row instance).
TEST(DenseGemvGpuTest, EpiloguesSanitizerSubset) {
  REQUIRE_GPU();
  FRESH_RNG(rng);
  TestStream stream;
  for (ActivationType dtype : {ActivationType::kFloat16, ActivationType::kBFloat16}) {
    Problem prob(dtype, 272, 1088, rng);
    ASSERT_TRUE(prob.ok());
    for (int cluster : {2, 4}) CheckEpilogues(prob, 13, cluster, stream.s, rng, /*variant=*/1);
    CheckEpilogues(prob, 20, 0, stream.s, rng);
    CheckEpilogues(prob, 13, 0, stream.s, rng, /*variant=*/3);  // the 16-row instance
    prob.tile_n = 96;
    CheckEpilogues(prob, 20, 0, stream.s, rng);
  }
}

#endif  // FLUTE_HAVE_CUDA

}  // namespace
}  // namespace flute::gpu
