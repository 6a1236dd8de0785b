#!/usr/bin/env bash
# session 39 call 13: final build a169aa3 (the spread at MT = 32 too) — engine CUDA tests, all kernel GPU tests, sanitizer
# subsets (the spread subset now with 32-row tiles), full LUT-GEMM tables, the MT = 32 spread against
# FLUTE_LUT_TC_SPREAD=off
set -u
d=.dev; out=$OUT
[ -d $d/shared/models ] || echo "shared gone (machine not warm): engine parity tests will skip"
tar -xJf $d/p39i.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p39i/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/p39i/bin
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
{ hdr "flute-bench-kernel: spread at MT = 32 where splits are short (new) vs FLUTE_LUT_TC_SPREAD=off (off), M = 17-32, 3 rounds"
  for r in 1 2 3; do
    echo "== new r$r"; kb $S 17,24,32 4g128,3g128,2g128,4g64 fp16
    echo "== off r$r"; FLUTE_LUT_TC_SPREAD=off kb $S 17,24,32 4g128,3g128,2g128,4g64 fp16
  done
} > $out/kbench-spread-mt32-vs-off.txt 2>&1
echo "elapsed $SECONDS"
