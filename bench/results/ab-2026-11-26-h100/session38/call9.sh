#!/usr/bin/env bash
# session 38 call 9: clusters (default) vs the classic spread reduction (FLUTE_LUT_TC_CLUSTER=off FLUTE_LUT_TC_STREAMK=off) where both apply, 3 rounds
set -u
tar -xJf .dev/p38i.tar.xz -C .dev; d=.dev/p38i/bin; export LD_LIBRARY_PATH=$PWD/.dev/p38i/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
kb() { timeout 100 $d/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x6144,8192x8192,4096x4096,28672x8192
{ hdr "flute-bench-kernel (fce2261): clusters (default) vs classic spread (CLUSTER=off STREAMK=off) vs classic last block (also SPREAD=off), 3 rounds"
  for r in 1 2 3; do
    echo "== cluster r$r"; kb $S 65,96,128,256 4g128,3g128,2g128,4g64 fp16
    echo "== spread r$r"; FLUTE_LUT_TC_CLUSTER=off FLUTE_LUT_TC_STREAMK=off kb $S 65,96,128,256 4g128,3g128,2g128,4g64 fp16
    echo "== last r$r"; FLUTE_LUT_TC_CLUSTER=off FLUTE_LUT_TC_STREAMK=off FLUTE_LUT_TC_SPREAD=off kb $S 65,96,128,256 4g128,3g128,2g128,4g64 fp16
  done
  echo "== cluster bf16"; kb $S 65,96,128,256 4g128,3g128,2g128,4g64 bf16
  echo "== spread bf16"; FLUTE_LUT_TC_CLUSTER=off FLUTE_LUT_TC_STREAMK=off kb $S 65,96,128,256 4g128,3g128,2g128,4g64 bf16
} > $out/kbench-cluster-vs-spread.txt 2>&1
tail -2 $out/kbench-cluster-vs-spread.txt
echo "elapsed $SECONDS"
