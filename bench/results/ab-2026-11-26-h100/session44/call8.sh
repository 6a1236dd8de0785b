#!/usr/bin/env bash
# session 44 call 8: the final build's engine (p44h, as call 6) — engine CUDA tests (no ../shared:
# the man-page parity tests skip) with their summary, and more alternating rounds of the 8B decode
# step at batch 1: fused one-row instances (new) vs FLUTE_LUT_STRIP_M1_FUSED=off (HEAD's fused
# instances), W4 and W2, with the bf16 engine in the same processes.
set -u
d=.dev; out=$OUT
tar -xJf $d/p44h.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p44h/lib
bin=$d/p44h/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests *Cuda* (no ../shared)"; timeout 120 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1 | grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|tests? ran"; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
cat $out/engine-cuda-tests.log | tail -4; echo "t=$SECONDS"
e2e() { timeout 90 $bin/flute bench e2e --shape 8b --weights $1,dense --batches 1 --prefill 0 --steps 64 2>&1 | grep -E "^\| 8b \| (w4|w2|bf16|dense) \| default \| decode" | awk -F'|' '{printf "%s b%s %s ms  ", $3, $6+0, $8} END {print ""}'; }
{ hdr "8B decode ms per step at batch 1 (64 steps), new vs FLUTE_LUT_STRIP_M1_FUSED=off, alternating"
  for r in 1 2 3 4 5 6; do
    [ $SECONDS -gt 400 ] && { echo "# stopped (time) before round $r"; break; }
    echo "new w4 r$r: $(e2e w4)"; echo "off w4 r$r: $(FLUTE_LUT_STRIP_M1_FUSED=off e2e w4)"
    echo "new w2 r$r: $(e2e w2)"; echo "off w2 r$r: $(FLUTE_LUT_STRIP_M1_FUSED=off e2e w2)"
  done
} > $out/e2e-m1-fused-b1.txt 2>&1
cat $out/e2e-m1-fused-b1.txt
echo "elapsed $SECONDS"
