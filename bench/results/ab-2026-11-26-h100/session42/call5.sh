#!/usr/bin/env bash
# session 42 call 5: build 25aa717 (p42s) — the strip kernel's tiles per warp and depth on the small
# 8B shapes at M = 1-4 (FLUTE_LUT_STRIP="tpw,stages" against the plan, 2 alternating rounds), and the
# 8B decode step at batches 1 / 4 with one tile per warp on O or qkv, 3 alternating rounds
set -u
d=.dev; out=$OUT
tar -xJf $d/p42s.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p42s/lib
bin=$d/p42s/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
S=4096x4096,4096x6144,14336x4096,4096x28672
kb() { FLUTE_LUT_STRIP=$1 timeout 60 $bin/flute-bench-kernel --shapes $S --m 1,2,3,4 --configs 4g128,3g128,2g128 --dtypes fp16 --kernels auto-pdl,auto-pdl-early --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s %s us %s%%\n", $2, $3, $4, $5, $6, $7, $9}'; }
{ hdr "flute-bench-kernel: FLUTE_LUT_STRIP sweep (plan = empty), build p42s (25aa717)"
  for r in 1 2; do for c in plan 1,2 1,3 1,4 2,2 2,3 2,4; do
    echo "== $c r$r"; if [ $c = plan ]; then kb ""; else kb $c; fi
  done; echo "t=$SECONDS" >&2; done; } > $out/kbench-strip-sweep.txt
echo "t=$SECONDS"
e2e() { timeout 60 $bin/flute bench e2e --shape 8b --weights w4 --batches 1,4 --prefill 0 --steps 16 2>&1 | grep -E "^\| 8b \| w4 \| default \| decode" | awk -F'|' '{printf "batch %s %s ms\n", $6, $8}'; }
{ hdr "flute bench e2e 8b w4 batches 1,4: plan vs one tile per warp on O / qkv, alternating"
  for r in 1 2 3; do
    echo "== plan r$r"; e2e
    echo "== o13 r$r"; FLUTE_LUT_STRIP=1,3@4096x4096 e2e
    echo "== o14 r$r"; FLUTE_LUT_STRIP=1,4@4096x4096 e2e
    echo "== qkv13 r$r"; FLUTE_LUT_STRIP=1,3@4096x6144 e2e
    echo "t=$SECONDS" >&2
  done; } > $out/e2e-strip-tpw.txt
cat $out/e2e-strip-tpw.txt
echo "elapsed $SECONDS"
