#!/usr/bin/env bash
# session 47 call 16: the decode attention's columns on the H200 (FLUTE_ATTENTION_COLUMNS: off = one
# CTA per split, N = N CTA columns per (kv head slice, sequence); unset = the occupancy rule),
# 8B W4 and bf16 decode at batches 4-32, alternating, 2 rounds. Build ee4a486.
set -u
d=.dev; out=$OUT
tar -xJf $d/p47x.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47x/lib
bin=$d/p47x/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
for r in 1 2; do for c in default off 1 2 3 4 6; do
  if [ $c = default ]; then unset FLUTE_ATTENTION_COLUMNS; else export FLUTE_ATTENTION_COLUMNS=$c; fi
  echo "r$r columns $c: $(timeout 60 $bin/flute bench e2e --shape 8b --weights w4,dense --batches 4,8,16,32 --prefill 0 --steps 32 2>&1 | grep -E '^\| 8b' | awk -F'|' '{printf "%s b%s %s ms; ", $3, $6+0, $8}')"
done; done | tee $out/attention-columns.txt
echo "elapsed $SECONDS"
