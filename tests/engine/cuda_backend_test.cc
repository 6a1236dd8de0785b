// The CUDA backend against the CPU reference backend on the man-page model (16-bit weights
// and NF4 G128 with the same codes), and against itself: chunked vs one-pass prefill, a
// batch vs each sequence alone, graphs vs eager launches, seeds. Skips with a message when
// the build has no CUDA, the machine no GPU, or ../shared is absent.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "engine/backend.h"
#include "engine/cuda_backend.h"
#include "engine/generation.h"
#include "engine/kv_cache.h"
#include "engine/scheduler.h"
#include "engine/perplexity.h"
#include "engine/quantized_checkpoint.h"
#include "engine/safetensors.h"
#include "gtest/gtest.h"
#include "tests/engine/backend_test_util.h"
#include "tests/engine/checkpoint_builder.h"
#include "tests/test_util.h"

namespace flute {
namespace {

std::string ManpageDir() { return flute::testing::SharedDir() + "/models/manpage-llama-22m"; }

std::vector<int32_t> ValidationTokens(size_t count, size_t offset = 0) {
  auto ids = ReadTokenFile(flute::testing::SharedDir() + "/data/manpage-val.u16", "u16");
  EXPECT_TRUE(ids.ok()) << ids.status();
  if (!ids.ok() || ids->size() < offset + count) return {};
  return std::vector<int32_t>(ids->begin() + offset, ids->begin() + offset + count);
}

BackendOptions CudaOptions(const std::string& dtype = "float16", bool profile = false) {
  BackendOptions o;
  o.device = "cuda";
  o.dtype = dtype;
  o.gpu_kv_cache_bytes = int64_t{256} << 20;
  o.max_tokens_per_step = 512;
  o.profile = profile;
  return o;
}

// The CUDA backend, or nullptr with `skip` set to why there is none.
std::unique_ptr<Backend> MakeCuda(const std::string& dir, const BackendOptions& o, std::string* skip) {
  auto backend = CreateBackend(dir, o);
  if (backend.ok()) return std::move(backend).value();
  if (absl::IsUnimplemented(backend.status()) || absl::IsFailedPrecondition(backend.status())) {
    *skip = std::string(backend.status().message());
  } else {
    ADD_FAILURE() << backend.status();
  }
  return nullptr;
}

std::unique_ptr<Backend> MakeCpu(const std::string& dir) {
  BackendOptions o;
  o.kv_cache_bytes = 64 << 20;
  auto backend = CreateBackend(dir, o);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? std::move(backend).value() : nullptr;
}

// Why the CUDA backend cannot run here ("" when it can), found once.
const std::string& NoCudaReason() {
  static const std::string reason = [] {
    auto backend = CreateBackend(ManpageDir(), CudaOptions());
    if (absl::IsUnimplemented(backend.status()) || absl::IsFailedPrecondition(backend.status())) {
      return std::string(backend.status().message());
    }
    return std::string();
  }();
  return reason;
}

// Skips without ../shared or without a usable CUDA backend.
#define REQUIRE_SHARED_AND_GPU()                                                 \
  FLUTE_REQUIRE_SHARED();                                                        \
  if (!NoCudaReason().empty()) GTEST_SKIP() << "CUDA backend unavailable: " << NoCudaReason()

#define REQUIRE_CUDA(ptr, skip) \
  if (!(ptr)) { if (!(skip).empty()) GTEST_SKIP() << "CUDA backend unavailable: " << (skip); return; }

using flute::testing::RunChunked;

// max |a - b| / (max(b) - min(b)): the normalized error.
double NormalizedError(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::fabs(double{a[i]} - b[i]));
  const auto [lo, hi] = std::minmax_element(b.begin(), b.end());
  return worst / (*hi - *lo);
}

// The checkpoint in input_dir quantized to NF4 G128 in output_dir (returned).
std::string QuantizeNf4(const std::string& input_dir, const std::string& output_dir) {
  QuantizeOptions q;
  q.input_dir = input_dir;
  q.output_dir = output_dir;
  q.bits = 4;
  q.group_size = 128;
  q.method = "nf";
  const absl::Status status = QuantizeCheckpoint(q);
  EXPECT_TRUE(status.ok()) << status;
  return q.output_dir;
}

std::string QuantizedManpage() {
  static const std::string dir = QuantizeNf4(ManpageDir(), flute::testing::MakeTempDir("flute-cuda-nf4") + "/nf4");
  return dir;
}

class CudaParity : public ::testing::TestWithParam<std::string> {
 protected:
  std::string ModelDir() const { return GetParam() == "nf4" ? QuantizedManpage() : ManpageDir(); }
};

TEST_P(CudaParity, LogitsMatchTheCpuBackend) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = MakeCuda(ModelDir(), CudaOptions(), &skip);
  REQUIRE_CUDA(gpu, skip);
  auto cpu = MakeCpu(ModelDir());
  const std::vector<int32_t> ids = ValidationTokens(300);
  // One prefill of 300 tokens, then token-by-token is covered by chunk = 1 below.
  const double prefill = NormalizedError(RunChunked(*gpu, ids, 300), RunChunked(*cpu, ids, 300));
  const std::vector<int32_t> head(ids.begin(), ids.begin() + 40);
  const double decode = NormalizedError(RunChunked(*gpu, head, 1), RunChunked(*cpu, head, 1));
  // Chunks of 12 tokens (and a last one of 4): 16-bit products of 9-16 rows, which run on the
  // dense GEMV's cluster kernel (kernels/dense_gemv.h), the LM head's included.
  const double chunk12 = NormalizedError(RunChunked(*gpu, head, 12), RunChunked(*cpu, head, 12));
  std::printf("[%s fp16] normalized logit error: prefill %.2e, decode %.2e, chunks of 12 %.2e\n",
              GetParam().c_str(), prefill, decode, chunk12);
  EXPECT_LE(prefill, 1e-3);
  EXPECT_LE(decode, 1e-3);
  EXPECT_LE(chunk12, 1e-3);
}

TEST_P(CudaParity, Bf16LogitsStayClose) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = MakeCuda(ModelDir(), CudaOptions("bfloat16"), &skip);
  REQUIRE_CUDA(gpu, skip);
  auto cpu = MakeCpu(ModelDir());
  const std::vector<int32_t> ids = ValidationTokens(200);
  const double error = NormalizedError(RunChunked(*gpu, ids, 200), RunChunked(*cpu, ids, 200));
  std::printf("[%s bf16] normalized logit error: %.2e\n", GetParam().c_str(), error);
  EXPECT_LE(error, 1e-2);  // bf16 keeps 8 bits of mantissa: ~8x fp16's error
}

TEST_P(CudaParity, PerplexityWithinHalfAPercentOfCpu) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = MakeCuda(ModelDir(), CudaOptions("bfloat16"), &skip);
  REQUIRE_CUDA(gpu, skip);
  auto cpu = MakeCpu(ModelDir());
  const std::vector<int32_t> ids = ValidationTokens(16 * 512 + 1);
  auto g = ComputePerplexity(*gpu, ids, 512, 16, nullptr);
  auto c = ComputePerplexity(*cpu, ids, 512, 16, nullptr);
  ASSERT_TRUE(g.ok() && c.ok());
  std::printf("[%s] ppl over 16 windows: cuda bf16 %.4f, cpu %.4f\n", GetParam().c_str(), g->perplexity, c->perplexity);
  EXPECT_NEAR(g->perplexity / c->perplexity, 1.0, 0.005);
}

INSTANTIATE_TEST_SUITE_P(Weights, CudaParity, ::testing::Values("dense", "nf4"));

// A two-layer random model 3072 wide (q 24 x 128, kv 8 x 128, intermediate 1024) in NF4 G128:
// wide enough (k = 3072) for the strip kernel, so its decode steps run the gate/up
// projection with the fused SwiGLU epilogue on the interleaved rows, and both residual add +
// RMSNorm of each layer inside the projections around them (o -> gate/up, down -> the next
// layer's qkv and the final norm), which the man-page model (512 wide) never does. Decode
// logits must still match the CPU backend.
std::string Wide3072Nf4() {
  static const std::string dir = [] {
    const std::string base = flute::testing::MakeTempDir("flute-cuda-wide");
    flute::testing::TinyLlamaSpec spec;
    spec.vocab_size = 256;
    spec.hidden_size = 3072;
    spec.intermediate_size = 1024;
    spec.num_layers = 2;
    spec.num_heads = 24;
    spec.num_kv_heads = 8;
    spec.head_dim = 128;
    std::vector<flute::testing::FloatTensor> tensors = flute::testing::TinyLlamaTensors(spec, DType::kBF16, 20261125);
    for (auto& t : tensors) {  // std 0.02 for projections (LLaMA-like), norms near 1
      const bool norm = t.name.find("norm") != std::string::npos;
      for (float& v : t.values) {
        v = flute::testing::RoundTo(DType::kBF16, norm ? 1.0f + 0.1f * v : 0.04f * v);
      }
    }
    std::filesystem::create_directories(base + "/dense");
    flute::testing::WriteCheckpoint(base + "/dense", flute::testing::TinyLlamaConfigJson(spec), tensors);
    return QuantizeNf4(base + "/dense", base + "/nf4");
  }();
  return dir;
}

TEST(CudaBackend, FusedSwiGluDecodeMatchesTheCpuBackend) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = MakeCuda(Wide3072Nf4(), CudaOptions(), &skip);
  REQUIRE_CUDA(gpu, skip);
  auto cpu = MakeCpu(Wide3072Nf4());
  ASSERT_NE(cpu, nullptr);
  std::vector<int32_t> ids;
  for (int i = 0; i < 24; ++i) ids.push_back((i * 37 + 11) % 256);
  const double decode = NormalizedError(RunChunked(*gpu, ids, 1), RunChunked(*cpu, ids, 1));
  const double prefill = NormalizedError(RunChunked(*gpu, ids, 24), RunChunked(*cpu, ids, 24));
  std::printf("[wide nf4 fp16] normalized logit error: decode (fused SwiGLU and norms) %.2e, prefill %.2e\n", decode,
              prefill);
  EXPECT_LE(decode, 1e-3);
  EXPECT_LE(prefill, 1e-3);
}

// The decode steps of the wide model really run the fused norms: with --profile, a step of one
// token launches add + RMSNorm twice (layer 0's input norm, the final norm) instead of
// 2 x layers + 1 = 5 times; a prefill step of 24 tokens (more than the strip kernel's 8 rows:
// no fusion) launches all 5.
int NormLaunchesPerStep(Backend& backend) {
  const std::string report = AsCudaBench(&backend)->ProfileReport();
  for (absl::string_view line : absl::StrSplit(report, '\n')) {
    if (!absl::StartsWith(line, "add+rmsnorm")) continue;
    const std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    double launches = 0;
    if (absl::SimpleAtod(fields.back(), &launches)) return static_cast<int>(std::lround(launches));
  }
  ADD_FAILURE() << "no add+rmsnorm row in the profile:\n" << report;
  return -1;
}

TEST(CudaBackend, DecodeStepsRunTheFusedNorms) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = MakeCuda(Wide3072Nf4(), CudaOptions("float16", /*profile=*/true), &skip);
  REQUIRE_CUDA(gpu, skip);
  std::vector<int32_t> ids;
  for (int i = 0; i < 24; ++i) ids.push_back((i * 53 + 7) % 256);
  RunChunked(*gpu, ids, 1);
  EXPECT_EQ(NormLaunchesPerStep(*gpu), 2);
  AsCudaBench(gpu.get())->ResetProfile();
  RunChunked(*gpu, ids, 24);
  EXPECT_EQ(NormLaunchesPerStep(*gpu), 5);
}

// The bf16 model in `dir` on a profiling CUDA backend, in chunks of each of `chunks` rows, with its
// fused norms and with the separate norm kernels (FLUTE_DEFERRED_NORM=0), against the CPU backend:
// two add + RMSNorm launches per fused step, at least `separate_launches` per separate one, and
// fused logits as close as Bf16LogitsStayClose and within twice the separate kernels' error.
// Prints "[<model> bf16, chunks of N] normalized logit error vs cpu: <fused> E, <separate> E".
void CheckFusedNormsAgainstTheSeparateKernels(const std::string& dir, const std::vector<int32_t>& ids,
                                              const std::vector<int>& chunks, int separate_launches,
                                              const char* model, const char* fused, const char* separate) {
  std::string skip;
  auto gpu = MakeCuda(dir, CudaOptions("bfloat16", /*profile=*/true), &skip);
  REQUIRE_CUDA(gpu, skip);
  auto cpu = MakeCpu(dir);
  ASSERT_NE(cpu, nullptr);
  for (int chunk : chunks) {
    SCOPED_TRACE(::testing::Message() << "chunks of " << chunk);
    const std::vector<float> want = RunChunked(*cpu, ids, chunk);
    AsCudaBench(gpu.get())->ResetProfile();
    const std::vector<float> fused_logits = RunChunked(*gpu, ids, chunk);
    EXPECT_EQ(NormLaunchesPerStep(*gpu), 2);
    AsCudaBench(gpu.get())->ResetProfile();
    setenv("FLUTE_DEFERRED_NORM", "0", 1);
    const std::vector<float> separate_logits = RunChunked(*gpu, ids, chunk);
    unsetenv("FLUTE_DEFERRED_NORM");
    EXPECT_GE(NormLaunchesPerStep(*gpu), separate_launches);
    const double fused_error = NormalizedError(fused_logits, want);
    const double separate_error = NormalizedError(separate_logits, want);
    std::printf("[%s bf16, chunks of %d] normalized logit error vs cpu: %s %.2e, %s %.2e\n", model, chunk, fused,
                fused_error, separate, separate_error);
    EXPECT_LE(fused_error, 1e-2);  // as Bf16LogitsStayClose
    EXPECT_LE(fused_error, 2 * separate_error + 1e-3);
  }
}

// bf16 steps of 5 or more rows (here prefill chunks of 8) run the deferred norm on the
// tensor-core kernel (cuda_forward.cc: NormFusion::deferred): two add + RMSNorm launches per
// step instead of 2 x layers + 1, and logits as close to the CPU backend as with the separate
// norm kernels (FLUTE_DEFERRED_NORM=0).
TEST(CudaBackend, Bf16StepsRunTheDeferredNorm) {
  REQUIRE_SHARED_AND_GPU();
  CheckFusedNormsAgainstTheSeparateKernels(QuantizedManpage(), ValidationTokens(64, 3000), {8},
                                           /*separate_launches=*/5, "nf4", "deferred norm", "separate norm kernels");
}

// 16-bit models: passes of 1-32 rows (here chunks of 1 and 8, the wgmma kernel's 16-row instance
// with the epilogues, and 16 and 32) run the dense GEMV's epilogues (kernels/dense_gemv.h): the
// residual add + RMSNorm of every layer inside the o / down projections and the deferred norm in
// qkv and gate/up (bf16), SwiGLU in gate/up. Two add + RMSNorm launches per step instead of
// 2 x layers + 1, and logits as close to the CPU backend as with the separate kernels
// (FLUTE_DEFERRED_NORM=0).
TEST(CudaBackend, Bf16DenseStepsOf1To32RowsRunTheGemvEpilogues) {
  REQUIRE_SHARED_AND_GPU();
  CheckFusedNormsAgainstTheSeparateKernels(ManpageDir(), ValidationTokens(64, 5000), {1, 8, 16, 32},
                                           /*separate_launches=*/13, "dense", "GEMV epilogues", "separate kernels");
}

// fp16 16-bit models at 17-32 rows (the wgmma kernel with the residual epilogue; no deferred norm
// in fp16) against the CPU backend, and against cuBLAS there (FLUTE_DENSE_GEMV_MAX_ROWS=16).
TEST(CudaBackend, Fp16DenseStepsOf17To32RowsMatchTheCpuBackend) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = MakeCuda(ManpageDir(), CudaOptions("float16"), &skip);
  REQUIRE_CUDA(gpu, skip);
  setenv("FLUTE_DENSE_GEMV_MAX_ROWS", "16", 1);
  auto cublas = MakeCuda(ManpageDir(), CudaOptions("float16"), &skip);
  unsetenv("FLUTE_DENSE_GEMV_MAX_ROWS");
  REQUIRE_CUDA(cublas, skip);
  auto cpu = MakeCpu(ManpageDir());
  ASSERT_NE(cpu, nullptr);
  const std::vector<int32_t> ids = ValidationTokens(96, 5000);
  for (int chunk : {17, 24, 32}) {
    const std::vector<float> want = RunChunked(*cpu, ids, chunk);
    const double wgmma_error = NormalizedError(RunChunked(*gpu, ids, chunk), want);
    const double cublas_error = NormalizedError(RunChunked(*cublas, ids, chunk), want);
    std::printf("[dense fp16, chunks of %d] normalized logit error vs cpu: wgmma %.2e, cuBLAS %.2e\n", chunk,
                wgmma_error, cublas_error);
    EXPECT_LE(wgmma_error, 1e-3) << "chunks of " << chunk;
    EXPECT_LE(wgmma_error, 2 * cublas_error + 2e-4) << "chunks of " << chunk;
  }
}

// A 300-row pass runs on the LUT-GEMM kernels by default (LogitsMatchTheCpuBackend). With the
// LUT kernels' row limit below 300 the same pass dequantizes each matrix and runs cuBLAS; both
// paths must match the CPU backend.
TEST(CudaBackend, DequantizedPrefillPathMatchesTheCpuBackend) {
  REQUIRE_SHARED_AND_GPU();
  const std::vector<int32_t> ids = ValidationTokens(300, 2000);
  auto cpu = MakeCpu(QuantizedManpage());
  const std::vector<float> reference = RunChunked(*cpu, ids, 300);
  std::vector<float> paths[2];
  for (int dequantized = 0; dequantized < 2; ++dequantized) {
    if (dequantized) setenv("FLUTE_LUT_KERNEL_MAX_ROWS", "255", 1);
    std::string skip;
    auto gpu = MakeCuda(QuantizedManpage(), CudaOptions(), &skip);
    unsetenv("FLUTE_LUT_KERNEL_MAX_ROWS");
    REQUIRE_CUDA(gpu, skip);
    paths[dequantized] = RunChunked(*gpu, ids, 300);
    const double error = NormalizedError(paths[dequantized], reference);
    std::printf("%s: normalized logit error vs CPU %.2e\n", dequantized ? "dequantize + cuBLAS" : "LUT kernels", error);
    EXPECT_LE(error, 1e-3) << (dequantized ? "dequantize + cuBLAS" : "LUT kernels");
  }
  // Two different summation orders: close, not bitwise.
  EXPECT_LE(NormalizedError(paths[0], paths[1]), 1e-3);
}

TEST(CudaBackend, ChunkedPrefillMatchesOnePass) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = MakeCuda(QuantizedManpage(), CudaOptions(), &skip);
  REQUIRE_CUDA(gpu, skip);
  const std::vector<int32_t> ids = ValidationTokens(300, 1000);
  const std::vector<float> one = RunChunked(*gpu, ids, 300);
  for (int chunk : {1, 37, 128}) {
    const double error = NormalizedError(RunChunked(*gpu, ids, chunk), one);
    std::printf("chunk %d vs one pass: normalized error %.2e\n", chunk, error);
    EXPECT_LE(error, 1e-3) << "chunk " << chunk;
  }
}

struct Seq {
  std::vector<int32_t> tokens;
  int prompt_len = 0;
  int computed = 0;
  std::vector<int32_t> table;
  std::unique_ptr<Sampler> sampler;
  std::vector<float> logprobs;  // of each new token
};

SamplingParams Greedy() {
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  return greedy;
}

// Continuations of `prompts` (greedy unless `sampling` says otherwise), run together as the
// scheduler would: decodes first, then prefill chunks within a budget of `budget` tokens per
// step.
// With `logprobs`, also each new token's logprob (the sampler's log-softmax of the logits).
// invariant_chunks: prefill chunks cut as the scheduler does in the batch-invariant mode
// (PrefillChunkTokens: never a 1-token chunk of a prompt).
std::vector<std::vector<int32_t>> RunTogether(Backend& backend, const std::vector<std::vector<int32_t>>& prompts,
                                              int max_new, int budget, const SamplingParams& sampling = Greedy(),
                                              std::vector<std::vector<float>>* logprobs = nullptr,
                                              bool invariant_chunks = false) {
  KvBlockAllocator kv(backend.num_kv_blocks(), backend.kv_block_size());
  std::vector<Seq> seqs(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    seqs[i].tokens = prompts[i];
    seqs[i].prompt_len = static_cast<int>(prompts[i].size());
    EXPECT_TRUE(kv.Reserve(&seqs[i].table, seqs[i].prompt_len + max_new).ok());
    seqs[i].sampler = std::make_unique<Sampler>(sampling, prompts[i]);
  }
  for (;;) {
    std::vector<BatchEntry> batch;
    std::vector<SampleSlot> slots;
    std::vector<Seq*> in_batch;
    int left = budget;
    for (int pass = 0; pass < 2; ++pass) {  // decodes, then prefills
      for (Seq& s : seqs) {
        const int remaining = static_cast<int>(s.tokens.size()) - s.computed;
        const bool done = static_cast<int>(s.tokens.size()) - s.prompt_len >= max_new && remaining == 0;
        if (done || remaining == 0 || (remaining == 1) != (pass == 0) || left == 0) continue;
        if (static_cast<int>(s.tokens.size()) - s.prompt_len >= max_new) continue;
        const int n = invariant_chunks && pass == 1 ? PrefillChunkTokens(remaining, left) : std::min(remaining, left);
        if (n == 0) continue;
        BatchEntry e;
        e.tokens.assign(s.tokens.begin() + s.computed, s.tokens.begin() + s.computed + n);
        e.start_position = s.computed;
        e.block_table = &s.table;
        if (n == remaining) slots.push_back({static_cast<int>(batch.size()), s.sampler.get()});
        batch.push_back(std::move(e));
        in_batch.push_back(&s);
        left -= n;
      }
    }
    if (batch.empty()) break;
    std::vector<SampledToken> sampled;
    const absl::Status status = backend.ForwardAndSample(batch, slots, &sampled);
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok()) break;
    size_t next = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      Seq& s = *in_batch[i];
      s.computed += static_cast<int>(batch[i].tokens.size());
      if (next < slots.size() && slots[next].entry == static_cast<int>(i)) {
        s.logprobs.push_back(sampled[next].logprob);
        s.tokens.push_back(sampled[next++].token);
        s.sampler->Accept(s.tokens.back());
      }
    }
  }
  std::vector<std::vector<int32_t>> out;
  for (const Seq& s : seqs) out.emplace_back(s.tokens.begin() + s.prompt_len, s.tokens.end());
  if (logprobs != nullptr) {
    logprobs->clear();
    for (const Seq& s : seqs) logprobs->push_back(s.logprobs);
  }
  return out;
}

std::vector<std::vector<int32_t>> InvariancePrompts() {
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 32; ++i) prompts.push_back(ValidationTokens(3 + 11 * i, 5000 + 997 * i));
  return prompts;
}

struct Differences {
  int tokens = 0;  // sequences whose greedy tokens differ
  int bits = 0;    // sequences where a token or the bits of a token's logprob differ
};

// Each sequence's greedy continuation run alone (one prefill pass) against the same sequence
// run among the 32 (prefill chunks within a 256-token budget, decode batches of up to 32).
// The logprob bits catch any change of the logits' bits that reaches the chosen token's
// log-softmax, not only one that flips a token.
Differences CountDifferent(Backend& backend, bool invariant_chunks) {
  const auto prompts = InvariancePrompts();
  std::vector<std::vector<float>> together_lp, alone_lp;
  const auto together = RunTogether(backend, prompts, 24, 256, Greedy(), &together_lp, invariant_chunks);
  Differences d;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto alone = RunTogether(backend, {prompts[i]}, 24, 4096, Greedy(), &alone_lp);
    const bool same_bits = alone_lp[0].size() == together_lp[i].size() &&
                           std::memcmp(alone_lp[0].data(), together_lp[i].data(), alone_lp[0].size() * sizeof(float)) == 0;
    if (alone[0] != together[i]) ++d.tokens;
    if (alone[0] != together[i] || !same_bits) ++d.bits;
  }
  return d;
}

// The quantized man-page model on the CUDA engine in the batch-invariant mode (null, with
// `skip` set, where it cannot be made).
std::unique_ptr<Backend> InvariantCuda(std::string* skip) {
  BackendOptions o = CudaOptions();
  o.batch_invariant = true;
  return MakeCuda(QuantizedManpage(), o, skip);
}

TEST(CudaBackend, BatchOf32EqualsEachSequenceAloneInBatchInvariantMode) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = InvariantCuda(&skip);
  REQUIRE_CUDA(gpu, skip);
  const Differences d = CountDifferent(*gpu, /*invariant_chunks=*/true);
  EXPECT_EQ(d.tokens, 0) << "--batch-invariant";
  EXPECT_EQ(d.bits, 0) << "--batch-invariant: logprob bits";
}

// A prompt prefilled in chunks of at most 16 tokens (cut as the scheduler does in the mode)
// gives the same tokens and logprob bits as one prefill pass. (A 1-token chunk would run the
// decode attention for a prompt position: 2 of these 32 prompts, of 113 and 289 tokens, then
// differed by ~1e-3 in their first logprob on the H100.)
TEST(CudaBackend, ChunkedPrefillIsBitwiseOnePassInBatchInvariantMode) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = InvariantCuda(&skip);
  REQUIRE_CUDA(gpu, skip);
  std::vector<std::vector<float>> chunked_lp, one_pass_lp;
  for (const auto& prompt : InvariancePrompts()) {
    const auto chunked = RunTogether(*gpu, {prompt}, 8, 16, Greedy(), &chunked_lp, /*invariant_chunks=*/true);
    const auto one_pass = RunTogether(*gpu, {prompt}, 8, 4096, Greedy(), &one_pass_lp);
    EXPECT_EQ(chunked[0], one_pass[0]) << prompt.size() << "-token prompt";
    EXPECT_EQ(0, std::memcmp(chunked_lp[0].data(), one_pass_lp[0].data(), chunked_lp[0].size() * sizeof(float)))
        << prompt.size() << "-token prompt: logprob bits";
  }
}

TEST(CudaBackend, BatchOf32InTheDefaultMode) {  // reports what the invariant mode buys
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = MakeCuda(QuantizedManpage(), CudaOptions(), &skip);
  REQUIRE_CUDA(gpu, skip);
  const Differences d = CountDifferent(*gpu, /*invariant_chunks=*/false);
  std::printf("default mode: %d of 32 sequences differ from their solo run in tokens, %d in logprob bits\n",
              d.tokens, d.bits);
}

// The decode attention's columns kernel (a CTA per column of splits, for batches of many
// (sequence, kv head) pairs: 8B from batch 13) is not what the man-page model's batches choose
// on their own, so it is forced here (FLUTE_ATTENTION_COLUMNS, read at each launch, also while
// the decode graphs are captured at load): one column, where each CTA merges its slice's
// splits in its own shared memory, and two and three, which merge through the workspace.
// 32 sequences decoded together give the same tokens and logprob bits as with the default
// choice (one CTA per split): the splits and each one's arithmetic are the same.
TEST(CudaBackend, ForcedAttentionColumnsGiveTheSameBits) {
  REQUIRE_SHARED_AND_GPU();
  struct ColumnsEnv {
    explicit ColumnsEnv(const char* value) {
      if (value != nullptr) setenv("FLUTE_ATTENTION_COLUMNS", value, 1);
    }
    ~ColumnsEnv() { unsetenv("FLUTE_ATTENTION_COLUMNS"); }
  };
  const auto prompts = InvariancePrompts();
  std::vector<std::vector<int32_t>> base;
  std::vector<std::vector<float>> base_lp;
  for (const char* columns : {static_cast<const char*>(nullptr), "1", "2", "3"}) {
    const ColumnsEnv env(columns);
    std::string skip;
    auto gpu = MakeCuda(QuantizedManpage(), CudaOptions(), &skip);
    REQUIRE_CUDA(gpu, skip);
    std::vector<std::vector<float>> lp;
    const auto out = RunTogether(*gpu, prompts, 24, 256, Greedy(), &lp);
    if (columns == nullptr) {
      base = out;
      base_lp = lp;
      continue;
    }
    ASSERT_EQ(out.size(), base.size());
    for (size_t i = 0; i < out.size(); ++i) {
      EXPECT_EQ(out[i], base[i]) << "FLUTE_ATTENTION_COLUMNS=" << columns << ", sequence " << i;
      EXPECT_TRUE(lp[i].size() == base_lp[i].size() &&
                  std::memcmp(lp[i].data(), base_lp[i].data(), lp[i].size() * sizeof(float)) == 0)
          << "FLUTE_ATTENTION_COLUMNS=" << columns << ", sequence " << i << ": logprob bits";
    }
  }
}

// The quantized man-page model on the CUDA engine launching through graphs (the default) and,
// where that one could be made, launching eagerly (cuda_graphs = false); `skip` says why not.
struct GraphsAndEager {
  std::unique_ptr<Backend> graphs, eager;
  std::string skip;
};

GraphsAndEager MakeGraphsAndEager() {
  GraphsAndEager b;
  b.graphs = MakeCuda(QuantizedManpage(), CudaOptions(), &b.skip);
  if (b.graphs) {
    BackendOptions eager_options = CudaOptions();
    eager_options.cuda_graphs = false;
    b.eager = MakeCuda(QuantizedManpage(), eager_options, &b.skip);
  }
  return b;
}

TEST(CudaBackend, GraphsGiveTheSameTokensAsEagerLaunches) {
  REQUIRE_SHARED_AND_GPU();
  auto [graphs, eager, skip] = MakeGraphsAndEager();
  REQUIRE_CUDA(graphs, skip);
  ASSERT_NE(eager, nullptr);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 5; ++i) prompts.push_back(ValidationTokens(20 + i, 300 * i));
  EXPECT_EQ(RunTogether(*graphs, prompts, 40, 512), RunTogether(*eager, prompts, 40, 512));
}

// Sampling runs inside the decode graphs, penalty columns and all. 32 prompts of 400 tokens
// hold more distinct penalty tokens than the backend's first penalty buffer (4096 entries), so
// the buffer grows and the graphs are captured again mid-run.
TEST(CudaBackend, PenalisedSeededDrawsAreTheSameInGraphsAndEagerLaunches) {
  REQUIRE_SHARED_AND_GPU();
  auto [graphs, eager, skip] = MakeGraphsAndEager();
  REQUIRE_CUDA(graphs, skip);
  ASSERT_NE(eager, nullptr);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 32; ++i) prompts.push_back(ValidationTokens(400, 400 * i));
  SamplingParams sampling;
  sampling.temperature = 0.8f;
  sampling.top_k = 40;
  sampling.top_p = 0.9f;
  sampling.repetition_penalty = 1.2f;
  sampling.frequency_penalty = 0.3f;
  sampling.presence_penalty = 0.2f;
  sampling.seed = 7;
  const auto with_graphs = RunTogether(*graphs, prompts, 16, 4096, sampling);
  EXPECT_EQ(with_graphs, RunTogether(*eager, prompts, 16, 4096, sampling));
  // The penalties act: without them the same seeds give other tokens somewhere.
  SamplingParams plain = sampling;
  plain.repetition_penalty = 1.0f;
  plain.frequency_penalty = 0.0f;
  plain.presence_penalty = 0.0f;
  EXPECT_NE(with_graphs, RunTogether(*graphs, prompts, 16, 4096, plain));
}

TEST(CudaBackend, SeededSamplingReproducesAndLogprobsMatchCpu) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = MakeCuda(ManpageDir(), CudaOptions(), &skip);
  REQUIRE_CUDA(gpu, skip);
  const std::vector<int32_t> prompt = ValidationTokens(50, 777);
  GenerationOptions g;
  g.max_new_tokens = 32;
  g.sampling.temperature = 0.9f;
  g.sampling.top_p = 0.95f;
  g.sampling.top_k = 50;
  g.sampling.repetition_penalty = 1.1f;
  g.sampling.seed = 42;
  auto a = GenerateSequence(*gpu, prompt, g, nullptr);
  auto b = GenerateSequence(*gpu, prompt, g, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  g.sampling.seed = 43;
  auto c = GenerateSequence(*gpu, prompt, g, nullptr);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->tokens, c->tokens);

  // Greedy with logprobs: the chosen token and its log-probability equal the CPU's.
  auto cpu = MakeCpu(ManpageDir());
  KvBlockAllocator kv_gpu(gpu->num_kv_blocks(), gpu->kv_block_size()), kv_cpu(cpu->num_kv_blocks(), cpu->kv_block_size());
  std::vector<int32_t> table_gpu, table_cpu;
  ASSERT_TRUE(kv_gpu.Reserve(&table_gpu, 50).ok() && kv_cpu.Reserve(&table_cpu, 50).ok());
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  greedy.num_logprobs = 5;
  Sampler s_gpu(greedy, prompt), s_cpu(greedy, prompt);
  BatchEntry e;
  e.tokens = prompt;
  e.block_table = &table_gpu;
  std::vector<SampledToken> t_gpu, t_cpu;
  ASSERT_TRUE(gpu->ForwardAndSample({e}, {{0, &s_gpu}}, &t_gpu).ok());
  e.block_table = &table_cpu;
  ASSERT_TRUE(cpu->ForwardAndSample({e}, {{0, &s_cpu}}, &t_cpu).ok());
  EXPECT_EQ(t_gpu[0].token, t_cpu[0].token);
  EXPECT_NEAR(t_gpu[0].logprob, t_cpu[0].logprob, 2e-2);
  ASSERT_EQ(t_gpu[0].top.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(t_gpu[0].top[i].logprob, t_cpu[0].top[i].logprob, 2e-2);
}

TEST(CudaBackend, ModelThatDoesNotFitIsAClearErrorAtLoad) {
  REQUIRE_SHARED_AND_GPU();
  BackendOptions o = CudaOptions();
  o.gpu_memory_fraction = 0.0001;  // ~8 MB of an 80 GB GPU: less than the weights
  auto backend = CreateBackend(ManpageDir(), o);
  if (absl::IsUnimplemented(backend.status()) || absl::IsFailedPrecondition(backend.status())) {
    GTEST_SKIP() << "CUDA backend unavailable: " << backend.status().message();
  }
  ASSERT_FALSE(backend.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(backend.status())) << backend.status();
  EXPECT_NE(backend.status().message().find("gpu-memory-fraction"), std::string::npos) << backend.status();
}

TEST(CudaBackend, BadBatchesAreRejected) {
  REQUIRE_SHARED_AND_GPU();
  std::string skip;
  auto gpu = MakeCuda(ManpageDir(), CudaOptions(), &skip);
  REQUIRE_CUDA(gpu, skip);
  std::vector<int32_t> table = {0};
  BatchEntry e;
  e.tokens = {5, 999999};
  e.block_table = &table;
  ForwardOutput out;
  const absl::Status status = gpu->Forward({e}, &out);
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_NE(status.message().find("999999"), std::string::npos);
}

}  // namespace
}  // namespace flute
