#!/usr/bin/env bash
# session 45 call 3: the automatic strip groups (2-3 groups where one group cannot keep X resident
# beside a second block and a grouped plan can; from M = 5 the strip kernel for plain calls of
# n >= 16384 whose plan keeps X resident) — every LUT-GEMM GPU test, the sanitizers on the grouped
# launches, and M = 2-8 against HEAD's binary (86737bc) in alternating processes, fp16 and bf16.
set -u
d=.dev; out=$OUT
tar -xJf $d/p45c.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45c/lib
bin=$d/p45c/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter='LutGemm*'"
  timeout 300 $bin/kernel_tests --gtest_filter='LutGemm*' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/kernel-tests-lut.log
tail -4 $out/kernel-tests-lut.log; grep -E "groups per block|FAILED" $out/kernel-tests-lut.log | head; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck: SanitizerSubsetStripGroups"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 100 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.SanitizerSubsetStripGroups' 2>&1 | tail -4; done; } > $out/sanitizer.log 2>&1
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { FLUTE_LUT_STRIP_PLAN_LOG=1 timeout 100 $bin/$1 --shapes $S --m 2,3,4,5,6,8 --configs 4g128,3g128,2g128,4g64 --dtypes $2 --kernels auto-pdl --replays 9 2>>$out/plans-raw.txt | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "M = 2-8 A/B: new (automatic groups) vs head (86737bc), alternating, 2 rounds, fp16 and bf16"
  for r in 1 2; do for dt in fp16 bf16; do
    echo "== new $dt r$r"; kb flute-bench-kernel $dt; echo "== head $dt r$r"; kb flute-bench-kernel-head $dt; echo "t=$SECONDS" >&2
  done; done; } > $out/kbench-m2-8-vs-head.txt
grep "strip plan" $out/plans-raw.txt | sort | uniq > $out/plans.txt; rm -f $out/plans-raw.txt
echo "elapsed $SECONDS"
