#!/usr/bin/env bash
# session 39 call 7: final build cf341b4 — engine CUDA tests, all kernel GPU tests, sanitizer
# subsets, full LUT-GEMM tables, DeepFirst A/B (final rule) against FLUTE_LUT_STRIP_DEEP=off
set -u
d=.dev; out=$OUT
[ -d $d/shared/models ] || echo "shared gone (machine not warm): engine parity tests will skip"
tar -xJf $d/p39f.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p39f/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/p39f/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 (build $(cat $d/build-id)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda*"; timeout 120 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|rc=" $out/engine-cuda-tests.log; echo "t=$SECONDS"
{ hdr "kernel_tests (all GPU kernels)"; timeout 330 $bin/kernel_tests 2>&1; echo "rc=$?"; } > $out/kernel-gpu-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|tests ran|FAILED|spread reduction|cluster splits" $out/kernel-gpu-tests.log | tail -8; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for dt in fp16 bf16; do
  timeout 60 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > /dev/null 2>&1
  echo "$dt rc=$? t=$SECONDS"
done
{ hdr "compute-sanitizer memcheck + racecheck, *SpreadSanitizerSubset* + *ClusterSanitizerSubset* + LutGemmGpuTest.SanitizerSubset"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 90 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='*SpreadSanitizerSubset*:*ClusterSanitizerSubset*:LutGemmGpuTest.SanitizerSubset' 2>&1 | tail -4; done
} > $out/kernel-sanitizer.log 2>&1
grep -E "SUMMARY|PASSED|FAILED" $out/kernel-sanitizer.log; echo "t=$SECONDS"
kb() { timeout 60 $bin/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel: DeepFirst final rule (new) vs FLUTE_LUT_STRIP_DEEP=off (off), M = 3-4, 3 rounds"
  for r in 1 2 3; do
    echo "== new r$r"; kb $S 3,4 4g128,4g64 fp16
    echo "== off r$r"; FLUTE_LUT_STRIP_DEEP=off kb $S 3,4 4g128,4g64 fp16
  done
} > $out/kbench-deep-final-vs-off.txt 2>&1
echo "elapsed $SECONDS"
