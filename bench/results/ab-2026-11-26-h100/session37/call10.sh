#!/usr/bin/env bash
# session 37 call 10: 2-stage first choice at 2/3 bits (ShallowFirst) — strip tests, kbench and 8B e2e against FLUTE_LUT_STRIP_SHALLOW=off
set -u
d=.dev; out=$OUT
tar -xJf $d/p37j.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p37j/lib
bin=$d/p37j/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmGpuTest.Strip*"; timeout 120 $bin/kernel_tests --gtest_filter='LutGemmGpuTest.Strip*' 2>&1; echo "rc=$?"; } > $out/strip-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|^\[  FAILED" $out/strip-tests.log; echo "t=$SECONDS"
kb() { timeout 100 $bin/flute-bench-kernel --m $1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel: default vs FLUTE_LUT_STRIP_SHALLOW=off, alternating"
  for r in 1 2; do
    echo "== shallow r$r"; kb 1,2,4 3g128,2g128,4g128 fp16
    echo "== off r$r"; FLUTE_LUT_STRIP_SHALLOW=off kb 1,2,4 3g128,2g128,4g128 fp16
  done
  echo "== shallow bf16"; kb 1 3g128,3g64 bf16
  echo "== off bf16"; FLUTE_LUT_STRIP_SHALLOW=off kb 1 3g128,3g64 bf16
} > $out/kbench-shallow.txt 2>&1
echo "t=$SECONDS"
e2e() { FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so timeout 80 $bin/flute bench e2e --shape 8b --weights $1 --batches 1,4 --prefill 0 2>&1 | grep -E "^\| 8b " | awk -F'|' '{printf "%s %s%s %s ms  ", $3, $5, $6+0, $8} END {print ""}'; }
{ hdr "8B decode ms per step, default vs FLUTE_LUT_STRIP_SHALLOW=off, alternating"
  for r in 1 2 3; do
    for w in w3 w2 w4; do
      [ $SECONDS -gt 270 ] && { echo "# stopped (time) before round $r $w"; break 2; }
      echo "shallow r$r: $(e2e $w)"
      echo "off     r$r: $(FLUTE_LUT_STRIP_SHALLOW=off e2e $w)"
    done
  done
} > $out/e2e-shallow.txt 2>&1
cat $out/e2e-shallow.txt
echo "elapsed $SECONDS"
