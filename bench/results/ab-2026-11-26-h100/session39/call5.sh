#!/usr/bin/env bash
# session 39 call 5: DeepFirst (4-bit plain strip calls of 3-4 rows, X staged: 3-4 stages before 2)
# — strip tests; kbench default vs FLUTE_LUT_STRIP_DEEP=off, same binary, alternating, 3 rounds
set -u
tar -xJf .dev/p39e.tar.xz -C .dev
d=.dev/p39e/bin; export LD_LIBRARY_PATH=$PWD/.dev/p39e/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests LutGemmGpuTest.Strip*"; timeout 200 $d/kernel_tests --gtest_filter='LutGemmGpuTest.Strip*' 2>&1; echo "rc=$?"; } > $out/strip-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED" $out/strip-tests.log | tail -8
echo "t=$SECONDS"
kb() { timeout 60 $d/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
{ hdr "flute-bench-kernel: DeepFirst (new) vs FLUTE_LUT_STRIP_DEEP=off (off), 3 rounds fp16, 2 rounds bf16"
  for r in 1 2 3; do
    echo "== new r$r"; kb $S 1,2,3,4 4g128,4g64 fp16
    echo "== off r$r"; FLUTE_LUT_STRIP_DEEP=off kb $S 1,2,3,4 4g128,4g64 fp16
  done
  for r in 1 2; do
    echo "== newbf r$r"; kb $S 3,4 4g128,4g64 bf16
    echo "== offbf r$r"; FLUTE_LUT_STRIP_DEEP=off kb $S 3,4 4g128,4g64 bf16
  done
} > $out/kbench-deep-vs-off.txt 2>&1
echo "elapsed $SECONDS"
