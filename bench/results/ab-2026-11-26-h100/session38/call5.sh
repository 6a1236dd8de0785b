#!/usr/bin/env bash
# session 38 call 5: spread v2 (no claim atomic on the fast path, "done" add overlapped) — TC GPU tests; kbench v2 vs v1 (700dd23) vs FLUTE_LUT_TC_SPREAD=off, 3 rounds
set -u
tar -xJf .dev/p38e.tar.xz -C .dev; d=.dev/p38e/bin; export LD_LIBRARY_PATH=$PWD/.dev/p38e/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc*"; timeout 220 $d/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|cluster splits|spread reduction" $out/tc-tests.log | tail -15
echo "t=$SECONDS"
kb() { local b=$1; shift; timeout 100 $d/$b --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x4096,14336x4096
{ hdr "flute-bench-kernel: spread v2 vs v1 (700dd23 binary) vs FLUTE_LUT_TC_SPREAD=off (last block), alternating, 3 rounds"
  for r in 1 2 3; do
    echo "== v2 r$r"; kb flute-bench-kernel $S 65,96,128 4g128,3g128,2g128,4g64 fp16
    echo "== v1 r$r"; kb flute-bench-kernel-v1 $S 65,96,128 4g128,3g128,2g128,4g64 fp16
    echo "== last r$r"; FLUTE_LUT_TC_SPREAD=off kb flute-bench-kernel $S 65,96,128 4g128,3g128,2g128,4g64 fp16
  done
  for r in 1 2; do
    echo "== v2bf r$r"; kb flute-bench-kernel $S 65,96,128 4g128,3g128,2g128,4g64 bf16
    echo "== v1bf r$r"; kb flute-bench-kernel-v1 $S 65,96,128 4g128,3g128,2g128,4g64 bf16
  done
} > $out/kbench-spread-v2.txt 2>&1
tail -3 $out/kbench-spread-v2.txt
echo "elapsed $SECONDS"
