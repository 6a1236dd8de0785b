#!/usr/bin/env bash
# session 37 call 3: split-K in clusters (MT = 128) — TC GPU tests, kbench cluster vs FLUTE_LUT_TC_CLUSTER=off
set -u
tar -xJf .dev/p37c.tar.xz -C .dev; d=.dev/p37c/bin; export LD_LIBRARY_PATH=$PWD/.dev/p37c/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc*"; timeout 280 $d/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|cluster splits" $out/tc-tests.log | tail -15
echo "t=$SECONDS"
kb() { timeout 150 $d/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
{ hdr "flute-bench-kernel: cluster (default) vs FLUTE_LUT_TC_CLUSTER=off, alternating"
  for r in 1 2; do
    echo "== cluster r$r"; kb $S 96,128 4g128,3g128,2g128,4g64 fp16
    echo "== off r$r"; FLUTE_LUT_TC_CLUSTER=off kb $S 96,128 4g128,3g128,2g128,4g64 fp16
  done
  echo "== cluster bf16"; kb $S 96,128 4g128,3g128,2g128,4g64 bf16
  echo "== off bf16"; FLUTE_LUT_TC_CLUSTER=off kb $S 96,128 4g128,3g128,2g128,4g64 bf16
  echo "== cluster M=65,80,256"; kb 4096x6144,4096x4096,14336x4096,8192x8192 65,80,256 4g128 fp16
  echo "== off M=65,80,256"; FLUTE_LUT_TC_CLUSTER=off kb 4096x6144,4096x4096,14336x4096,8192x8192 65,80,256 4g128 fp16
} > $out/kbench-cluster.txt 2>&1
cat $out/kbench-cluster.txt
echo "elapsed $SECONDS"
