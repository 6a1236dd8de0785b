#!/usr/bin/env bash
# session 37 call 2: upper bound — no split-K reduction (skip 4), cluster capacity
set -u
tar -xJf .dev/p37b.tar.xz -C .dev; d=.dev/p37b/bin; export LD_LIBRARY_PATH=$PWD/.dev/p37b/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
./.dev/occ | tee $out/occ.txt
kb() { timeout 150 $d/flute-bench-kernel-ub --shapes $1 --m $2 --configs $3 --dtypes fp16 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s M=%s %s %s us %s%% x%s\n", $2, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
{ hdr "UB skip modes (FLUTE_UB_TC_SKIP 0 none, 4 no split reduction: split 0 stores its own partial), alternating, fp16 4g128"
  for r in 1 2 3; do
    for v in 0 4; do echo "== skip $v round $r"; FLUTE_UB_TC_SKIP=$v kb $S 16,32,64,128 4g128; done
  done
} > $out/kbench-ub-skip4.txt 2>&1
cat $out/kbench-ub-skip4.txt
echo "elapsed $SECONDS"
