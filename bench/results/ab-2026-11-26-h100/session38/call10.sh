#!/usr/bin/env bash
# session 38 call 10: the spread reduction at MT = 64 too — TC GPU tests; kbench MT = 128 spread (default) vs FLUTE_LUT_TC=mt64 (spread) vs mt64 SPREAD=off; M = 33-64 new vs fce2261
set -u
tar -xJf .dev/p38j.tar.xz -C .dev; d=.dev/p38j/bin; export LD_LIBRARY_PATH=$PWD/.dev/p38j/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc*"; timeout 220 $d/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|cluster splits|spread" $out/tc-tests.log | tail -15
echo "t=$SECONDS"
kb() { local b=$1; shift; timeout 100 $d/$b --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel: default (MT = 128, spread) vs FLUTE_LUT_TC=mt64 (spread at MT = 64) vs mt64 with FLUTE_LUT_TC_SPREAD=off, 3 rounds"
  for r in 1 2 3; do
    echo "== def r$r"; kb flute-bench-kernel 4096x4096,14336x4096 65,96,128 4g128,3g128,2g128,4g64 fp16
    echo "== mt64 r$r"; FLUTE_LUT_TC=mt64 kb flute-bench-kernel 4096x4096,14336x4096 65,96,128 4g128,3g128,2g128,4g64 fp16
    echo "== mt64last r$r"; FLUTE_LUT_TC=mt64 FLUTE_LUT_TC_SPREAD=off kb flute-bench-kernel 4096x4096,14336x4096 65,96,128 4g128,3g128,2g128,4g64 fp16
  done
} > $out/kbench-mt64-spread.txt 2>&1
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
{ hdr "flute-bench-kernel: M = 33-64, new default vs the fce2261 binary, 2 rounds"
  for r in 1 2; do
    echo "== new r$r"; kb flute-bench-kernel $S 33,48,64 4g128,3g128,4g64 fp16
    echo "== base r$r"; kb flute-bench-kernel-fce2261 $S 33,48,64 4g128,3g128,4g64 fp16
  done
} > $out/kbench-m33-64.txt 2>&1
echo "elapsed $SECONDS"
