#!/usr/bin/env bash
# session 42 call 7: build 25aa717 (p42s) — the 70B W4 G128 e2e table
set -u
d=.dev; out=$OUT
tar -xJf $d/p42s.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p42s/lib
bin=$d/p42s/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 (build $(cat $d/build-id)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "flute bench e2e --shape 70b --weights w4 --prefill 512,2048"
  timeout 400 $bin/flute bench e2e --shape 70b --weights w4 --prefill 512,2048 --json $out/e2e-70b.json --markdown $out/e2e-70b.md 2>&1 | tail -20; echo "rc=$?"; } > $out/e2e-70b.log 2>&1
cat $out/e2e-70b.md; echo "elapsed $SECONDS"
