#!/usr/bin/env bash
# session 38 call 2: spread reduction, 4 splits per L2 round trip — TC GPU tests; focused kbench spread vs FLUTE_LUT_TC_SPREAD=off vs HEAD binary (3 rounds)
set -u
tar -xJf .dev/p38b.tar.xz -C .dev; d=.dev/p38b/bin; export LD_LIBRARY_PATH=$PWD/.dev/p38b/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc*"; timeout 220 $d/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|cluster splits|spread reduction" $out/tc-tests.log | tail -15
echo "t=$SECONDS"
kb() { local b=$1; shift; timeout 100 $d/$b --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x4096,14336x4096,4096x6144
{ hdr "flute-bench-kernel: spread (default) vs FLUTE_LUT_TC_SPREAD=off vs HEAD 5cfd0d5 binary, alternating, 3 rounds"
  for r in 1 2 3; do
    echo "== spread r$r"; kb flute-bench-kernel $S 65,96,128 4g128,3g128,2g128,4g64 fp16
    echo "== off r$r"; FLUTE_LUT_TC_SPREAD=off kb flute-bench-kernel $S 65,96,128 4g128,3g128,2g128,4g64 fp16
    echo "== base r$r"; kb flute-bench-kernel-base $S 65,96,128 4g128,3g128,2g128,4g64 fp16
  done
  echo "== spread bf16"; kb flute-bench-kernel 4096x4096,14336x4096 65,96,128 4g128,3g128,2g128,4g64 bf16
  echo "== off bf16"; FLUTE_LUT_TC_SPREAD=off kb flute-bench-kernel 4096x4096,14336x4096 65,96,128 4g128,3g128,2g128,4g64 bf16
} > $out/kbench-spread.txt 2>&1
tail -3 $out/kbench-spread.txt
echo "elapsed $SECONDS"
