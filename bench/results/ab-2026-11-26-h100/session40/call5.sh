#!/usr/bin/env bash
# session 40 call 5: kRawScaleLoop at MT = 128 (uncommitted on 9a66a65): tests, sanitizer, and
# A/B against FLUTE_LUT_TC_RAWSCALES=off (same binary), kernel alone M = 65-512 (call 6: 8B W4 prefill)
set -u
d=.dev; out=$OUT
tar -xJf $d/p40c.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p40c/lib
bin=$d/p40c/bin
{ timeout 200 $bin/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED) |^rc=|FAILED" $out/tc-tests.log | tail -6; echo "t=$SECONDS"
{ for tool in memcheck racecheck; do echo "## $tool"; timeout 100 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='*SpreadSanitizerSubset*:*ClusterSanitizerSubset*:*StreamKSanitizerSubset*:*TiledSanitizerSubset*' 2>&1 | tail -3; done; } > $out/sanitizer.log 2>&1
grep -E "SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { timeout 90 $bin/flute-bench-kernel --shapes $S --m $1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ for r in 1 2 3; do
    echo "== raw r$r"; kb 65,96,128 4g128,3g128,2g128,4g64 fp16; kb 128,256,512 4g128 bf16
    echo "== off r$r"; FLUTE_LUT_TC_RAWSCALES=off kb 65,96,128 4g128,3g128,2g128,4g64 fp16; FLUTE_LUT_TC_RAWSCALES=off kb 128,256,512 4g128 bf16
  done; } > $out/kbench-rawscales-ab.txt 2>&1
echo "kbench t=$SECONDS"
echo "elapsed $SECONDS"
