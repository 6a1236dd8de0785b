#!/usr/bin/env bash
# session 42 call 1: build 25aa717 (session 41's final, never run on the GPU) — all kernel GPU
# tests, sanitizer subsets (the strip kernel's one-row instances included), full LUT-GEMM tables
set -u
d=.dev; out=$OUT
tar -xJf $d/p42k.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p42k/lib
bin=$d/p42k/bin
hdr() { echo "# $1 (build $(cat $d/build-id)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests (all GPU kernels)"; timeout 330 $bin/kernel_tests 2>&1; echo "rc=$?"; } > $out/kernel-gpu-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|tests ran|FAILED" $out/kernel-gpu-tests.log | tail -6; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck, LutGemmGpuTest.SanitizerSubset + *SpreadSanitizerSubset* + *StreamKSanitizerSubset*"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 80 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.SanitizerSubset:*SpreadSanitizerSubset*:*StreamKSanitizerSubset*' 2>&1 | tail -4; done
} > $out/kernel-sanitizer.log 2>&1
grep -E "SUMMARY|PASSED|FAILED" $out/kernel-sanitizer.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for dt in fp16 bf16; do
  timeout 60 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > /dev/null 2>&1
  echo "$dt rc=$? t=$SECONDS"
done
echo "elapsed $SECONDS"
