#!/usr/bin/env bash
# session 41 call 3: Stream-K at MT = 16 (uncommitted on 63be69f): the tensor-core kernel tests,
# then kernel alone at M = 5-16 against FLUTE_LUT_TC_STREAMK=off (same binary), 3 alternating rounds
set -u
d=.dev; out=$OUT
tar -xJf $d/p41c.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p41c/lib
bin=$d/p41c/bin
{ timeout 260 $bin/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED) |^rc=|FAILED" $out/tc-tests.log | tail -8; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { timeout 100 $bin/flute-bench-kernel --shapes $S --m $1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ for r in 1 2 3; do
    echo "== sk r$r"; kb 5,8,12,16 4g128,3g128,2g128 fp16,bf16
    echo "== off r$r"; FLUTE_LUT_TC_STREAMK=off kb 5,8,12,16 4g128,3g128,2g128 fp16,bf16
    echo "t=$SECONDS" >&2
  done; } > $out/kbench-streamk16-ab.txt
echo "elapsed $SECONDS"
