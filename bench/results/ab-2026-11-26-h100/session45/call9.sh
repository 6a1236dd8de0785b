#!/usr/bin/env bash
# session 45 call 9: the final build's 70B table (W4 G128 on one H100; batches 1-32, prefill).
set -u
d=.dev; out=$OUT
tar -xJf $d/p45e.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45e/lib
bin=$d/p45e/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "flute bench e2e --shape 70b --weights w4 --prefill 512,2048"
  timeout 450 $bin/flute bench e2e --shape 70b --weights w4 --prefill 512,2048 --json $out/e2e-70b.json --markdown $out/e2e-70b.md 2>&1 | tail -20; echo "rc=$?"; } > $out/e2e-70b.log 2>&1
tail -16 $out/e2e-70b.log
echo "elapsed $SECONDS"
