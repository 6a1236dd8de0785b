#!/usr/bin/env bash
# session 38 call 8: Stream-K with the spread reduction — TC GPU tests; kbench default vs FLUTE_LUT_TC_SPREAD=off vs FLUTE_LUT_TC_CLUSTER=off, 3 rounds
set -u
tar -xJf .dev/p38h.tar.xz -C .dev; d=.dev/p38h/bin; export LD_LIBRARY_PATH=$PWD/.dev/p38h/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc*"; timeout 220 $d/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|cluster splits|spread" $out/tc-tests.log | tail -15
echo "t=$SECONDS"
kb() { timeout 100 $d/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,4096x28672,8192x10240,8192x57344,28672x8192,8192x8192
{ hdr "flute-bench-kernel: default vs FLUTE_LUT_TC_SPREAD=off vs FLUTE_LUT_TC_CLUSTER=off, alternating, 3 rounds"
  for r in 1 2 3; do
    echo "== def r$r"; kb $S 65,96,128 4g128,3g128 fp16
    echo "== nospread r$r"; FLUTE_LUT_TC_SPREAD=off kb $S 65,96,128 4g128,3g128 fp16
    echo "== nocluster r$r"; FLUTE_LUT_TC_CLUSTER=off kb $S 65,96,128 4g128,3g128 fp16
  done
} > $out/kbench-streamk-spread.txt 2>&1
tail -2 $out/kbench-streamk-spread.txt
echo "elapsed $SECONDS"
