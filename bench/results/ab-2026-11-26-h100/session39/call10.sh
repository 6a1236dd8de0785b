#!/usr/bin/env bash
# session 39 call 10: SpreadReduce split into helpers (same protocol) — TC tests, sanitizer
# spread subset, timing against the cf341b4 binary, 2 rounds
set -u
tar -xJf .dev/p39g.tar.xz -C .dev; tar -xJf .dev/cf39.tar.xz -C .dev
d=.dev/p39g/bin; cp .dev/cf39/flute-bench-kernel-cf341b4 $d/; export LD_LIBRARY_PATH=$PWD/.dev/p39g/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc*"; timeout 200 $d/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|spread reduction" $out/tc-tests.log | tail -6
{ hdr "compute-sanitizer memcheck + racecheck, *SpreadSanitizerSubset*"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 60 /usr/local/cuda/bin/compute-sanitizer --tool $tool $d/kernel_tests --gtest_filter='*SpreadSanitizerSubset*' 2>&1 | tail -4; done
} > $out/sanitizer.log 2>&1
grep -E "SUMMARY|PASSED|FAILED" $out/sanitizer.log
kb() { local b=$1; shift; timeout 60 $d/$b --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel: helpers (new) vs cf341b4, 2 rounds"
  for r in 1 2; do
    echo "== new r$r"; kb flute-bench-kernel 4096x4096,14336x4096 65,96,128 4g128,3g128 fp16
    echo "== cf r$r"; kb flute-bench-kernel-cf341b4 4096x4096,14336x4096 65,96,128 4g128,3g128 fp16
  done
} > $out/kbench-helpers-vs-cf341b4.txt 2>&1
echo "elapsed $SECONDS"
