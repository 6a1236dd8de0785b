#!/usr/bin/env bash
# session 48 call 3: the default one-row rule made "X resident wherever 2 blocks per SM fit".
# (1) the strip GPU tests; (2) 3-bit one-row pipeline depth with X resident: FLUTE_LUT_STRIP=2,2 /
# 2,3 / 2,4 against the plan (4 stages where they fit: ShallowFirst no longer applies), alternating,
# 2 rounds, and staged (the old plan) as the baseline; (3) the fp16 table of issue 5.
set -u
d=.dev; out=$OUT
tar -xJf $d/p48c.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p48c/lib
bin=$d/p48c/bin
timeout 200 $bin/kernel_tests --gtest_filter='LutGemmStripOneRow*:LutGemmGpuTest.StripKernel*:LutGemmGpuTest.StripPlan*' > $out/strip-tests.log 2>&1
echo "tests rc=$? t=$SECONDS"; grep -E "FAILED|PASSED" $out/strip-tests.log | head
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
row() { grep -E "^\| [0-9]" | awk -F'|' '{printf "  %s M=%s %s %s us cublas %s\n",$2,$4+0,$5,$7,$10}'; }
kb() { local tag=$1; shift; echo "== $tag"; env "$@" timeout 90 $bin/flute-bench-kernel --shapes $S --m 1 --configs 3g128,3g64 --dtypes fp16 --kernels auto-pdl --replays 9 --cooldown-ms 100 2>/dev/null | row; }
for r in 1 2; do
  kb "staged r$r" FLUTE_LUT_STRIP_ONE_ROW=staged
  kb "auto r$r"
  kb "s2 r$r" FLUTE_LUT_STRIP=2,2
  kb "s3 r$r" FLUTE_LUT_STRIP=2,3
  kb "s4 r$r" FLUTE_LUT_STRIP=2,4
  echo "t=$SECONDS" >&2
done > $out/three-bit-depth.txt
FLUTE_LUT_STRIP_PLAN_LOG=1 timeout 200 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes fp16 --kernels auto-pdl --replays 9 --md $out/lut-gemm-fp16.md --json $out/lut-gemm-fp16.json > $out/table-fp16.txt 2>&1
echo "table rc=$? elapsed $SECONDS"
