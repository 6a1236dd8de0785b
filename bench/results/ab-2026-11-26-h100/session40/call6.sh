#!/usr/bin/env bash
# session 40 call 6: kRawScaleLoop at MT = 128 against FLUTE_LUT_TC_RAWSCALES=off, 8B W4 prefill
set -u
d=.dev; out=$OUT
tar -xJf $d/p40d.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p40d/lib
bin=$d/p40d/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
{ for r in 1 2; do
    echo "== raw r$r"; timeout 90 $bin/flute bench e2e --shape 8b --weights w4 --batches 1 --steps 8 --prefill 256,512 2>&1 | grep -E "prefill"
    echo "== off r$r"; FLUTE_LUT_TC_RAWSCALES=off timeout 90 $bin/flute bench e2e --shape 8b --weights w4 --batches 1 --steps 8 --prefill 256,512 2>&1 | grep -E "prefill"
  done; } > $out/e2e-prefill-rawscales-ab.txt 2>&1
cat $out/e2e-prefill-rawscales-ab.txt; echo "elapsed $SECONDS"
