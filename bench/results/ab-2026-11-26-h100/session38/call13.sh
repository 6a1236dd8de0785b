#!/usr/bin/env bash
# session 38 call 13: the table's two bf16/fp16 > 1.10 points at M = 8, focused, 3 rounds (final build)
set -u
d=.dev/p38k/bin; export LD_LIBRARY_PATH=$PWD/.dev/p38k/lib; out=$OUT
[ -x $d/flute-bench-kernel ] || { tar -xJf .dev/p38k.tar.xz -C .dev; }
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
kb() { timeout 100 $d/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 9 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel (6eb52f1): 8192x57344 2b-g128 and 28672x8192 3b-g128 at M = 8, fp16 and bf16, 3 rounds"
  for r in 1 2 3; do
    echo "== r$r"; kb 8192x57344 8 2g128 fp16,bf16; kb 28672x8192 8 3g128 fp16,bf16
  done
} > $out/kbench-m8-bf16-recheck.txt 2>&1
cat $out/kbench-m8-bf16-recheck.txt
