#!/usr/bin/env bash
# session 43 call 1: build 25aa717 (p42s = HEAD's kernels) — is the M = 16 tensor-core kernel bound
# per SM (time grows with the tiles an SM holds) or per tile (time flat while the grid fits)?
# N sweep at K = 4096: 112 / 168 / 224 / 248 / 264 / 288 / 336 / 448 tiles of 128 features.
set -u
d=.dev; out=$OUT
tar -xJf $d/p42s.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p42s/lib
bin=$d/p42s/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
S=4096x14336,4096x21504,4096x28672,4096x31744,4096x33792,4096x36864,4096x43008,4096x57344
kb() { timeout 90 $bin/flute-bench-kernel --shapes $S --m $1 --configs 4g128,2g128 --dtypes fp16 --kernels auto-pdl,auto-pdl-early --replays 9 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s M=%s %s %s %s us %s%% cublas %s\n", $2, $4, $5, $6, $7, $9, $10}'; }
{ hdr "flute-bench-kernel N sweep, K = 4096, build p42s (25aa717)"
  for r in 1 2; do for m in 16 8 32; do echo "== M=$m r$r"; kb $m; done; echo "t=$SECONDS" >&2; done; } > $out/kbench-n-sweep.txt
cat $out/kbench-n-sweep.txt
echo "elapsed $SECONDS"
