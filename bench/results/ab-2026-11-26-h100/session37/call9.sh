#!/usr/bin/env bash
# session 37 call 9: every kernel GPU test (final build), compute-sanitizer memcheck + racecheck on the cluster subset
set -u
d=.dev; out=$OUT
tar -xJf $d/p37i.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p37i/lib
bin=$d/p37i/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ for tool in memcheck racecheck; do
    hdr "compute-sanitizer --tool $tool kernel_tests --gtest_filter=LutGemmTcGpuTest.ClusterSanitizerSubset"
    timeout 100 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmTcGpuTest.ClusterSanitizerSubset' 2>&1 | grep -E "^\[  (PASSED|FAILED) |ERROR SUMMARY|RACECHECK SUMMARY|Hazard|rror" | tail -6
    echo "rc=${PIPESTATUS[0]} t=$SECONDS"; done; } > $out/kernel-sanitizer.log 2>&1
cat $out/kernel-sanitizer.log
{ hdr "kernel_tests (all GPU kernels)"; timeout $((590 - SECONDS)) $bin/kernel_tests 2>&1; echo "rc=$?"; } > $out/kernel-gpu-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|^\[  FAILED|tests ran" $out/kernel-gpu-tests.log | tail -8
echo "elapsed $SECONDS"
