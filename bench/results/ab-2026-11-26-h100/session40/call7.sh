#!/usr/bin/env bash
# session 40 call 7: kRawScaleLoop at MT = 16 and 64 too (FLUTE_LUT_TC_RAWSCALES=all, G >= 128)
# against the default (raw scales at MT = 128 only), same binary, 3 rounds: kernel alone M = 8-64
# and the 8B W4 decode step at batches 8 and 16
set -u
d=.dev; out=$OUT
tar -xJf $d/p40e.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p40e/lib
bin=$d/p40e/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { timeout 90 $bin/flute-bench-kernel --shapes $S --m $1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ for r in 1 2 3; do
    echo "== all r$r"; FLUTE_LUT_TC_RAWSCALES=all kb 8,16,48,64 4g128,3g128,2g128 bf16
    echo "== def r$r"; kb 8,16,48,64 4g128,3g128,2g128 bf16
  done; } > $out/kbench-rawscales-all-ab.txt 2>&1
echo "kbench t=$SECONDS"
{ for r in 1 2 3; do
    echo "== all r$r"; FLUTE_LUT_TC_RAWSCALES=all timeout 90 $bin/flute bench e2e --shape 8b --weights w4 --batches 8,16,32 --steps 32 2>&1 | grep -E "^\| 8b"
    echo "== def r$r"; timeout 90 $bin/flute bench e2e --shape 8b --weights w4 --batches 8,16,32 --steps 32 2>&1 | grep -E "^\| 8b"
  done; } > $out/e2e-rawscales-all-ab.txt 2>&1
cat $out/e2e-rawscales-all-ab.txt; echo "elapsed $SECONDS"
