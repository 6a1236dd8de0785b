#!/usr/bin/env bash
# session 47 call 15: where the 8B decode step's time goes on the H200 — `flute bench e2e --ablate`
# (CUDA-graph replays with one kernel kind left out of every step; the difference to "none" is what
# that kind costs, overlap included), bf16 and W4 G128, batches 1 and 16. Build ee4a486.
set -u
d=.dev; out=$OUT
tar -xJf $d/p47x.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47x/lib
bin=$d/p47x/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
for w in dense w4; do
  for a in none "attention" "lm head" "qkv proj" "o proj" "gate_up+swiglu" "down proj" "add+rmsnorm"; do
    [ "$a" = none ] && flag="" || flag="$a"
    timeout 60 $bin/flute bench e2e --shape 8b --weights $w --batches 1,16 --prefill 0 --steps 32 --ablate "$flag" 2>&1 > /dev/null | grep -E "decode batch" | sed "s/^/$w ablate $a: /"
  done
done | tee $out/ablate-8b.txt
echo "elapsed $SECONDS"
