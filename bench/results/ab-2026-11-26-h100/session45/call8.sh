#!/usr/bin/env bash
# session 45 call 8: the final build's full 8B table (W4 G128 and the bf16 engine in the same
# process; batches 1-32, prefill 512 / 2048, the batch-invariant mode beside the default).
set -u
d=.dev; out=$OUT
tar -xJf $d/p45e.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45e/lib
bin=$d/p45e/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "flute bench e2e --shape 8b --weights w4,dense --compare-invariant --prefill 512,2048"
  timeout 420 $bin/flute bench e2e --shape 8b --weights w4,dense --compare-invariant --prefill 512,2048 --json $out/e2e-8b.json --markdown $out/e2e-8b.md 2>&1 | tail -40; echo "rc=$?"; } > $out/e2e-8b.log 2>&1
tail -30 $out/e2e-8b.log
echo "elapsed $SECONDS"
