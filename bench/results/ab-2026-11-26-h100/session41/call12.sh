#!/usr/bin/env bash
# session 41 call 12: the one-row X order in the engine (plugin p41n, uncommitted on 63be69f) —
# engine CUDA tests without ../shared (the man-page parity tests skip), 8B W4 decode at batches 1
# and 4 against HEAD's plugin, alternating
set -u
d=.dev; out=$OUT
tar -xJf $d/p41n.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p41n/lib
bin=$d/p41n/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda* (plugin p41n, no ../shared)"; FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so timeout 60 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|rc=" $out/engine-cuda-tests.log | head -5; echo "t=$SECONDS"
e2e() { FLUTE_CUDA_PLUGIN=$PWD/$bin/$1 timeout 60 $bin/flute bench e2e --shape 8b --weights $2 --batches 1,4 --prefill 0 2>&1 | grep -E "^\| 8b " | awk -F'|' '{printf "%s %s%s %s ms  ", $3, $5, $6+0, $8} END {print ""}'; }
{ hdr "8B decode ms per step, one-row X order (p41n) vs HEAD, alternating"
  for r in 1 2 3; do
    for w in w4 w2; do
      [ $SECONDS -gt 200 ] && { echo "# stopped (time) before round $r $w"; break 2; }
      echo "m1   r$r: $(e2e libflute_cuda.so $w)"
      echo "head r$r: $(e2e libflute_cuda_head.so $w)"
    done
  done
} > $out/e2e-m1.txt 2>&1
cat $out/e2e-m1.txt
echo "elapsed $SECONDS"
