#!/usr/bin/env bash
# The CUDA engine's checks on the GPU machine (issue 8), run from the repository root there:
#   bash scripts/gpu/cuda_engine_checks.sh STAGE...
#   STAGE: tests | new-tests | lut-tests | tc-tests | tc-bench | gemv-bench | tc-ab | attn | bench-ab | kbench-ab | ablate | strip-stages | env-sweep | ncu-e2e | kbench | sanitize | sanitize-new | ncu | sass | ppl | serve | bench | bench-w4 | bench70 | profile
# Expects, built and packed on the development machine (see scripts/gpu/README.md):
#   .dev/pack-e2e.tar.xz  flute, engine_tests, kernel_tests, libflute_{spm,cuda}.so + libraries
#   .dev/shared.tar.xz    the man-page model and validation tokens (a subset of ../shared)
# Logs go to $OUT (the device tool brings them back), each headed with the date and the card.
set -u
out=${OUT:?set OUT}
d=.dev
rm -rf $d/pack-e2e && tar -xJf $d/pack-e2e.tar.xz -C $d  # always the carried build
[ -d $d/shared ] || tar -xJf $d/shared.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/pack-e2e/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/pack-e2e/bin
model=$d/shared/models/manpage-llama-22m
tokens=$d/shared/data/manpage-val.u16
header() { echo "# $1 — $(date -u +%F) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }

for stage in "$@"; do
  case $stage in
    tests)
      { header "kernel_tests (all GPU kernels)"; timeout 240 $bin/kernel_tests 2>&1; echo "rc=$?"; } > $out/kernel-gpu-tests.log
      grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|tests ran" $out/kernel-gpu-tests.log | tail -25
      { header "engine_tests --gtest_filter=*Cuda*"; timeout 240 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log
      grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|normalized|ppl over|differ|tests ran" $out/engine-cuda-tests.log | tail -30 ;;
    attn)  # the attention kernels alone (after a change there)
      timeout 240 $bin/kernel_tests --gtest_filter='Attention*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED" | tail -8 ;;
    ppl)
      { header "flute ppl --device cuda, full manpage-val.u16"
        $bin/flute quantize --model $model --out $d/nf4 --bits 4 --group-size 128 --method nf --force > /dev/null 2>&1
        for m in $model $d/nf4; do for dt in bfloat16 float16; do
          echo "## $m --dtype $dt"; /usr/bin/time -f "%e s" $bin/flute ppl --model $m --tokens $tokens --device cuda --dtype $dt 2>&1 | grep -v "^windows" | tr '\r' '\n' | grep -v "^windows"
        done; done; } > $out/ppl-cuda.log 2>&1
      cat $out/ppl-cuda.log ;;
    serve)
      { header "flute serve --device cuda with Prometheus metrics"
        [ -d $d/nf4 ] || $bin/flute quantize --model $model --out $d/nf4 --bits 4 --group-size 128 --method nf --force > /dev/null 2>&1
        $bin/flute serve --model $d/nf4 --device cuda --port 50071 --metrics-port 9471 > $out/serve-cuda.stderr 2>&1 &
        pid=$!
        for i in $(seq 60); do $bin/flute health --addr localhost:50071 --service flute.v1.TextGeneration >/dev/null 2>&1 && break; sleep 1; done
        $bin/flute client --addr localhost:50071 --prompt "NAME" --max-new-tokens 32 2>&1 | tail -3
        $bin/flute bench serve --addr localhost:50071 --concurrency 1,8,32 --requests 64 --max-new-tokens 64 2>&1 | tail -8
        curl -s localhost:9471/metrics | grep -E "^flute_(gpu_memory_used_bytes|generation_tokens_total|build_info)" 
        kill -TERM $pid; wait $pid; echo "serve exit=$?"; tail -5 $out/serve-cuda.stderr; } > $out/serve-cuda.log 2>&1
      cat $out/serve-cuda.log ;;
    bench)
      timeout 560 $bin/flute bench e2e --shape 8b --weights w4,bf16 --compare-invariant \
        --json $out/e2e-8b.json --markdown $out/e2e-8b.md 2> $out/e2e-8b.log; echo "rc=$?"; cat $out/e2e-8b.log ;;
    bench-ab)  # A/B in one session: CUDA plugins of other builds, packed as
               # lib/<variant>/libflute_cuda.so (scripts/gpu/README.md), against this build
               # ("new"), in the order of $VARIANTS (default "base new"); 8B, batches 1 and 16
      for v in ${VARIANTS:-base new}; do
        [ $v = new ] && unset FLUTE_CUDA_PLUGIN || export FLUTE_CUDA_PLUGIN=$PWD/$d/pack-e2e/lib/$v/libflute_cuda.so
        timeout 120 $bin/flute bench e2e --shape 8b --weights ${AB_WEIGHTS:-w4,bf16} --batches ${AB_BATCHES:-1,16} --prefill 0 \
          --json $out/ab-$v.json 2> $out/ab-$v.log; echo "$v rc=$?"
        grep -E "bench e2e|decode batch" $out/ab-$v.log | sed "s/^/$v: /"
      done
      unset FLUTE_CUDA_PLUGIN ;;
    ablate)  # what each kernel kind costs inside graph replays: 8B W4 ($ABLATE_WEIGHTS) decode at batches 1 and 16
             # with that kind left out of every step (bench e2e --ablate; outputs meaningless)
      IFS=';' read -ra kinds <<< "${ABLATE_KINDS:-none;attention;lm head;qkv proj;o proj;gate_up+swiglu;down proj;add+rmsnorm}"
      for a in "${kinds[@]}"; do
        [ "$a" = none ] && flag="" || flag="$a"
        timeout 150 $bin/flute bench e2e --shape 8b --weights ${ABLATE_WEIGHTS:-w4} --batches ${ABLATE_BATCHES:-1,16} --prefill 0 --ablate "$flag" \
          2> $out/ablate.log > /dev/null; echo "rc=$?"
        grep -E "decode batch" $out/ablate.log | sed "s/^/ablate $a: /"
      done | tee $out/ablate-8b-${ABLATE_WEIGHTS:-w4}.txt; rm -f $out/ablate.log ;;
    strip-stages)  # 8B W4 decode with every strip-kernel call forced to one pipeline depth
                   # (FLUTE_LUT_STRIP=tpw,stages[@KxN]; "default" = the plan's choice), same session
      for cfg in ${STRIP_CFGS:-default 2,3 2,2}; do
        [ $cfg = default ] && unset FLUTE_LUT_STRIP || export FLUTE_LUT_STRIP=$cfg
        timeout 100 $bin/flute bench e2e --shape 8b --weights w4 --batches 1,4,8 --prefill 0 2> $out/ss.log > /dev/null
        echo "rc=$?"; grep -E "decode batch" $out/ss.log | sed "s/^/strip $cfg: /"
      done | tee $out/strip-stages.txt; unset FLUTE_LUT_STRIP; rm -f $out/ss.log ;;
    env-sweep)  # 8B W4 ($SWEEP_WEIGHTS) decode for each value of the environment variable $SWEEP_VAR (values in
                # $SWEEP_VALUES, "unset" = not set), same session: tuning knobs such as
                # FLUTE_DECODE_L2_PREFETCH_MB
      for v in ${SWEEP_VALUES:?}; do
        [ $v = unset ] && unset ${SWEEP_VAR:?} || export ${SWEEP_VAR:?}=$v
        timeout 150 $bin/flute bench e2e --shape 8b --weights ${SWEEP_WEIGHTS:-w4} --batches ${SWEEP_BATCHES:-1,4} --prefill 0 2> $out/ss.log > /dev/null
        echo "rc=$?"; grep -E "decode batch" $out/ss.log | sed "s/^/$SWEEP_VAR=$v: /"
      done | tee -a $out/env-sweep.txt; unset $SWEEP_VAR; rm -f $out/ss.log ;;
    bench-w4)  # 8B W4 and bf16 only, without the batch-invariant comparison
      timeout 400 $bin/flute bench e2e --shape 8b --weights w4,bf16 \
        --json $out/e2e-8b.json --markdown $out/e2e-8b.md 2> $out/e2e-8b.log; echo "rc=$?"; cat $out/e2e-8b.log ;;
    new-tests)  # the tests of this session's changes (kernel and engine)
      { header "kernel_tests (LUT-GEMM, llama ops, format, attention, RoPE + KV write)"
        timeout 300 $bin/kernel_tests --gtest_filter=${NEW_KERNEL_TESTS:-'LutGemm*:LlamaOps*:LutFormat*:Attention*:RopeKvWrite*'} 2>&1; echo "rc=$?"
        header "engine_tests --gtest_filter=*Cuda*"; timeout 240 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/new-tests.log
      grep -E "^\[  (PASSED|FAILED) |FAILED|rc=|normalized" $out/new-tests.log | tail -20 ;;
    lut-tests)
      { header "kernel_tests --gtest_filter=LutGemm*"; timeout 300 $bin/kernel_tests --gtest_filter='LutGemm*' 2>&1; echo "rc=$?"; } > $out/lut-gemm-tests.log
      grep -E "^\[  (PASSED|FAILED) |FAILED|rc=" $out/lut-gemm-tests.log | tail -8 ;;
    tc-tests)  # the tensor-core (wgmma) LUT-GEMM kernel's tests
      { header "kernel_tests --gtest_filter=LutGemmTcGpuTest.*"; timeout 200 $bin/kernel_tests --gtest_filter='LutGemmTcGpuTest.*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
      grep -E "^\[  (PASSED|FAILED) |FAILED|rc=|error" $out/tc-tests.log | tail -20 ;;
    tc-bench)  # the tensor-core kernel against the automatic choice and cuBLAS at M = 32..256
      timeout 300 $bin/flute-bench-kernel --m ${TC_M:-32,64,128,256} --configs ${TC_CONFIGS:-4g128} --dtypes fp16 \
        --kernels auto,tc --replays 5 --md $out/tc-bench.md --json $out/tc-bench.json 2> $out/tc-bench.log; echo "rc=$?"
      tail -3 $out/tc-bench.log ;;
    tc-ab)  # the tensor-core kernel's configurations (FLUTE_LUT_TC, kernels/lut_gemm_tc.cu), same session
      for cfg in ${TC_CFGS:-default old mt64}; do
        [ $cfg = default ] && unset FLUTE_LUT_TC || export FLUTE_LUT_TC=$cfg
        timeout 150 $bin/flute-bench-kernel --m ${TC_M:-64,128,256} --configs 4g128 --dtypes fp16 --kernels tc \
          --replays 5 --md $out/kb.md 2> /dev/null > /dev/null; echo "tc $cfg rc=$?"
        { echo "## FLUTE_LUT_TC=$cfg"; cat $out/kb.md; } >> $out/tc-ab.md; rm -f $out/kb.md
      done; unset FLUTE_LUT_TC ;;
    gemv-bench)  # the dense 16-bit GEMV (M <= 8) against cuBLAS on the same rotated weights
      timeout 300 $bin/flute-bench-kernel --dense-gemv --replays ${GEMV_REPLAYS:-7} ${GEMV_ARGS:-} --md $out/dense-gemv.md \
        --json $out/dense-gemv.json 2> $out/dense-gemv.log; echo "rc=$?"; cat $out/dense-gemv.md ;;
    kbench-ab)  # the strip kernel's decode shapes, this build's bench against the base build's
                # (packed as bin/flute-bench-kernel-base), alternately, same session
      for i in 1 2; do for b in base new; do
        [ $b = new ] && exe=$bin/flute-bench-kernel || exe=$bin/flute-bench-kernel-base
        timeout 100 $exe --m 1,4 --configs 4g128 --dtypes fp16 --kernels auto-pdl-early --replays 5 \
          --md $out/kb.md 2> /dev/null > /dev/null; echo "$b run $i rc=$?"
        { echo "## $b, run $i"; cat $out/kb.md; } >> $out/kbench-ab.md; rm -f $out/kb.md
      done; done ;;
    kbench)  # the kernel benchmark (issue 5): every shape, M, config and dtype; plain and PDL launches
             # (PDL with the first or all prologue weight stages before the wait)
      timeout 480 $bin/flute-bench-kernel --kernels auto,auto-pdl,auto-pdl-early --replays 9 \
        --md $out/lut-gemm.md --json $out/lut-gemm.json 2> $out/lut-gemm.log; echo "rc=$?"; tail -2 $out/lut-gemm.log ;;
    sanitize)
      { header "compute-sanitizer memcheck + racecheck, LutGemmGpuTest.SanitizerSubset"
        for tool in memcheck racecheck; do
          timeout 200 compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='*SanitizerSubset*' 2>&1 | tail -3
        done; } > $out/lut-gemm-sanitizer.log 2>&1
      cat $out/lut-gemm-sanitizer.log ;;
    sanitize-new)  # compute-sanitizer over this session's kernels: the dense GEMV (both kernels)
                   # and the decode attention's last-split merge
      { header "compute-sanitizer memcheck + racecheck, dense GEMV and attention merge subsets"
        for tool in memcheck racecheck; do
          timeout 240 compute-sanitizer --tool $tool $bin/kernel_tests \
            --gtest_filter=${SANITIZE_TESTS:-'DenseGemvGpuTest.*SanitizerSubset:AttentionGpuTest.LastSplitMerge*'} 2>&1 | grep -v 'normalized error' | tail -4
        done; } > $out/new-sanitizer.log 2>&1
      cat $out/new-sanitizer.log ;;
    ncu)  # Nsight Compute on one call of each kernel: the strip kernel at M = 1 on a mid-size
          # shape, and the split-K kernel at M = 16 (one report per case, full sections)
      IFS=';' read -ra cases <<< "${NCU_CASES:-14336x4096 1;4096x4096 1;4096x28672 16}"
      for c in "${cases[@]}"; do
        set -- $c
        f=$out/ncu-$1-m$2.txt
        { header "ncu, LUT-GEMM $1 (KxN) fp16 4g128 M=$2 (auto kernel choice)"
          timeout 150 ncu --clock-control none --kernel-name regex:LutGemm --launch-skip 3 --launch-count 1 \
            --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
            --section Occupancy --section SchedulerStats --section WarpStateStats --section LaunchStats \
            --metrics smsp__inst_executed.sum,dram__bytes_read.sum,sm__warps_active.avg.pct_of_peak_sustained_active ${NCU_EXTRA:-} \
            $bin/flute-bench-kernel --shapes $1 --m $2 --configs 4g128 --dtypes fp16 --kernels auto --replays 1 2>&1
        } > $f
        grep -E "LutGemm|Duration|DRAM Throughput|Issued Warp|Eligible Warps|Achieved Occupancy|Registers Per|inst_executed|Stall|One or More" $f | head -16
      done ;;
    ncu-e2e)  # Nsight Compute on the kernels of an 8B W4 batch-1 decode step (in the engine:
              # fused norms, PDL), one of each kind after the warm-up steps; isolated durations
      f=$out/ncu-e2e-b1.txt
      { header "ncu, 8B W4 decode batch 1 ctx 512 (flute bench e2e), one launch per kernel kind"
        timeout 400 ncu --clock-control none --kernel-name regex:"${NCU_KERNELS:-DecodeChunk|Combine|LutGemmStrip|AddRmsNorm}" \
          --launch-skip ${NCU_SKIP:-400} --launch-count ${NCU_COUNT:-8} \
          --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
          $bin/flute bench e2e --shape 8b --weights w4 --batches 1 --prefill 0 --steps 2 2>&1
      } > $f
      grep -E "^  [A-Za-z_].*\(|Duration|DRAM Throughput|Grid Size|Registers Per|Achieved Occupancy|Dynamic Shared" $f | head -80 ;;
    sass)  # SASS of the strip kernel (its object file travels in the pack when present)
      for o in $bin/*.o; do [ -f "$o" ] && cuobjdump -sass "$o" > $out/$(basename "$o" .o).sass; done; ls $out ;;
    bench70)
      timeout 560 $bin/flute bench e2e --shape 70b --weights w4 \
        --json $out/e2e-70b.json --markdown $out/e2e-70b.md 2> $out/e2e-70b.log; echo "rc=$?"; cat $out/e2e-70b.log ;;
    profile)  # where a decode step's time goes, by kernel kind (CUDA events, eager launches)
      timeout 300 $bin/flute bench e2e --shape 8b --weights w4,bf16 --batches 1,16 --prefill 0 --steps 10 --profile \
        > $out/profile-8b.md 2> $out/profile-8b.log; echo "rc=$?"; cat $out/profile-8b.log ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
