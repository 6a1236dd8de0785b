#!/usr/bin/env bash
# session 39 call 2: strip kernel 2-bit table in registers (PRMT lookups, no quad table) + own
# slice on chip at MT = 128 only — LUT GPU tests, sanitizer; kbench new vs 6eb52f1 (base), 3 rounds
set -u
tar -xJf .dev/p39b.tar.xz -C .dev; tar -xJf .dev/base39.tar.xz -C .dev
d=.dev/p39b/bin; cp .dev/base39/flute-bench-kernel-base $d/; export LD_LIBRARY_PATH=$PWD/.dev/p39b/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests LutGemmGpuTest.* + LutGemmTc*"; timeout 300 $d/kernel_tests --gtest_filter='LutGemmGpuTest.*:LutGemmTcGpuTest.*' 2>&1; echo "rc=$?"; } > $out/lut-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|spread reduction|\[       OK \] LutGemmGpuTest.StripKernelOneHot" $out/lut-tests.log | tail -12
{ hdr "compute-sanitizer memcheck + racecheck, LutGemmGpuTest.SanitizerSubset + *SpreadSanitizerSubset*"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 90 /usr/local/cuda/bin/compute-sanitizer --tool $tool $d/kernel_tests --gtest_filter='LutGemmGpuTest.SanitizerSubset:*SpreadSanitizerSubset*' 2>&1 | tail -4; done
} > $out/sanitizer.log 2>&1
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" $out/sanitizer.log
echo "t=$SECONDS"
kb() { local b=$1; shift; timeout 100 $d/$b --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
{ hdr "flute-bench-kernel: 2-bit register table (new) vs 6eb52f1 (base), alternating, 3 rounds (4g128: unchanged control)"
  for r in 1 2 3; do
    echo "== new r$r"; kb flute-bench-kernel $S 1,2,4,8 2g128,4g128 fp16; kb flute-bench-kernel 4096x4096,4096x6144 33,48,64,128 4g128,3g128 fp16
    echo "== base r$r"; kb flute-bench-kernel-base $S 1,2,4,8 2g128,4g128 fp16; kb flute-bench-kernel-base 4096x4096,4096x6144 33,48,64,128 4g128,3g128 fp16
  done
  for r in 1 2; do
    echo "== newbf r$r"; kb flute-bench-kernel $S 1,4,8 2g128 bf16
    echo "== basebf r$r"; kb flute-bench-kernel-base $S 1,4,8 2g128 bf16
  done
} > $out/kbench-reg2-vs-base.txt 2>&1
echo "elapsed $SECONDS"
