// flute-bench-kernel: the LUT-GEMM against cuBLAS, same dtype, same process, same run.
// For each shape (K x N), dtype, M and LUT config it reports the median µs per call (CUDA
// events around CUDA-graph replays of many calls), achieved GB/s (bytes a call must move),
// the percentage of the device-to-device copy bandwidth measured at the start of the run,
// and the speedup over cublasGemmEx (fp32 accumulation). Weights rotate over copies that
// together exceed 4x the L2 size, so no call is timed from cache. The rows of M >= 64 are timed
// after all the smaller ones (see main()), and printed in the usual order.
//
//   flute-bench-kernel [--shapes KxN,...] [--m 1,2,...] [--configs 4g128,3g128,...]
//                      [--dtypes fp16,bf16] [--md FILE] [--json FILE] [--replays N] [--cooldown-ms MS]
//                      [--kernels auto,splitk,strip,tc,auto-pdl,strip-pdl,tc-pdl,auto-pdl-early]
// --kernels times each named LUT kernel choice in the same run (default: auto): "splitk",
// "strip" and "tc" force the tiled split-K, the persistent-strip kernel (strip only where it
// applies, M <= 8) and the wgmma tensor-core kernel (tc: any M; "n/a" where a kernel returns
// Unimplemented), "-pdl" launches with programmatic dependent launch, "-pdl-early" also
// loads every prologue stage's weights before the PDL wait, as the engine does
// (LutGemmParams::early_weights). Calls run back to back, each after the same GEMM.
// A kernel name may end in the decode step's fusions (bf16; the tensor-core kernel takes them
// from 5 rows): "+dn" the deferred norm (qkv), "+dn+sg" the deferred norm and SwiGLU (gate/up:
// y is [M, N / 2]), "+res" the residual epilogue with prenorm_out (O, down: residual and
// prenorm_out written, y unused), e.g. auto-pdl-early+dn+sg. Their extra bytes (the residual's
// read and write, prenorm_out, the sums) are not counted in GB/s.
//
//   flute-bench-kernel --dense-gemv [--shapes KxN,...] [--m 1,2,4,8,16,32] [--dtypes fp16,bf16]
//                      [--kernels gemv,gemv-pdl,gemv-c4,gemv-pdl-c8,gemv-flat,...] [--dense-y auto|same|fp32]
//                      [--md F] [--json F]
// --dense-gemv times the dense 16-bit GEMV (kernels/dense_gemv.h, M <= 32) instead of the
// LUT-GEMM, against the same cublasGemmEx call, both on the SAME rotated dense weights. Default
// shapes: the 8 above plus the LM heads 4096x128256 (8B) and 8192x128256 (70B); default M 1, 2,
// 4, 8, 16, 32. "gemv-pdl" launches with programmatic dependent launch (the next call's first
// weight loads overlap the previous call's end, as in the engine); a "-c4" / "-c8" suffix forces
// clusters of 4 CTAs (64-row strips) or 8 (128-row strips) at M > 8 (DenseGemvParams::cluster;
// without it the launcher chooses 4), and is skipped at M <= 8, where there is one kernel; a
// "-flat" suffix runs the flat variant (DenseGemvParams::variant = 2), rows only for 9 <= M <= 16;
// "-cl" the cluster kernel (variant 1, also at M > 16, where the launcher runs the wgmma kernel),
// "-wg" the wgmma kernel (variant 3, every M) and "-wg1" .. "-wg8" it with that many splits.
// --dense-y: the output type of both, "auto" (default) = fp32 for N > 65536 (LM-head logits,
// as the engine stores them), else the 16-bit type. Each row also reports the normalized
// difference ||Y_gemv - Y_cublas|| / ||Y_cublas|| of one call on the same inputs (a sanity
// check, not a timing).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/dense_gemv.h"
#include "kernels/lut_format.h"
#include "kernels/lut_gemm.h"

namespace {

#define CHECK_CUDA(expr)                                                                  \
  do {                                                                                    \
    cudaError_t e_ = (expr);                                                              \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "error: %s failed: %s (%s:%d)\n", #expr, cudaGetErrorString(e_), \
                   __FILE__, __LINE__);                                                   \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)
#define CHECK_CUBLAS(expr)                                                                     \
  do {                                                                                         \
    cublasStatus_t s_ = (expr);                                                                \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
      std::fprintf(stderr, "error: %s failed: status %d (%s:%d)\n", #expr, int(s_), __FILE__, \
                   __LINE__);                                                                  \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

// Deterministic pseudo-random fill, on the device (no zeros: they can run faster).
__device__ uint32_t Hash(uint64_t i, uint32_t seed) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull + seed;
  x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29;
  return static_cast<uint32_t>(x >> 16);
}
__global__ void FillBytes(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = static_cast<uint8_t>(Hash(i, seed));
}
template <typename T>
__global__ void FillValues(T* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float u = ((Hash(i, seed) & 0xffff) + 0.5f) / 65536.0f;  // (0, 1)
    p[i] = static_cast<T>(scale * (2.0f * u - 1.0f + (u < 0.5f ? -0.05f : 0.05f)));
  }
}
__global__ void AbsInPlace(float* p, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = fabsf(p[i]) + 0.01f;
}
template <typename T>
void Fill(T* p, size_t n, uint32_t seed, float scale) {
  FillValues<T><<<1024, 256>>>(p, n, seed, scale);
  CHECK_CUDA(cudaGetLastError());
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) if (!item.empty()) out.push_back(item);
  return out;
}

struct Options {
  std::vector<std::pair<int64_t, int64_t>> shapes = {  // K x N
      {4096, 6144}, {4096, 4096}, {4096, 28672}, {14336, 4096},
      {8192, 10240}, {8192, 8192}, {8192, 57344}, {28672, 8192}};
  std::vector<int64_t> ms = {1, 2, 4, 8, 16, 32, 64, 128};
  std::vector<std::pair<int, int>> configs = {{4, 128}, {3, 128}, {2, 128}, {4, 64}};  // bits, G
  std::vector<std::string> dtypes = {"fp16", "bf16"};
  std::vector<std::string> kernels = {"auto"};
  std::string md_path, json_path;
  int replays = 15;
  // Idle milliseconds before each timed row (its warm-up and replays), so that every row starts
  // from the same power state (TimePerCall).
  int cooldown_ms = 250;
  // --dense-gemv: the dense GEMV section instead of the LUT-GEMM one.
  bool dense = false;
  std::string dense_y = "auto";  // auto | same | fp32
  bool shapes_given = false, ms_given = false, kernels_given = false;
};

struct KernelChoice {
  flute::lut::LutKernel kernel;
  bool pdl;
  bool early_weights;
  bool deferred_norm = false;  // "+dn"
  bool swiglu = false;         // "+sg"
  bool residual = false;       // "+res"
};

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool ParseKernel(const std::string& full_name, KernelChoice* out) {
  const std::vector<std::string> parts = Split(full_name, '+');
  if (parts.empty()) return false;
  const std::string& name = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i] == "dn") out->deferred_norm = true;
    else if (parts[i] == "sg") out->swiglu = true;
    else if (parts[i] == "res") out->residual = true;
    else return false;
  }
  if (out->residual && (out->swiglu || out->deferred_norm)) return false;
  out->early_weights = EndsWith(name, "-pdl-early");
  out->pdl = out->early_weights || EndsWith(name, "-pdl");
  const std::string base = name.substr(0, name.size() - (out->early_weights ? 10 : out->pdl ? 4 : 0));
  if (base == "auto") out->kernel = flute::lut::LutKernel::kAuto;
  else if (base == "splitk") out->kernel = flute::lut::LutKernel::kSplitK;
  else if (base == "strip") out->kernel = flute::lut::LutKernel::kStrip;
  else if (base == "tc") out->kernel = flute::lut::LutKernel::kTensorCore;
  else return false;
  return true;
}

// --dense-gemv kernel names: gemv | gemv-pdl, then optionally -c4 | -c8 (DenseGemvParams::cluster),
// -flat (variant 2), -cl (variant 1: the cluster kernel, also at M > 16), -wg (variant 3: the
// wgmma kernel) or -wg1 .. -wg8 (the wgmma kernel with that many splits).
bool ParseDenseKernel(const std::string& name, bool* pdl, int* cluster, int* variant, int* splits) {
  std::string base = name;
  *cluster = 0;
  *variant = 0;
  *splits = 0;
  if (base.size() > 4 && base.compare(base.size() - 4, 3, "-wg") == 0 && base.back() >= '1' && base.back() <= '8') {
    *variant = 3;
    *splits = base.back() - '0';
    base.resize(base.size() - 4);
  } else if (EndsWith(base, "-wg")) {
    *variant = 3;
    base.resize(base.size() - 3);
  } else if (EndsWith(base, "-cl")) {
    *variant = 1;
    base.resize(base.size() - 3);
  } else if (EndsWith(base, "-c4") || EndsWith(base, "-c8")) {
    *cluster = base.back() - '0';
    base.resize(base.size() - 3);
  } else if (EndsWith(base, "-flat")) {
    *variant = 2;
    base.resize(base.size() - 5);
  }
  if (base != "gemv" && base != "gemv-pdl") return false;
  *pdl = base == "gemv-pdl";
  return true;
}

bool ParseOptions(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) { std::fprintf(stderr, "error: %s needs a value\n", a.c_str()); std::exit(2); }
      return argv[++i];
    };
    if (a == "--shapes") {
      o->shapes.clear();
      o->shapes_given = true;
      for (const auto& s : Split(value(), ',')) {
        auto kn = Split(s, 'x');
        if (kn.size() != 2) { std::fprintf(stderr, "error: --shapes wants KxN, got %s\n", s.c_str()); return false; }
        o->shapes.push_back({std::stoll(kn[0]), std::stoll(kn[1])});
      }
    } else if (a == "--m") {
      o->ms.clear();
      o->ms_given = true;
      for (const auto& s : Split(value(), ',')) o->ms.push_back(std::stoll(s));
    } else if (a == "--configs") {
      o->configs.clear();
      for (const auto& s : Split(value(), ',')) {
        auto bg = Split(s, 'g');
        if (bg.size() != 2) { std::fprintf(stderr, "error: --configs wants e.g. 4g128, got %s\n", s.c_str()); return false; }
        o->configs.push_back({std::stoi(bg[0]), std::stoi(bg[1])});
      }
    } else if (a == "--kernels") {
      o->kernels = Split(value(), ',');
      o->kernels_given = true;
    } else if (a == "--dense-gemv") {
      o->dense = true;
    } else if (a == "--dense-y") {
      o->dense_y = value();
      if (o->dense_y != "auto" && o->dense_y != "same" && o->dense_y != "fp32") {
        std::fprintf(stderr, "error: --dense-y takes auto, same or fp32, got %s\n", o->dense_y.c_str());
        return false;
      }
    } else if (a == "--dtypes") {
      o->dtypes = Split(value(), ',');
    } else if (a == "--md") {
      o->md_path = value();
    } else if (a == "--json") {
      o->json_path = value();
    } else if (a == "--replays") {
      o->replays = std::stoi(value());
    } else if (a == "--cooldown-ms") {
      o->cooldown_ms = std::max(0, std::stoi(value()));
    } else {
      std::fprintf(stderr, "error: unknown option %s (see the header of bench/lut_gemm_bench.cu)\n", a.c_str());
      return false;
    }
  }
  if (o->dense) {  // the dense section's defaults, unless given
    if (!o->shapes_given) {
      o->shapes.push_back({4096, 128256});
      o->shapes.push_back({8192, 128256});
    }
    if (!o->ms_given) o->ms = {1, 2, 4, 8, 16, 32};
    if (!o->kernels_given) o->kernels = {"gemv", "gemv-pdl"};
    for (const auto& k : o->kernels) {
      bool pdl = false;
      int cluster = 0, variant = 0;
      int splits = 0;
      if (!ParseDenseKernel(k, &pdl, &cluster, &variant, &splits)) {
        std::fprintf(stderr,
                     "error: with --dense-gemv, --kernels takes gemv or gemv-pdl, optionally with -c4, -c8, -flat, -cl, -wg or -wg1..-wg8, "
                     "got %s\n",
                     k.c_str());
        return false;
      }
    }
    for (int64_t m : o->ms) {
      if (m < 1 || m > flute::gpu::kDenseGemvMaxM) {
        std::fprintf(stderr, "error: the dense GEMV takes M in [1, %lld], got %lld\n",
                     (long long)flute::gpu::kDenseGemvMaxM, (long long)m);
        return false;
      }
    }
    return true;
  }
  for (const auto& k : o->kernels) {
    KernelChoice c;
    if (!ParseKernel(k, &c)) { std::fprintf(stderr, "error: unknown kernel %s\n", k.c_str()); return false; }
  }
  return true;
}

// Median seconds per call of `calls` launches of `launch(i)`, captured into one CUDA graph
// and replayed `replays` times (after one warm-up replay), the GPU idle for `cooldown_ms` before
// the warm-up. The pause: on the H200 a few seconds of back-to-back rows of M >= 64 (tensor-core
// bound, cuBLAS and ours) put the card under its power cap, and the rows timed in that state ran
// up to 1.35x slower, the issue-bound LUT rows at small M most (bench/results/ab-2026-11-28-h200/
// session47/, calls 5 and 9: 8192x57344 4-bit M = 1 86.4 us alone, 108-120 after the M = 64-128
// rows of the shapes before it; cuBLAS there 211-219 alone, 240 late in a run).
template <typename F>
double TimePerCall(cudaStream_t stream, int calls, int replays, int cooldown_ms, F launch) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < calls; ++i) launch(i);
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  if (cooldown_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(cooldown_ms));
  CHECK_CUDA(cudaGraphLaunch(exec, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  std::vector<double> t;
  for (int r = 0; r < replays; ++r) {
    CHECK_CUDA(cudaEventRecord(a, stream));
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaEventRecord(b, stream));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e-3 / calls);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

__global__ void CopyKernel(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

// The better of cudaMemcpyAsync and a 16-byte-per-thread copy kernel, bytes read + written.
double CopyBandwidth(cudaStream_t stream, int sm_count) {
  const size_t bytes = size_t(1) << 30;
  void *a, *b;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  FillBytes<<<1024, 256>>>(static_cast<uint8_t*>(a), bytes, 7);
  const double memcpy_sec = TimePerCall(stream, 4, 9, 0, [&](int) {
    CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream));
  });
  const double kernel_sec = TimePerCall(stream, 4, 9, 0, [&](int) {
    CopyKernel<<<sm_count * 8, 256, 0, stream>>>(static_cast<const uint4*>(a), static_cast<uint4*>(b), bytes / 16);
  });
  const double sec = std::min(memcpy_sec, kernel_sec);
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  return 2.0 * bytes / sec;  // read + write
}

struct Row {
  int64_t k, n, m;
  std::string dtype, config, kernel;
  double us, gbps, pct_copy, cublas_us, speedup;
  double diff_vs_cublas = -1.0;  // dense section only: ||Y - Y_cublas|| / ||Y_cublas||
};

// The cuBLAS baseline: row-major Y[M,N] = X[M,K] W[N,K]^T, fp32 accumulation, Y of type c_type.
void CublasGemm(cublasHandle_t cublas, int64_t N, int m, int64_t K, const void* w, const void* x, void* y,
                cudaDataType_t ab_type, cudaDataType_t c_type) {
  const float alpha = 1.0f, beta = 0.0f;
  // Row-major Y[M,N] = X[M,K] W[N,K]^T  <=>  column-major C[N,M] = W^T(K,N)^T · X^T(K,M).
  CHECK_CUBLAS(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), m, static_cast<int>(K), &alpha,
                            w, ab_type, static_cast<int>(K), x, ab_type, static_cast<int>(K), &beta, y, c_type,
                            static_cast<int>(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// "4b-g128": a LUT config (bits, G) as the rows name it.
std::string ConfigName(const std::pair<int, int>& cfg) {
  return std::to_string(cfg.first) + "b-g" + std::to_string(cfg.second);
}

int NumCopies(size_t bytes_per_copy, size_t l2) {
  return static_cast<int>(std::max<size_t>(2, (4 * l2) / std::max<size_t>(bytes_per_copy, 1) + 2));
}

// Copies of a random dense W [N, K] spanning more than 4x the L2 (rotated between calls, so no
// call finds its weights in cache). The caller frees them.
template <typename T>
std::vector<T*> RotatedDenseWeights(int64_t N, int64_t K, size_t l2) {
  const size_t w_bytes = N * K * sizeof(T);
  std::vector<T*> w(NumCopies(w_bytes, l2));
  for (size_t c = 0; c < w.size(); ++c) {
    CHECK_CUDA(cudaMalloc(&w[c], w_bytes));
    Fill(w[c], N * K, 100 + static_cast<int>(c), 0.05f);
  }
  return w;
}

template <typename T>
void BenchShapeDtype(const Options& o, int64_t K, int64_t N, const std::string& dtype, size_t l2,
                     double copy_bw, cublasHandle_t cublas, cudaStream_t stream, std::vector<Row>* rows) {
  const bool bf16 = dtype == "bf16";
  const cudaDataType_t cuda_type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
  const int64_t max_m = *std::max_element(o.ms.begin(), o.ms.end());
  T *x, *y;
  CHECK_CUDA(cudaMalloc(&x, max_m * K * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&y, max_m * N * sizeof(T)));
  Fill(x, max_m * K, 11, 1.0f);
  // The fusions' operands (KernelChoice "+dn", "+res"): the deferred norm's per-128-column sums of
  // squares [M, K / 128] (positive), the residual [M, N] fp32, its sums [M, N / 16], prenorm_out
  // [M, N] and prenorm_weight [N].
  float *deferred_sumsq, *residual, *sumsq_out, *prenorm_weight;
  T* prenorm_out;
  CHECK_CUDA(cudaMalloc(&deferred_sumsq, max_m * (K / 128) * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&residual, max_m * N * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&sumsq_out, max_m * (N / 16) * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&prenorm_weight, N * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&prenorm_out, max_m * N * sizeof(T)));
  Fill(deferred_sumsq, max_m * (K / 128), 12, 1.0f);
  Fill(residual, max_m * N, 13, 1.0f);
  Fill(prenorm_weight, N, 14, 1.0f);
  AbsInPlace<<<256, 256>>>(deferred_sumsq, max_m * (K / 128));
  CHECK_CUDA(cudaGetLastError());

  // cuBLAS baseline: dense W [N, K] in the same dtype, rotated.
  std::vector<double> cublas_s(o.ms.size());
  {
    const std::vector<T*> w = RotatedDenseWeights<T>(N, K, l2);
    const int copies = static_cast<int>(w.size());
    for (size_t mi = 0; mi < o.ms.size(); ++mi) {
      const int m = static_cast<int>(o.ms[mi]);
      const int calls = std::max(copies * 2, 20);
      cublas_s[mi] = TimePerCall(stream, calls, o.replays, o.cooldown_ms, [&](int i) {
        CublasGemm(cublas, N, m, K, w[i % copies], x, y, cuda_type, cuda_type);
      });
    }
    for (T* p : w) CHECK_CUDA(cudaFree(p));
  }

  for (const auto& cfg : o.configs) {
    const flute::lut::LutShape shape{N, K, cfg.first, cfg.second};
    const absl::Status ok = flute::lut::IsSupportedByCuda(shape);
    if (!ok.ok()) {
      std::fprintf(stderr, "skip %lldx%lld b=%d G=%d: %s\n", (long long)K, (long long)N, cfg.first,
                   cfg.second, std::string(ok.message()).c_str());
      continue;
    }
    const size_t code_bytes = flute::lut::PackedCodeBytes(shape);
    const size_t scale_bytes = N * (K / cfg.second) * 2;
    const int copies = NumCopies(code_bytes + scale_bytes, l2);
    std::vector<uint8_t*> codes(copies);
    std::vector<__half*> scales(copies);
    for (int c = 0; c < copies; ++c) {
      CHECK_CUDA(cudaMalloc(&codes[c], code_bytes));
      CHECK_CUDA(cudaMalloc(&scales[c], scale_bytes));
      FillBytes<<<1024, 256>>>(codes[c], code_bytes, 200 + c);
      Fill(scales[c], scale_bytes / 2, 300 + c, 0.02f);
    }
    float* table;
    CHECK_CUDA(cudaMalloc(&table, sizeof(float) << cfg.first));
    Fill(table, size_t(1) << cfg.first, 5, 1.0f);
    size_t ws_bytes = 0;
    for (int64_t m : o.ms) ws_bytes = std::max(ws_bytes, flute::lut::LutGemmWorkspaceBytes(shape, m));
    void* ws = nullptr;
    if (ws_bytes) {
      CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
      CHECK_CUDA(cudaMemset(ws, 0, ws_bytes));
    }
    const std::string config_name = ConfigName(cfg);
    for (size_t mi = 0; mi < o.ms.size(); ++mi) {
      const int64_t m = o.ms[mi];
      for (const std::string& kernel_name : o.kernels) {
        KernelChoice choice;
        ParseKernel(kernel_name, &choice);
        if (choice.kernel == flute::lut::LutKernel::kStrip && (m > 8 || K % 1024 != 0)) continue;
        flute::lut::LutGemmParams p;
        p.shape = shape;
        p.dtype = bf16 ? flute::lut::ActivationType::kBFloat16 : flute::lut::ActivationType::kFloat16;
        p.m = m;
        p.x = x;
        p.y = y;
        p.table = table;
        p.workspace = ws;
        p.workspace_bytes = ws_bytes;
        p.kernel = choice.kernel;
        p.pdl = choice.pdl;
        p.early_weights = choice.early_weights;
        p.swiglu = choice.swiglu;
        if (choice.deferred_norm) {
          p.deferred_sumsq = deferred_sumsq;
          p.norm_eps = 1e-5f;
        }
        if (choice.residual) {
          p.residual_out = residual;
          p.sumsq_out = sumsq_out;
          p.prenorm_out = prenorm_out;
          p.prenorm_weight = prenorm_weight;
        }
        if ((choice.deferred_norm || choice.residual) && !bf16) continue;  // (bf16 only)
        const bool fused = choice.deferred_norm || choice.residual;
        if (choice.kernel == flute::lut::LutKernel::kTensorCore || fused) {
          // A forced kernel may not take a call (Unimplemented), nor a kernel the fusions (e.g. the
          // strip kernel at M < 5 has no deferred norm): one untimed trial launch.
          p.packed = codes[0];
          p.scales = reinterpret_cast<const uint16_t*>(scales[0]);
          const absl::Status st = flute::lut::LaunchLutGemm(p, stream);
          if (absl::IsUnimplemented(st) || (fused && !st.ok())) {
            std::fprintf(stderr, "%6lldx%-6lld %s M=%-4lld %-8s %-9s n/a (%s)\n", (long long)K, (long long)N,
                         dtype.c_str(), (long long)m, config_name.c_str(), kernel_name.c_str(),
                         std::string(st.message()).c_str());
            continue;
          }
        }
        const int calls = std::max(copies * 2, 20);
        const double sec = TimePerCall(stream, calls, o.replays, o.cooldown_ms, [&](int i) {
          p.packed = codes[i % copies];
          p.scales = reinterpret_cast<const uint16_t*>(scales[i % copies]);
          const absl::Status st = flute::lut::LaunchLutGemm(p, stream);
          if (!st.ok()) {
            std::fprintf(stderr, "error: %s\n", std::string(st.message()).c_str());
            std::exit(1);
          }
        });
        const double bytes = double(code_bytes) + double(scale_bytes) + 2.0 * m * K + 2.0 * m * N;
        Row r{K, N, m, dtype, config_name, kernel_name, sec * 1e6, bytes / sec / 1e9,
              100.0 * bytes / sec / copy_bw, cublas_s[mi] * 1e6, cublas_s[mi] / sec};
        rows->push_back(r);
        std::fprintf(stderr, "%6lldx%-6lld %s M=%-4lld %-8s %-9s %9.2f us %7.0f GB/s %5.1f%% copy  cuBLAS %9.2f us  x%.2f\n",
                     (long long)K, (long long)N, dtype.c_str(), (long long)m, config_name.c_str(),
                     kernel_name.c_str(), r.us, r.gbps, r.pct_copy, r.cublas_us, r.speedup);
      }
    }
    for (int c = 0; c < copies; ++c) {
      CHECK_CUDA(cudaFree(codes[c]));
      CHECK_CUDA(cudaFree(scales[c]));
    }
    CHECK_CUDA(cudaFree(table));
    if (ws) CHECK_CUDA(cudaFree(ws));
  }
  CHECK_CUDA(cudaFree(x));
  CHECK_CUDA(cudaFree(y));
  for (void* q : {static_cast<void*>(deferred_sumsq), static_cast<void*>(residual), static_cast<void*>(sumsq_out),
                  static_cast<void*>(prenorm_weight), static_cast<void*>(prenorm_out)}) {
    CHECK_CUDA(cudaFree(q));
  }
}

// ||a - b|| / ||b|| of two device outputs of `count` values (fp32, or T).
template <typename T>
double NormalizedDiff(const void* a, const void* b, size_t count, bool fp32) {
  auto to_host = [&](const void* p) {
    std::vector<float> out(count);
    if (fp32) {
      CHECK_CUDA(cudaMemcpy(out.data(), p, count * 4, cudaMemcpyDeviceToHost));
    } else {
      std::vector<T> raw(count);
      CHECK_CUDA(cudaMemcpy(raw.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < count; ++i) out[i] = static_cast<float>(raw[i]);
    }
    return out;
  };
  const std::vector<float> va = to_host(a), vb = to_host(b);
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < count; ++i) {
    num += (double(va[i]) - vb[i]) * (double(va[i]) - vb[i]);
    den += double(vb[i]) * vb[i];
  }
  return den > 0.0 ? std::sqrt(num / den) : (num > 0.0 ? INFINITY : 0.0);
}

// The dense section (--dense-gemv): the dense GEMV and cuBLAS on the same rotated W [N, K].
template <typename T>
void BenchDenseShapeDtype(const Options& o, int64_t K, int64_t N, const std::string& dtype, size_t l2,
                          double copy_bw, cublasHandle_t cublas, cudaStream_t stream, std::vector<Row>* rows) {
  const bool bf16 = dtype == "bf16";
  const cudaDataType_t ab_type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
  const bool y_fp32 = o.dense_y == "fp32" || (o.dense_y == "auto" && N > 65536);
  const cudaDataType_t c_type = y_fp32 ? CUDA_R_32F : ab_type;
  const size_t y_elem = y_fp32 ? 4 : sizeof(T);
  const int64_t max_m = *std::max_element(o.ms.begin(), o.ms.end());
  if (!flute::gpu::DenseGemvSupports(max_m, N, K)) {
    std::fprintf(stderr, "skip %lldx%lld: not a dense GEMV shape (k %% 8 == 0, M <= 32)\n", (long long)K, (long long)N);
    return;
  }
  T* x;
  void *y, *y_cublas;
  CHECK_CUDA(cudaMalloc(&x, max_m * K * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&y, max_m * N * y_elem));
  CHECK_CUDA(cudaMalloc(&y_cublas, max_m * N * y_elem));
  Fill(x, max_m * K, 11, 1.0f);
  const size_t w_bytes = N * K * sizeof(T);
  const std::vector<T*> w = RotatedDenseWeights<T>(N, K, l2);
  const int copies = static_cast<int>(w.size());
  CHECK_CUDA(cudaDeviceSynchronize());  // the fills ran on the legacy stream
  const std::string config = y_fp32 ? "dense-yfp32" : "dense";
  for (int64_t m : o.ms) {
    const int calls = std::max(copies * 2, 20);
    const double cublas_sec = TimePerCall(stream, calls, o.replays, o.cooldown_ms, [&](int i) {
      CublasGemm(cublas, N, static_cast<int>(m), K, w[i % copies], x, y_cublas, ab_type, c_type);
    });
    for (const std::string& kernel_name : o.kernels) {
      bool pdl = false;
      int cluster = 0, variant = 0, splits = 0;
      ParseDenseKernel(kernel_name, &pdl, &cluster, &variant, &splits);  // (checked in ParseOptions)
      if ((cluster != 0 || variant == 1) && m <= 8) continue;  // one kernel there: the plain row says it all
      if (variant == 2 && (m <= 8 || m > 16)) continue;  // the flat variant: 9 <= M <= 16 only
      flute::gpu::DenseGemvParams p;
      p.dtype = bf16 ? flute::lut::ActivationType::kBFloat16 : flute::lut::ActivationType::kFloat16;
      p.m = m;
      p.n = N;
      p.k = K;
      p.x = x;
      p.y = y;
      p.y_fp32 = y_fp32;
      p.pdl = pdl;
      p.cluster = cluster;
      p.variant = variant;
      p.splits = splits;
      auto launch = [&](const void* weights) {
        p.w = weights;
        const absl::Status st = flute::gpu::LaunchDenseGemv(p, stream);
        if (!st.ok()) {
          std::fprintf(stderr, "error: %s\n", std::string(st.message()).c_str());
          std::exit(1);
        }
      };
      // Sanity check, untimed (and the launcher's first call, outside the graph capture): one
      // call of each on the same inputs.
      launch(w[0]);
      CublasGemm(cublas, N, static_cast<int>(m), K, w[0], x, y_cublas, ab_type, c_type);
      CHECK_CUDA(cudaStreamSynchronize(stream));
      const double diff = NormalizedDiff<T>(y, y_cublas, static_cast<size_t>(m * N), y_fp32);
      const double sec = TimePerCall(stream, calls, o.replays, o.cooldown_ms, [&](int i) { launch(w[i % copies]); });
      const double bytes = double(w_bytes) + 2.0 * m * K + double(y_elem) * m * N;
      Row r{K, N, m, dtype, config, kernel_name, sec * 1e6, bytes / sec / 1e9,
            100.0 * bytes / sec / copy_bw, cublas_sec * 1e6, cublas_sec / sec};
      r.diff_vs_cublas = diff;
      rows->push_back(r);
      std::fprintf(stderr,
                   "%6lldx%-6lld %s M=%-2lld %-11s %-11s %9.2f us %7.0f GB/s %5.1f%% copy  cuBLAS %9.2f us  x%.2f  "
                   "diff %.1e\n",
                   (long long)K, (long long)N, dtype.c_str(), (long long)m, config.c_str(), kernel_name.c_str(), r.us,
                   r.gbps, r.pct_copy, r.cublas_us, r.speedup, diff);
    }
  }
  for (T* p : w) CHECK_CUDA(cudaFree(p));
  CHECK_CUDA(cudaFree(x));
  CHECK_CUDA(cudaFree(y));
  CHECK_CUDA(cudaFree(y_cublas));
}

// dense: one more column, the dense section's difference from cuBLAS.
std::string Markdown(const std::vector<Row>& rows, const std::string& header, bool dense = false) {
  std::ostringstream md;
  md << header << "\n\n| K x N | dtype | M | config | kernel | µs | GB/s | % copy BW | cuBLAS µs | speedup |"
     << (dense ? " diff vs cuBLAS |\n" : "\n") << "|---|---|---|---|---|---|---|---|---|---|"
     << (dense ? "---|\n" : "\n");
  char line[256];
  for (const Row& r : rows) {
    std::snprintf(line, sizeof(line), "| %lldx%lld | %s | %lld | %s | %s | %.2f | %.0f | %.1f | %.2f | %.2f |",
                  (long long)r.k, (long long)r.n, r.dtype.c_str(), (long long)r.m, r.config.c_str(),
                  r.kernel.c_str(), r.us, r.gbps, r.pct_copy, r.cublas_us, r.speedup);
    md << line;
    if (dense) {
      std::snprintf(line, sizeof(line), " %.1e |", r.diff_vs_cublas);
      md << line;
    }
    md << "\n";
  }
  return md.str();
}

std::string Json(const std::vector<Row>& rows, const std::string& device, double copy_bw) {
  std::ostringstream js;
  js << "{\n  \"device\": \"" << device << "\",\n  \"copy_bandwidth_gbps\": " << copy_bw / 1e9
     << ",\n  \"results\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    js << "    {\"k\": " << r.k << ", \"n\": " << r.n << ", \"m\": " << r.m << ", \"dtype\": \"" << r.dtype
       << "\", \"config\": \"" << r.config << "\", \"kernel\": \"" << r.kernel << "\", \"us\": " << r.us << ", \"gbps\": " << r.gbps
       << ", \"pct_copy_bw\": " << r.pct_copy << ", \"cublas_us\": " << r.cublas_us
       << ", \"speedup_vs_cublas\": " << r.speedup;
    if (r.diff_vs_cublas >= 0.0) js << ", \"diff_vs_cublas\": " << r.diff_vs_cublas;
    js << "}" << (i + 1 < rows.size() ? "," : "") << "\n";
  }
  js << "  ]\n}\n";
  return js.str();
}

// Rows of X from which a row counts as heavy for the two passes of main().
constexpr int64_t kHeavyM = 64;

// Every shape and dtype of `o` (its current ms), rows appended to `rows`. 0, or the exit status.
int BenchAllShapes(const Options& o, const cudaDeviceProp& prop, double copy_bw, cublasHandle_t cublas,
                   cudaStream_t stream, std::vector<Row>* rows) {
  for (const auto& kn : o.shapes) {
    for (const auto& dt : o.dtypes) {
      if (dt == "fp16") {
        if (o.dense) {
          BenchDenseShapeDtype<__half>(o, kn.first, kn.second, dt, prop.l2CacheSize, copy_bw, cublas, stream, rows);
        } else {
          BenchShapeDtype<__half>(o, kn.first, kn.second, dt, prop.l2CacheSize, copy_bw, cublas, stream, rows);
        }
      } else if (dt == "bf16") {
        if (o.dense) {
          BenchDenseShapeDtype<__nv_bfloat16>(o, kn.first, kn.second, dt, prop.l2CacheSize, copy_bw, cublas, stream,
                                              rows);
        } else {
          BenchShapeDtype<__nv_bfloat16>(o, kn.first, kn.second, dt, prop.l2CacheSize, copy_bw, cublas, stream, rows);
        }
      } else {
        std::fprintf(stderr, "error: --dtypes takes fp16 and bf16, got %s\n", dt.c_str());
        return 2;
      }
    }
  }
  return 0;
}

// Position of `value` in `list` (list.size() when absent).
template <typename T>
size_t IndexIn(const std::vector<T>& list, const T& value) {
  return static_cast<size_t>(std::find(list.begin(), list.end(), value) - list.begin());
}

// The rows in the order of one pass: shape, dtype, config, M (each as given on the command line);
// rows that tie (the kernels of one M) keep the order they were timed in.
void SortRowsAsRequested(const Options& o, std::vector<Row>* rows) {
  std::vector<std::string> configs;
  for (const auto& c : o.configs) configs.push_back(ConfigName(c));
  auto key = [&](const Row& r) {
    return std::make_tuple(IndexIn(o.shapes, std::make_pair(r.k, r.n)), IndexIn(o.dtypes, r.dtype),
                           o.dense ? size_t{0} : IndexIn(configs, r.config), IndexIn(o.ms, r.m));
  };
  std::stable_sort(rows->begin(), rows->end(), [&](const Row& a, const Row& b) { return key(a) < key(b); });
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseOptions(argc, argv, &o)) return 2;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "error: no CUDA GPU found; flute bench kernel needs one\n");
    return 1;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t cublas;
  CHECK_CUBLAS(cublasCreate(&cublas));
  CHECK_CUBLAS(cublasSetStream(cublas, stream));
  const double copy_bw = CopyBandwidth(stream, prop.multiProcessorCount);
  std::fprintf(stderr, "%s, %d SMs, L2 %d MiB, copy bandwidth %.0f GB/s\n", prop.name,
               prop.multiProcessorCount, prop.l2CacheSize >> 20, copy_bw / 1e9);
  // Two passes: every shape's rows of fewer than kHeavyM rows first, then the rest. The rows of
  // 64 and more (tensor-core bound, for cuBLAS and for the LUT kernels) draw enough power to put
  // the H200 under its power cap for a while, and the decode-size rows timed after them, which are
  // bound by the SMs' issue rate, ran up to 1.35x slower (bench/results/ab-2026-11-28-h200/
  // session47/, call 5: 8192x57344 4-bit M = 1 86.4 us alone, 108-120 after the M = 64-128 rows
  // of the shapes before it; cuBLAS 4 % slower). The rows are printed in the usual order.
  std::vector<Row> rows;
  const std::vector<int64_t> all_ms = o.ms;
  for (const bool heavy : {false, true}) {
    o.ms.clear();
    for (int64_t m : all_ms) {
      if ((m >= kHeavyM) == heavy) o.ms.push_back(m);
    }
    if (o.ms.empty()) continue;
    const int status = BenchAllShapes(o, prop, copy_bw, cublas, stream, &rows);
    if (status != 0) return status;
  }
  o.ms = all_ms;
  SortRowsAsRequested(o, &rows);
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
  char header[320];
  std::snprintf(header, sizeof(header),
                "%s vs cuBLAS on %s (%d SMs), %s; copy bandwidth %.0f GB/s (read+write, same "
                "run); median of CUDA-graph replays, weights rotated over > 4x L2",
                o.dense ? "Dense GEMV" : "LUT-GEMM", prop.name, prop.multiProcessorCount, date, copy_bw / 1e9);
  const std::string md = Markdown(rows, header, o.dense);
  std::fputs(md.c_str(), stdout);
  if (!o.md_path.empty()) std::ofstream(o.md_path) << md;
  if (!o.json_path.empty()) std::ofstream(o.json_path) << Json(rows, prop.name, copy_bw);
  CHECK_CUBLAS(cublasDestroy(cublas));
  return 0;
}
