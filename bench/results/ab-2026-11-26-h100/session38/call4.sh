#!/usr/bin/env bash
# session 38 call 4: pairs (clusters of 2 + spread over the pairs' sums) — TC GPU tests; kbench pairs vs classic spread vs neither (3 rounds); bf16 3-bit M=8 recheck vs HEAD 5cfd0d5
set -u
tar -xJf .dev/p38d.tar.xz -C .dev; d=.dev/p38d/bin; export LD_LIBRARY_PATH=$PWD/.dev/p38d/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc*"; timeout 220 $d/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|cluster splits|spread reduction|pair clusters" $out/tc-tests.log | tail -15
echo "t=$SECONDS"
kb() { local b=$1; shift; timeout 100 $d/$b --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x4096,14336x4096,4096x6144
{ hdr "flute-bench-kernel: pairs (default) vs FLUTE_LUT_TC_CLUSTER=off (classic spread) vs CLUSTER=off SPREAD=off (last block), alternating, 3 rounds"
  for r in 1 2 3; do
    echo "== pairs r$r"; kb flute-bench-kernel $S 65,96,128 4g128,3g128,2g128,4g64 fp16
    echo "== spread r$r"; FLUTE_LUT_TC_CLUSTER=off kb flute-bench-kernel $S 65,96,128 4g128,3g128,2g128,4g64 fp16
    echo "== last r$r"; FLUTE_LUT_TC_CLUSTER=off FLUTE_LUT_TC_SPREAD=off kb flute-bench-kernel $S 65,96,128 4g128,3g128,2g128,4g64 fp16
  done
  echo "== pairs bf16"; kb flute-bench-kernel 4096x4096,14336x4096 65,96,128 4g128,3g128,2g128,4g64 bf16
  echo "== spread bf16"; FLUTE_LUT_TC_CLUSTER=off kb flute-bench-kernel 4096x4096,14336x4096 65,96,128 4g128,3g128,2g128,4g64 bf16
} > $out/kbench-pairs.txt 2>&1
{ hdr "bf16/fp16 M=8 recheck, new vs HEAD binary, 3 rounds"
  for r in 1 2 3; do
    echo "== new r$r"; kb flute-bench-kernel 4096x28672 8 3g128,4g128 fp16,bf16
    echo "== base r$r"; kb flute-bench-kernel-base 4096x28672 8 3g128,4g128 fp16,bf16
  done
} > $out/kbench-m8-recheck.txt 2>&1
tail -3 $out/kbench-pairs.txt
echo "elapsed $SECONDS"
