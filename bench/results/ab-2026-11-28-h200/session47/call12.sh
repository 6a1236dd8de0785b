#!/usr/bin/env bash
# session 47 call 12: issue 8's points on the H200 in more processes, and the bf16 engine with
# cuBLAS for its dense products (FLUTE_DENSE_GEMV=off) against its default dense GEMV, alternating:
# is the bf16 baseline the faster of the two on this card?
set -u
d=.dev; out=$OUT
tar -xJf $d/p47x.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47x/lib
bin=$d/p47x/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ for r in 1 2; do
    hdr "r$r flute bench e2e --shape 8b --weights w4,dense --batches 1,16 --prefill 0 --steps 32"
    timeout 100 $bin/flute bench e2e --shape 8b --weights w4,dense --batches 1,16 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b |copy bandwidth"
    hdr "r$r the same with FLUTE_DENSE_GEMV=off (bf16 engine on cuBLAS)"
    FLUTE_DENSE_GEMV=off timeout 100 $bin/flute bench e2e --shape 8b --weights dense --batches 1,4,8,16,32 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b "
  done; } > $out/e2e-points.txt 2>&1
cat $out/e2e-points.txt
echo "elapsed $SECONDS"
