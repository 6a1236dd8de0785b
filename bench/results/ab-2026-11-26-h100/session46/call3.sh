#!/usr/bin/env bash
# session 46 call 3: the one-round groups in the engine (8B qkv with the norm prologue at 2-4 rows:
# 384 strips, 3 groups per block). W4 and W2 decode ms per step at batches 1-8, the plugin's
# automatic plan (new) against FLUTE_LUT_STRIP_ONEROUND=off (HEAD's plans), alternating processes,
# 3 rounds, every strip plan of the first new process logged.
set -u
d=.dev; out=$OUT
tar -xJf $d/p46c.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p46c/lib
bin=$d/p46c/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
e2e() { timeout 120 $bin/flute bench e2e --shape 8b --weights $1 --batches 1,2,3,4,6,8 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b \| $1 \| default \| decode" | awk -F'|' '{printf "b%s %s ms  ", $6+0, $8} END {print ""}'; }
FLUTE_LUT_STRIP_PLAN_LOG=1 timeout 120 $bin/flute bench e2e --shape 8b --weights w4 --batches 2,3,4 --prefill 0 --steps 8 2>&1 | grep "strip plan" | sort | uniq > $out/plans-8b-w4.txt
{ hdr "8B decode ms per step, batches 1-8: new (one-round groups) vs FLUTE_LUT_STRIP_ONEROUND=off, alternating"
  for r in 1 2 3; do
    [ $SECONDS -gt 450 ] && { echo "# stopped (time) before round $r"; break; }
    for w in w4 w2; do
      echo "new $w r$r: $(FLUTE_LUT_STRIP_ONEROUND=on e2e $w)"; echo "off $w r$r: $(FLUTE_LUT_STRIP_ONEROUND=off e2e $w)"
    done
  done
} > $out/e2e-oneround-8b.txt 2>&1
cat $out/e2e-oneround-8b.txt
echo "elapsed $SECONDS"
