#!/usr/bin/env bash
# session 39 call 8: strip plan sweep at M = 1-2 on the shapes of 256-384 strips (why is M = 2
# 35 % slower than M = 1 on 4096x6144?)
set -u
tar -xJf .dev/p39f.tar.xz -C .dev
bin=.dev/p39f/bin; export LD_LIBRARY_PATH=$PWD/.dev/p39f/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
kb() { timeout 60 $bin/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,14336x4096,8192x8192
{ hdr "strip plan sweep at M = 1-2: default vs FLUTE_LUT_STRIP=tpw,stages x FLUTE_LUT_STRIP_X, 2 rounds"
  for r in 1 2; do
    echo "== default r$r"; kb $S 1,2 4g128,2g128 fp16
    for x in staged resident; do
      for cfg in 1,2 1,3 1,4 2,2 2,3 2,4; do
        echo "== x=$x cfg=$cfg r$r"; FLUTE_LUT_STRIP_X=$x FLUTE_LUT_STRIP=$cfg kb $S 1,2 4g128,2g128 fp16
      done
    done
  done
} > $out/kbench-strip-sweep-m1-2.txt 2>&1
echo "elapsed $SECONDS"
