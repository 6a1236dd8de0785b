#!/usr/bin/env bash
# session 44 call 6 (its call 3, not run before): the final build's engine (p44h) — engine CUDA tests (no ../shared) and the 8B
# decode step at batches 1 and 4 against FLUTE_LUT_STRIP_M1_FUSED=off (the fused one-row calls on
# HEAD's instances), alternating processes.
set -u
d=.dev; out=$OUT
tar -xJf $d/p44h.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p44h/lib
bin=$d/p44h/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests *Cuda* (no ../shared)"; timeout 90 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1 | tail -5; } > $out/engine-cuda-tests.log 2>&1
tail -2 $out/engine-cuda-tests.log; echo "t=$SECONDS"
e2e() { timeout 90 $bin/flute bench e2e --shape 8b --weights $1 --batches 1,4 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b \| (w4|w3|w2) \| default \| decode" | awk -F'|' '{printf "%s b%s %s ms  ", $3, $6+0, $8} END {print ""}'; }
{ hdr "8B decode ms per step, batches 1 and 4: fused one-row instances (new) vs FLUTE_LUT_STRIP_M1_FUSED=off (HEAD's fused instances), alternating"
  for r in 1 2 3; do
    [ $SECONDS -gt 420 ] && { echo "# stopped (time) before round $r"; break; }
    echo "new r$r: $(e2e w4)"; echo "off r$r: $(FLUTE_LUT_STRIP_M1_FUSED=off e2e w4)"
  done
  [ $SECONDS -lt 380 ] && { echo "new w2: $(e2e w2)"; echo "off w2: $(FLUTE_LUT_STRIP_M1_FUSED=off e2e w2)"; }
} > $out/e2e-m1-fused.txt 2>&1
cat $out/e2e-m1-fused.txt
echo "elapsed $SECONDS"
S=4096x6144,4096x4096,4096x28672,8192x57344
kb() { timeout 60 $bin/flute-bench-kernel --shapes $S --m 1 --configs 4g128,2g128 --dtypes bf16 --kernels auto-pdl --replays 9 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "final build, plain M = 1: lanes 0-3 (new) vs FLUTE_LUT_STRIP_M1X=all, alternating, 2 rounds"
  for r in 1 2; do echo "== new r$r"; kb; echo "== all r$r"; FLUTE_LUT_STRIP_M1X=all kb; done; } > $out/kbench-m1-final.txt 2>&1
echo "elapsed $SECONDS"
