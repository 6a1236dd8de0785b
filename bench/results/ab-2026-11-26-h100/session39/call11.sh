#!/usr/bin/env bash
# session 39 call 11: the spread reduction at MT = 16 and 32 too (row-group slices, up to 8 float4
# loads a thread per round trip) — TC tests; kbench spread vs FLUTE_LUT_TC_SPREAD=off, 3 rounds
set -u
tar -xJf .dev/p39h.tar.xz -C .dev
d=.dev/p39h/bin; export LD_LIBRARY_PATH=$PWD/.dev/p39h/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests LutGemmTc*"; timeout 200 $d/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|spread reduction" $out/tc-tests.log | tail -6
kb() { timeout 60 $d/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
{ hdr "flute-bench-kernel: spread at MT = 16 / 32 (new) vs FLUTE_LUT_TC_SPREAD=off (off), 3 rounds"
  for r in 1 2 3; do
    echo "== new r$r"; kb $S 8,16,24,32 4g128,3g128,2g128 fp16
    echo "== off r$r"; FLUTE_LUT_TC_SPREAD=off kb $S 8,16,24,32 4g128,3g128,2g128 fp16
  done
} > $out/kbench-spread-mt16-32.txt 2>&1
echo "elapsed $SECONDS"
