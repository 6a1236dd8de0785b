#!/usr/bin/env bash
# session 46 call 2: the one-round groups rule (OneRoundGroupedPlan; from M = 5 the strip kernel for
# plain calls of one round at 3 groups). Same binary, automatic plan (new) against
# FLUTE_LUT_STRIP_ONEROUND=off (HEAD's plans), alternating processes, 2 rounds, M = 2-8, fp16 and
# bf16, 4 configs; then the LUT GPU tests and compute-sanitizer on the one-round launches.
set -u
d=.dev; out=$OUT
tar -xJf $d/p46b.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p46b/lib
bin=$d/p46b/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
S=4096x6144,4096x4096,14336x4096,8192x10240,8192x8192
kb() {  # dtype [env...]
  local dt=$1; shift
  env "$@" timeout 100 $bin/flute-bench-kernel --shapes $S --m 2,3,4,5,6,8 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 2>/dev/null | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "M = 2-8 A/B: new vs FLUTE_LUT_STRIP_ONEROUND=off, alternating, 2 rounds"
  for r in 1 2; do for dt in fp16 bf16; do
    echo "== new $dt r$r"; kb $dt FLUTE_LUT_STRIP_ONEROUND=on; echo "== off $dt r$r"; kb $dt FLUTE_LUT_STRIP_ONEROUND=off; echo "t=$SECONDS" >&2
  done; done; } > $out/kbench-m2-8-oneround.txt
FLUTE_LUT_STRIP_PLAN_LOG=1 timeout 60 $bin/flute-bench-kernel --shapes $S --m 2,3,4,5,6,8 --configs 4g128,3g128,2g128,4g64 --dtypes fp16,bf16 --kernels auto-pdl --replays 3 2>&1 | grep "strip plan" | sort | uniq > $out/plans.txt
echo "t=$SECONDS"
{ hdr "kernel_tests LutGemm*"
  timeout 300 $bin/kernel_tests --gtest_filter='LutGemm*' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/kernel-tests-lut.log
grep -E "^\[  (PASSED|FAILED) |tests ran|groups per block" $out/kernel-tests-lut.log | tail -8; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck: StripPlanTakesOneRoundGroups"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 100 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.StripPlanTakesOneRoundGroups' 2>&1 | tail -4; done; } > $out/sanitizer.log 2>&1
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" $out/sanitizer.log
echo "elapsed $SECONDS"
