#!/usr/bin/env bash
# session 37 call 6: cluster split-K with valid-row slices — TC GPU tests, focused kbench cluster vs off (3 rounds)
set -u
tar -xJf .dev/p37f.tar.xz -C .dev; d=.dev/p37f/bin; export LD_LIBRARY_PATH=$PWD/.dev/p37f/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc*"; timeout 200 $d/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|cluster splits" $out/tc-tests.log | tail -15
echo "t=$SECONDS"
kb() { timeout 150 $d/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,14336x4096,8192x8192,28672x8192
{ hdr "flute-bench-kernel, split shapes: cluster (default) vs FLUTE_LUT_TC_CLUSTER=off, alternating, 3 rounds"
  for r in 1 2 3; do
    echo "== cluster r$r"; kb $S 65,80,96,112,128,256 4g128,3g128,2g128,4g64 fp16
    echo "== off r$r"; FLUTE_LUT_TC_CLUSTER=off kb $S 65,80,96,112,128,256 4g128,3g128,2g128,4g64 fp16
  done
  echo "== cluster bf16"; kb $S 65,96,128,256 4g128,3g128,2g128,4g64 bf16
  echo "== off bf16"; FLUTE_LUT_TC_CLUSTER=off kb $S 65,96,128,256 4g128,3g128,2g128,4g64 bf16
} > $out/kbench-cluster2.txt 2>&1
tail -3 $out/kbench-cluster2.txt
echo "elapsed $SECONDS"
