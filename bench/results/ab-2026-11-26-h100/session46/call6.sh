#!/usr/bin/env bash
# session 46 call 6: the final build's engine (its launches keep HEAD's plans by construction):
# 8B W4 / W2 decode at batches 1-8 against FLUTE_LUT_STRIP_ONEROUND=off, alternating, 2 rounds;
# then issue 8's batch-1 / batch-16 points with the bf16 engine in the same process, 2 processes.
set -u
d=.dev; out=$OUT
tar -xJf $d/p46f.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p46f/lib
bin=$d/p46f/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
e2e() { timeout 120 $bin/flute bench e2e --shape 8b --weights $1 --batches 1,2,3,4,6,8 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b \| $1 \| default \| decode" | awk -F'|' '{printf "b%s %s ms  ", $6+0, $8} END {print ""}'; }
{ hdr "8B decode ms per step, batches 1-8: final build vs FLUTE_LUT_STRIP_ONEROUND=off, alternating"
  for r in 1 2; do for w in w4 w2; do
    echo "new $w r$r: $(e2e $w)"; echo "off $w r$r: $(FLUTE_LUT_STRIP_ONEROUND=off e2e $w)"
  done; done
  hdr "flute bench e2e --shape 8b --weights w4,dense --batches 1,16 --prefill 0 --steps 32, 2 processes"
  for r in 1 2; do echo "== r$r"; timeout 150 $bin/flute bench e2e --shape 8b --weights w4,dense --batches 1,16 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b |copy bandwidth|^\| model"; done
} > $out/e2e-final.txt 2>&1
cat $out/e2e-final.txt
echo "elapsed $SECONDS"
