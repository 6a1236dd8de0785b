#!/usr/bin/env bash
# session 40 call 2: build 9a66a65 (tc kernel files split, machine code byte-identical to 572bf0b;
# tests deduplicated) — engine CUDA tests, all kernel GPU tests, sanitizer subsets,
# the 8B e2e table (W4 + bf16 + batch-invariant)
set -u
d=.dev; out=$OUT
[ -d $d/shared/models ] || echo "shared gone (machine not warm): engine parity tests will skip"
tar -xJf $d/p40a.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p40a/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/p40a/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 (build $(cat $d/build-id)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda*"; timeout 120 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|rc=" $out/engine-cuda-tests.log; echo "t=$SECONDS"
{ hdr "kernel_tests (all GPU kernels)"; timeout 330 $bin/kernel_tests 2>&1; echo "rc=$?"; } > $out/kernel-gpu-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|tests ran|FAILED" $out/kernel-gpu-tests.log | tail -8; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck, *SpreadSanitizerSubset* + *ClusterSanitizerSubset* + LutGemmGpuTest.SanitizerSubset"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 90 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='*SpreadSanitizerSubset*:*ClusterSanitizerSubset*:LutGemmGpuTest.SanitizerSubset' 2>&1 | tail -4; done
} > $out/kernel-sanitizer.log 2>&1
grep -E "SUMMARY|PASSED|FAILED" $out/kernel-sanitizer.log; echo "t=$SECONDS"
{ hdr "flute bench e2e --shape 8b --weights w4,dense --compare-invariant --prefill 512,2048"
  timeout 200 $bin/flute bench e2e --shape 8b --weights w4,dense --compare-invariant --prefill 512,2048 --json $out/e2e-8b.json --markdown $out/e2e-8b.md 2>&1 | tail -30; echo "rc=$?"; } > $out/e2e-8b.log 2>&1
tail -3 $out/e2e-8b.log; echo "t=$SECONDS"
echo "elapsed $SECONDS"
