#!/usr/bin/env bash
# session 37 call 8: engine CUDA tests, all kernel GPU tests, sanitizer on the cluster split-K test, full kernel tables
set -u
d=.dev; out=$OUT
[ -d $d/shared/models ] || echo "shared gone (machine not warm): engine parity tests will skip"
tar -xJf $d/p37h.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p37h/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/p37h/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests (all GPU kernels)"; timeout 200 $bin/kernel_tests 2>&1; echo "rc=$?"; } > $out/kernel-gpu-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|^\[  FAILED|tests ran" $out/kernel-gpu-tests.log | tail -8; echo "t=$SECONDS"
{ for tool in memcheck racecheck; do
    hdr "compute-sanitizer --tool $tool kernel_tests --gtest_filter=LutGemmTcGpuTest.ClusterSplits*"
    timeout 150 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmTcGpuTest.ClusterSplits*' 2>&1 | grep -E "^\[  (PASSED|FAILED) |ERROR SUMMARY|RACECHECK SUMMARY|Hazard|rror" | tail -6
    echo "rc=${PIPESTATUS[0]} t=$SECONDS"; done; } > $out/kernel-sanitizer.log 2>&1
cat $out/kernel-sanitizer.log
{ hdr "engine_tests --gtest_filter=*Cuda*"; timeout 240 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|rc=" $out/engine-cuda-tests.log; echo "t=$SECONDS"
for dt in fp16 bf16; do
  left=$((570 - SECONDS)); [ $left -lt 60 ] && { echo "table $dt: not run (time)"; continue; }
  timeout $left $bin/flute-bench-kernel --kernels auto-pdl --replays 9 --dtypes $dt --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > $out/lut-gemm-$dt.log 2>&1
  echo "table $dt rc=$? t=$SECONDS"
done
echo "elapsed $SECONDS"
