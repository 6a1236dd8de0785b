#!/usr/bin/env bash
# session 39 call 1: spread reduction with each block's own slice kept on chip — TC GPU tests,
# sanitizer subset; kbench new vs the 6eb52f1 binary (base), alternating, 3 rounds; new with
# FLUTE_LUT_TC_CLUSTER=off (spread instead of clusters) on the cluster shapes
set -u
tar -xJf .dev/p39a.tar.xz -C .dev; tar -xJf .dev/base39.tar.xz -C .dev
d=.dev/p39a/bin; cp .dev/base39/flute-bench-kernel-base $d/; export LD_LIBRARY_PATH=$PWD/.dev/p39a/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc*"; timeout 200 $d/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|spread reduction" $out/tc-tests.log | tail -12
{ hdr "compute-sanitizer memcheck + racecheck, *SpreadSanitizerSubset*"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 60 /usr/local/cuda/bin/compute-sanitizer --tool $tool $d/kernel_tests --gtest_filter='*SpreadSanitizerSubset*' 2>&1 | tail -4; done
} > $out/sanitizer.log 2>&1
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" $out/sanitizer.log
echo "t=$SECONDS"
kb() { local b=$1; shift; timeout 100 $d/$b --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel: own slice on chip (new) vs 6eb52f1 (base), alternating, 3 rounds"
  for r in 1 2 3; do
    echo "== new r$r"; kb flute-bench-kernel 4096x4096,14336x4096 33,48,64,65,96,128 4g128,3g128,2g128,4g64 fp16; kb flute-bench-kernel 4096x6144,8192x8192,28672x8192 33,48,64 4g128,3g128 fp16
    echo "== base r$r"; kb flute-bench-kernel-base 4096x4096,14336x4096 33,48,64,65,96,128 4g128,3g128,2g128,4g64 fp16; kb flute-bench-kernel-base 4096x6144,8192x8192,28672x8192 33,48,64 4g128,3g128 fp16
  done
  for r in 1 2; do
    echo "== newbf r$r"; kb flute-bench-kernel 4096x4096,4096x6144 64,128 4g128,3g128,4g64 bf16
    echo "== basebf r$r"; kb flute-bench-kernel-base 4096x4096,4096x6144 64,128 4g128,3g128,4g64 bf16
  done
} > $out/kbench-own-vs-base.txt 2>&1
echo "t=$SECONDS"
{ hdr "flute-bench-kernel: clusters (default) vs spread with own slice (FLUTE_LUT_TC_CLUSTER=off), new binary, 3 rounds"
  for r in 1 2 3; do
    echo "== cluster r$r"; kb flute-bench-kernel 4096x6144,8192x8192 65,96,112,128 4g128,3g128,2g128 fp16
    echo "== spread r$r"; FLUTE_LUT_TC_CLUSTER=off kb flute-bench-kernel 4096x6144,8192x8192 65,96,112,128 4g128,3g128,2g128 fp16
  done
} > $out/kbench-cluster-vs-spread.txt 2>&1
echo "elapsed $SECONDS"
