#!/usr/bin/env bash
# session 38 call 12: final build — engine CUDA tests, all kernel GPU tests, sanitizer subsets, full LUT-GEMM tables
set -u
d=.dev; out=$OUT
[ -d $d/shared/models ] || echo "shared gone (machine not warm): engine parity tests will skip"
tar -xJf $d/p38k.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p38k/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/p38k/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 (build $(cat $d/build-id)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda*"; timeout 120 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|rc=" $out/engine-cuda-tests.log; echo "t=$SECONDS"
{ hdr "kernel_tests (all GPU kernels)"; timeout 320 $bin/kernel_tests 2>&1; echo "rc=$?"; } > $out/kernel-gpu-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|tests ran|FAILED|spread reduction|cluster splits" $out/kernel-gpu-tests.log | tail -8; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for dt in fp16 bf16; do
  timeout 60 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > $out/lut-gemm-$dt.log 2>&1
  echo "$dt rc=$? t=$SECONDS"
done
{ hdr "compute-sanitizer memcheck + racecheck, *SpreadSanitizerSubset* + *ClusterSanitizerSubset*"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 60 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='*SpreadSanitizerSubset*:*ClusterSanitizerSubset*' 2>&1 | tail -4; done
} > $out/kernel-sanitizer.log 2>&1
cat $out/kernel-sanitizer.log
echo "elapsed $SECONDS"
kb() { timeout 100 $bin/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel: spread (default) vs FLUTE_LUT_TC_SPREAD=off at M = 33-64, 4 rounds"
  for r in 1 2 3 4; do
    echo "== spread r$r"; kb 28672x8192,4096x6144,4096x4096,8192x8192 33,48,64 3g128,4g128 fp16
    echo "== off r$r"; FLUTE_LUT_TC_SPREAD=off kb 28672x8192,4096x6144,4096x4096,8192x8192 33,48,64 3g128,4g128 fp16
  done
} > $out/kbench-m33-64-spread-vs-off.txt 2>&1
echo "elapsed $SECONDS"
