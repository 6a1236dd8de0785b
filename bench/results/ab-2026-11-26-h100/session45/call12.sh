#!/usr/bin/env bash
# session 45 call 12: the 70B table again with the final build (strip groups in the fused instances too).
set -u
d=.dev; out=$OUT
tar -xJf $d/p45i.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45i/lib
bin=$d/p45i/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "flute bench e2e --shape 70b --weights w4 --prefill 512,2048"
  timeout 450 $bin/flute bench e2e --shape 70b --weights w4 --prefill 512,2048 --json $out/e2e-70b.json --markdown $out/e2e-70b.md 2>&1 | tail -20; echo "rc=$?"; } > $out/e2e-70b.log 2>&1
tail -16 $out/e2e-70b.log
echo "elapsed $SECONDS"
