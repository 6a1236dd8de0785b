#!/usr/bin/env bash
# session 42 call 6: build 25aa717 (p42s) — the 8B decode step at batches 1 / 4 with 2 stages
# (3 blocks per SM, one round of strips) on qkv or O instead of the early-weights plan, 4 alternating rounds
set -u
d=.dev; out=$OUT
[ -d $d/p42s ] || tar -xJf $d/p42s.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p42s/lib
bin=$d/p42s/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
e2e() { timeout 60 $bin/flute bench e2e --shape 8b --weights w4 --batches 1,4 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b \| w4 \| default \| decode" | awk -F'|' '{printf "batch %s %s ms\n", $6, $8}'; }
{ hdr "flute bench e2e 8b w4 batches 1,4: plan vs FLUTE_LUT_STRIP=2,2 on qkv (4096x6144) / O (4096x4096), alternating"
  for r in 1 2 3 4; do
    echo "== plan r$r"; e2e
    echo "== q22 r$r"; FLUTE_LUT_STRIP=2,2@4096x6144 e2e
    echo "== o22 r$r"; FLUTE_LUT_STRIP=2,2@4096x4096 e2e
    echo "== q24 r$r"; FLUTE_LUT_STRIP=2,4@4096x6144 e2e
    echo "t=$SECONDS" >&2
  done; } > $out/e2e-strip-depth.txt
cat $out/e2e-strip-depth.txt
echo "elapsed $SECONDS"
