#!/usr/bin/env bash
# session 45 call 10: strip groups in the fused instances too (norm prologue: X built once per block
# and shared) — every LUT-GEMM GPU test, and the sanitizers on the fused norm paths with 2 and 3
# groups forced.
set -u
d=.dev; out=$OUT
tar -xJf $d/p45h.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45h/lib
bin=$d/p45h/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter='LutGemm*'"
  timeout 300 $bin/kernel_tests --gtest_filter='LutGemm*' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/kernel-tests-lut.log
tail -4 $out/kernel-tests-lut.log; grep -E "groups per block|FAILED|Failure" $out/kernel-tests-lut.log | head; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck: SanitizerSubsetFusedNorm with FLUTE_LUT_STRIP_GROUPS=2 and 3, SanitizerSubsetStripGroups"
  for g in 2 3; do for tool in memcheck racecheck; do echo "## groups $g $tool"; FLUTE_LUT_STRIP_GROUPS=$g timeout 100 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.SanitizerSubsetFusedNorm' 2>&1 | tail -4; done; done
  for tool in memcheck racecheck; do echo "## $tool"; timeout 100 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.SanitizerSubsetStripGroups' 2>&1 | tail -4; done; } > $out/sanitizer.log 2>&1
grep -E "^## |ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "elapsed $SECONDS"
