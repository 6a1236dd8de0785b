#!/usr/bin/env bash
# session 41 call 2: the strip kernel's refills from running sources (uncommitted on 63be69f):
# LutGemmGpuTest (strip and split-K kernels against the CPU reference), then kernel alone at
# M = 1-4 against HEAD's binary (p41a), 3 alternating rounds
set -u
d=.dev; out=$OUT
for p in p41a p41b; do tar -xJf $d/$p.tar.xz -C $d; done
export LD_LIBRARY_PATH=$PWD/$d/p41b/lib
{ timeout 220 $d/p41b/bin/kernel_tests --gtest_filter='LutGemmGpuTest.*' 2>&1; echo "rc=$?"; } > $out/strip-tests.log
grep -E "^\[  (PASSED|FAILED) |^rc=|FAILED" $out/strip-tests.log | tail -6; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { local b=$1; shift; LD_LIBRARY_PATH=$PWD/$d/$b/lib timeout 100 $d/$b/bin/flute-bench-kernel --shapes $S --m $1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ for r in 1 2 3; do
    echo "== head r$r"; kb p41a 1,2,3,4 4g128,3g128,2g128,4g64 fp16; kb p41a 1 4g128,3g128,2g128 bf16
    echo "== run r$r"; kb p41b 1,2,3,4 4g128,3g128,2g128,4g64 fp16; kb p41b 1 4g128,3g128,2g128 bf16
    echo "t=$SECONDS" >&2
  done; } > $out/kbench-running-ab.txt
echo "elapsed $SECONDS"
