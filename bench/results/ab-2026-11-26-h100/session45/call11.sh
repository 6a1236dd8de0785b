#!/usr/bin/env bash
# session 45 call 11: strip groups in the engine (the norm prologue's qkv and gate/up where one group
# has one block per SM: 70B at batches 3-4) — 70B W4 decode at batches 1-4, the plugin's automatic
# plan (new) against FLUTE_LUT_STRIP_GROUPS=1 (one group, the plans and PTX of HEAD) in alternating
# processes, 3 rounds; 8B W4 at batches 1-4 the same way, 2 rounds (its plans should not change).
set -u
d=.dev; out=$OUT
tar -xJf $d/p45i.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45i/lib
bin=$d/p45i/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
e2e() { timeout 120 $bin/flute bench e2e --shape $1 --weights w4 --batches 1,2,3,4 --prefill 0 --steps 32 2>&1 | grep -E "^\| $1 \| w4 \| default \| decode" | awk -F'|' '{printf "b%s %s ms  ", $6+0, $8} END {print ""}'; }
{ hdr "70B W4 decode ms per step, batches 1-4: new (automatic groups) vs FLUTE_LUT_STRIP_GROUPS=1, alternating"
  for r in 1 2 3; do
    [ $SECONDS -gt 420 ] && { echo "# stopped (time) before round $r"; break; }
    echo "new r$r: $(e2e 70b)"; echo "one r$r: $(FLUTE_LUT_STRIP_GROUPS=1 e2e 70b)"
  done
  echo "# 8B"
  for r in 1 2; do
    [ $SECONDS -gt 480 ] && { echo "# stopped (time) before 8B round $r"; break; }
    echo "new r$r: $(e2e 8b)"; echo "one r$r: $(FLUTE_LUT_STRIP_GROUPS=1 e2e 8b)"
  done
} > $out/e2e-groups-b1-4.txt 2>&1
cat $out/e2e-groups-b1-4.txt
echo "elapsed $SECONDS"
