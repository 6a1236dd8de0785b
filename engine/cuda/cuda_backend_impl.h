// Private to the CUDA backend (engine/cuda_*.cc): the backend class, shared by the file that
// builds it (cuda_backend.cc), the one that runs a step (cuda_forward.cc) and the one that
// samples (cuda_sampling.cc). Part of the plugin libflute_cuda.so only.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "engine/cuda_backend.h"
#include "engine/cuda/cuda_memory.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/step_profiler.h"
#include "kernels/attention.h"
#include "kernels/dense_gemm.h"
#include "kernels/dense_gemv.h"
#include "kernels/kernel_trace.h"
#include "kernels/sampling.h"

namespace flute {

// One forward pass's inputs, built on the host. Rows are tokens, in batch order.
struct StepPlan {
  std::vector<int32_t> tokens;       // [rows]
  std::vector<int32_t> positions;    // [rows]
  std::vector<int32_t> slots;        // [rows] flat KV slot, -1 = padding (not written)
  std::vector<int32_t> query_start;  // [seqs + 1]
  std::vector<int32_t> context_len;  // [seqs]
  std::vector<int32_t> block_tables; // [seqs, block_stride]
  std::vector<int32_t> logit_rows;   // rows whose logits are computed, in output order
  // The sampled rows' parameters, in logit-row order (empty: no sampling). Uploaded with the
  // inputs, in the same copy, so that the sampling kernel need not wait for a copy of its own
  // after the forward pass.
  std::vector<gpu::SamplingRow> sampling;
  int block_stride = 1;              // blocks per table row
  int max_query_len = 0;
  int max_context_len = 0;           // bound given to attention (a bucket in graphs)
  bool graph = false;                // a padded decode step that a CUDA graph replays
  int rows() const { return static_cast<int>(tokens.size()); }
  int seqs() const { return static_cast<int>(context_len.size()); }
};

// Device pointers into the step-input buffer (the same layout as the pinned staging copy).
struct StepInputs {
  int32_t* tokens;
  int32_t* positions;
  int32_t* slots;
  int32_t* query_start;
  int32_t* context_len;
  int32_t* logit_rows;
  int32_t* block_tables;  // last: only the used part is copied each step
};

// Rows sampled per kernel launch (its workspace is rows x vocab floats).
inline constexpr int kSampleChunk = 64;

class CudaBackend : public Backend, public CudaBenchHooks {
 public:
  CudaBackend(ModelConfig config, const BackendOptions& options, lut::ActivationType dtype,
              std::unique_ptr<GpuModel> model);
  ~CudaBackend() override;

  // Allocates activations, workspaces and, from what the memory fraction leaves, the KV cache.
  // budget_bytes: what the backend may allocate in all; free_before: free bytes before the
  // weights were uploaded (so that what was allocated since counts against the budget).
  absl::Status Init(int64_t budget_bytes, int64_t free_before, std::string gpu_name);

  // Backend
  const ModelConfig& config() const override { return config_; }
  std::string Describe() const override;
  int kv_block_size() const override { return options_.kv_block_size; }
  int num_kv_blocks() const override { return num_kv_blocks_; }
  absl::Status Forward(const std::vector<BatchEntry>& batch, ForwardOutput* out) override;
  absl::Status ForwardAndSample(const std::vector<BatchEntry>& batch,
                                const std::vector<SampleSlot>& slots,
                                std::vector<SampledToken>* tokens) override;
  int64_t device_memory_bytes() const override { return device_bytes_; }

  // CudaBenchHooks
  absl::Status FillKvCacheRandom(uint64_t seed) override;
  int64_t WeightBytesPerStep() const override { return model_->weight_bytes_per_step(); }
  int64_t KvBytesPerToken() const override;
  absl::Status Synchronize() override;
  absl::StatusOr<double> MeasureCopyBandwidth() override;
  std::string ProfileReport() const override { return profiler_ ? profiler_->Report() : ""; }
  void ResetProfile() override {
    if (profiler_) profiler_->Reset();
  }

 private:
  // cuda_backend.cc
  absl::Status AllocateActivations();
  absl::Status AllocateKvCache(int64_t budget_bytes);
  size_t LutWorkspaceBytes() const;  // after dequant_: the row counts the LUT kernel runs

  // cuda_forward.cc
  // The plan of one pass: pieces [ranges[i]) of batch[entries[i]]. Logit rows: every row of
  // all_logits entries, else the last row of each entry whose last piece is in the pass and
  // that wants_logits. A decode-only pass may become a padded graph step (allow_graph).
  StepPlan PlanPass(const std::vector<BatchEntry>& batch, const std::vector<int>& entries,
                    const std::vector<std::pair<int, int>>& ranges,
                    const std::vector<bool>& wants_logits, bool allow_graph) const;
  absl::Status RunStep(StepPlan& plan);        // uploads inputs, runs (graph or eager)
  absl::Status LaunchForward(const StepPlan& plan);  // the kernels of one pass
  absl::Status Project(const GpuProjection& p, const void* x, int m, void* y, bool y_fp32);
  absl::Status MatMul(const GpuMatrix& w, const void* x, int m, void* y, bool y_fp32);
  // Whether a LUT product of m rows runs on the LUT-GEMM kernels (else, in the fastest mode
  // above lut_kernel_max_rows_: dequantize once, then a tensor-core GEMM).
  bool UsesLutKernel(int m) const { return !dequant_.bytes() || m <= lut_kernel_max_rows_; }
  // The LUT-GEMM call for w (workspace, batch-invariant split, PDL) without launching it.
  lut::LutGemmParams LutParams(const GpuMatrix& w, const void* x, int m, void* y) const;
  // A dense GEMV call of the decode path (PDL, dynamic strips, the step's carveout choice).
  gpu::DenseGemvParams DenseParams(const GpuMatrix& w, const void* x, int m, void* y) const;
  // Whether the dense GEMV's epilogues (SwiGLU, residual, deferred norm: the cluster kernel)
  // run the 16-bit products of an m-row pass.
  bool DenseEpiloguesApply(int m) const;
  // out[m, inter] = silu(x gateᵀ) * (x upᵀ): fused into the LUT-GEMM or the dense GEMV when it
  // can, else the projection into gate_up_ and gpu::LaunchSwiGlu in the projection's layout.
  // norm_weight != nullptr: x is not used; the kernel normalizes residual_ itself (the norm
  // prologue, only where PlanNormFusion allows it).
  // deferred_norm: x is normed_ written as a prenorm_out, and the kernel applies the rows'
  // 1 / rms from norm_sumsq_ (lut::LutGemmParams::deferred_sumsq).
  absl::Status GateUpSwiGlu(const GpuProjection& p, const void* x, int m, void* out,
                            const DeviceBuffer* norm_weight = nullptr, bool deferred_norm = false);
  // Residual add + RMSNorm fused into the LUT projections around them (lut::LutGemmParams).
  // Strip kernel (decode steps of a few rows), for each of a layer's two norms where both
  // projections run on it: the residual epilogue of the projection before, the norm prologue of
  // the one after. Tensor-core kernel (the other decode steps, bf16 models, all projections
  // single LUT parts): the projection before also writes the norm's input times its weight
  // (prenorm_out, into normed_), and the one after applies 1 / rms to its sums (the deferred
  // norm). The same deferred norm runs bf16 16-bit models in passes of 9-16 rows, on the dense
  // GEMV's epilogues (DenseEpiloguesApply). Either saves two launches and the normed_/proj_
  // round trips per layer.
  struct NormFusion {
    bool after_attention = false;  // strip: o proj -> gate/up
    bool after_mlp = false;        // strip: down proj -> the next layer's qkv (and the final norm)
    bool deferred = false;         // tensor-core / dense GEMV: both norms of every layer (not the final norm)
  };
  NormFusion PlanNormFusion(int m) const;
  // Whether the deferred norm can run every layer (bf16; single-part LUT projections from 5 rows,
  // or single 16-bit matrices where DenseEpiloguesApply; gate/up interleaved for the SwiGLU
  // epilogue; FLUTE_DEFERRED_NORM=0 turns it off for A/B runs).
  bool DeferredNormApplies(int m) const;
  // y = RMSNorm(residual_) · pᵀ (norm prologue) and residual_ += x · pᵀ (residual epilogue),
  // for a single-part LUT projection where PlanNormFusion allows it.
  absl::Status ProjectNormed(const GpuProjection& p, const DeviceBuffer& norm_weight, int m, void* y);
  // y = (normed_ · pᵀ) times each row's 1 / rms (the deferred norm).
  absl::Status ProjectDeferredNorm(const GpuProjection& p, int m, void* y);
  // coresident_smem: lut::LutGemmParams::coresident_smem (the kernel before keeps that much).
  // prenorm_weight: also normed_ = prenorm_weight * the new residual (the deferred norm's input).
  absl::Status ProjectIntoResidual(const GpuProjection& p, const void* x, int m, int coresident_smem = 0,
                                   const DeviceBuffer* prenorm_weight = nullptr);
  // bench e2e --ablate: whether kernels of this kind are left out of every step.
  bool Ablated(const char* kind) const;
  // Adds the residual epilogue / the norm prologue (with norm_weight) to a LUT-GEMM call.
  void AddResidualEpilogue(lut::LutGemmParams* params) const;
  void AddNormPrologue(const DeviceBuffer& norm_weight, lut::LutGemmParams* params) const;
  absl::Status LaunchLmHead(const void* x, int rows);  // x: the [rows, hidden] normed rows
  // At load: the decode graph of every padded batch size up to max_batch and every context
  // bucket, from steps of padding rows (cuda_forward.cc).
  absl::Status CaptureDecodeGraphs();
  void PadForGraph(StepPlan& plan) const;
  absl::Status UploadInputs(const StepPlan& plan);

  // cuda_sampling.cc
  // Fills plan->sampling from the slots' samplers (one row each, in logit-row order; this
  // draws the temperature rows' random bits; a graph step's padding rows are greedy) and
  // uploads their penalty tokens; validates.
  absl::Status PrepareSampling(const std::vector<SampleSlot>& slots, StepPlan* plan);
  // The sampling kernels over the plan's logit rows (the end of LaunchForward: inside the
  // decode graphs, so that they start as the LM head ends).
  absl::Status LaunchSampling(const StepPlan& plan);
  // After RunStep(plan): waits for the first `rows` rows' tokens and returns them.
  absl::Status CollectSamples(const StepPlan& plan, int rows, std::vector<SampledToken>* tokens);
  // Destroys the decode graphs (they hold buffer addresses that are about to change); each is
  // captured again at its next step.
  void DestroyGraphs();

  ModelConfig config_;
  BackendOptions options_;
  lut::ActivationType dtype_;
  std::unique_ptr<GpuModel> model_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<gpu::DenseGemm> dense_gemm_;
  // Dense products of up to this many rows run on kernels/dense_gemv.h (17-32 rows: its wgmma
  // kernel, with the fused SwiGLU and norm epilogues), larger ones on cuBLAS.
  // FLUTE_DENSE_GEMV_MAX_ROWS (1..32) lowers it, for A/B runs (16: cuBLAS from 17 rows, as
  // before the wgmma kernel; the cluster kernel at 17-32 rows was 0.69-0.91x cuBLAS on the 8B
  // shapes, bench/results/dense-gemv-m32-2026-11-26-h100.md).
  int dense_gemv_max_rows_ = 32;
  // The most rows a LUT product runs on the LUT-GEMM kernels in the fastest mode (above it:
  // dequantize the whole matrix, then cuBLAS). H100, 8B W4 prefill of one prompt (session 32,
  // bench/results/ab-2026-11-26-h100/session32/): 256 tokens 16.3 ms dequantized vs 11.8 on the
  // LUT kernel, 512 20.4 vs 19.6, 1024 34.2 vs 39.5. The default chunk (512 tokens per step)
  // thus never dequantizes, and the dequantized-weight buffer (2 bytes per weight of the largest
  // LUT matrix: 235 MB on 8B, 940 MB on 70B) is only allocated for larger steps.
  // FLUTE_LUT_KERNEL_MAX_ROWS overrides it (tests, A/B runs).
  int lut_kernel_max_rows_ = 512;
  // Whether dense (16-bit) products of at most dense_gemv_max_rows_ rows run on
  // kernels/dense_gemv.h rather than cuBLAS: not in the batch-invariant mode (its dense
  // products always run cuBLAS at 32 rows); FLUTE_DENSE_GEMV=off turns it off, for A/B runs.
  bool dense_gemv_ = false;
  // gpu::DenseGemvParams::variant of the dense products: FLUTE_DENSE_GEMV_VARIANT, for A/B runs
  // (8B bf16, H100, session 27: 0, the wgmma kernel at every batch: batch 16 6.00-6.05 ms per
  // step, batch 1 5.46-5.49; 1, the strip kernel at <= 8 rows and the cluster kernel above:
  // 6.28-6.33 and 5.54-5.58).
  int dense_gemv_variant_ = 0;
  // gpu::DenseGemvParams::cluster of those products: FLUTE_DENSE_GEMV_CLUSTER, for A/B runs
  // (0: the launcher's choice).
  int dense_gemv_cluster_ = 0;
  // Whether passes of 9-16 rows run the dense GEMV's epilogues (DenseEpiloguesApply);
  // FLUTE_DENSE_GEMV_EPILOGUES=off: the separate SwiGLU and norm kernels, for A/B runs.
  bool dense_epilogues_ = true;
  // gpu::DenseGemvParams::prefer_l1 of the dense GEMVs of the step being launched: set by
  // LaunchForward where the step's decode attention runs its columns kernel.
  bool gemv_prefer_l1_ = false;
  // gpu::DenseGemvParams::strip_counter of every dense GEMV call (all on stream_, in order):
  // strips past each block's first two go to blocks as they free up. 8B W4 decode, H100: the
  // LM head's blocks ended 315-370 us after its release with fixed shares (the second block
  // on each SM is served less). FLUTE_DENSE_GEMV_STRIPS=static: fixed shares (A/B runs).
  DeviceBuffer gemv_strip_counter_;
  int max_rows_ = 0;         // tokens per pass at most
  int max_context_ = 0;      // positions per sequence at most
  int num_kv_blocks_ = 0;    // blocks the allocator hands out; one more is the padding block
  int64_t device_bytes_ = 0;
  int64_t initial_free_ = 0;
  std::string gpu_name_;

  // Activations, [max_rows_, ...] each.
  DeviceBuffer residual_;   // fp32 [rows, hidden]
  DeviceBuffer norm_sumsq_; // fp32 [rows, hidden / 16]: the residual epilogue's sums of squares
  DeviceBuffer normed_;     // act [rows, hidden]
  DeviceBuffer qkv_;        // act [rows, q_dim + 2 kv_dim]
  DeviceBuffer attn_;       // act [rows, q_dim]
  DeviceBuffer proj_;       // act [rows, hidden]
  DeviceBuffer gate_up_;    // act [rows, 2 inter]
  DeviceBuffer mlp_;        // act [rows, inter]
  DeviceBuffer part_;       // act [rows, largest unfused part]
  DeviceBuffer head_in_;    // act [rows, hidden]: the rows that need logits
  DeviceBuffer head_act_;   // act [rows, vocab] when the LM head is LUT (widened to logits_)
  DeviceBuffer logits_;     // fp32 [rows, vocab]
  DeviceBuffer dequant_;    // act [n, k] of the largest LUT matrix (large-M path), or empty
  DeviceBuffer lut_ws_, attn_ws_, cublas_ws_, sample_ws_;
  DeviceBuffer inv_freq_;   // fp32 [head_dim / 2]
  DeviceBuffer kv_storage_;
  std::vector<gpu::PagedKvLayer> kv_layers_;

  // Step inputs: pinned staging and its device twin, same layout; after the used part of the
  // block tables, the sampling rows (StepPlan::sampling) at sample_params_ (set by
  // UploadInputs).
  CudaBuffer staging_;        // pinned host memory
  // Whether an upload from staging_ may still be in flight (set by UploadInputs, cleared by
  // Synchronize): the next upload then synchronizes before it overwrites staging_. Steps end
  // synchronized; the graph captures at load run steps back to back.
  bool staging_in_flight_ = false;
  DeviceBuffer step_buffer_;
  StepInputs step_;          // device pointers
  size_t block_tables_offset_ = 0;
  const gpu::SamplingRow* sample_params_ = nullptr;

  // Sampling outputs, written by the kernel straight into pinned host memory (mapped: no
  // copy after the kernel).
  CudaBuffer sample_results_;  // pinned: SampleResult[max_rows_]
  gpu::SampleResult* sample_results_dev_ = nullptr;  // its device address
  // The step's penalty columns [ids | prompt counts | generated counts], each
  // penalty_capacity_ entries long, so that their addresses (in the decode graphs) stay put
  // until the capacity must grow.
  DeviceBuffer penalty_buffer_;
  size_t penalty_capacity_ = 0;
  std::vector<int32_t> penalty_host_;  // [3, entries] of the step

  std::unique_ptr<StepProfiler> profiler_;  // BackendOptions::profile
  // FLUTE_KERNEL_TRACE_OUT=FILE with kernels built for tracing (kernels/kernel_trace.h): the
  // per-block timestamps of each sampled step, the last one left in FILE as CSV.
  DeviceBuffer trace_;
  std::string trace_out_;
  absl::Status WriteTrace() const;

  // Decode graphs by (padded batch, context bucket).
  std::map<std::pair<int, int>, cudaGraphExec_t> graphs_;
};

}  // namespace flute
