#!/usr/bin/env bash
# session 39 call 9: would DeepFirst help at 3 bits? Strip plan at M = 3-4, 3-bit G128, default
# vs forced depths (2 tiles per warp where k % 2048 == 0), X staged, with both register instances
set -u
tar -xJf .dev/p39f.tar.xz -C .dev
bin=.dev/p39f/bin; export LD_LIBRARY_PATH=$PWD/.dev/p39f/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
kb() { timeout 60 $bin/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
{ hdr "3-bit strip plan at M = 3-4: default vs FLUTE_LUT_STRIP=2,{2,3,4} (X staged) x FLUTE_LUT_STRIP_LOWREGS, 2 rounds"
  for r in 1 2; do
    echo "== default r$r"; kb $S 3,4 3g128 fp16
    for low in on off; do
      for cfg in 2,2 2,3 2,4; do
        echo "== low=$low cfg=$cfg r$r"; FLUTE_LUT_STRIP_LOWREGS=$low FLUTE_LUT_STRIP_X=staged FLUTE_LUT_STRIP=$cfg kb $S 3,4 3g128 fp16
      done
    done
  done
} > $out/kbench-strip-3bit-m3-4.txt 2>&1
echo "elapsed $SECONDS"
