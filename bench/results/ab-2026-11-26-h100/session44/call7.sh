#!/usr/bin/env bash
# session 44 call 7: the final build's kernel tests (p44i: the code of call 6) — every LUT-GEMM GPU
# test (strip, fused, split-K, tensor core), and the sanitizers on the one-row paths.
set -u
d=.dev; out=$OUT
tar -xJf $d/p44i.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p44i/lib
bin=$d/p44i/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter='LutGemm*' (final build)"
  timeout 400 $bin/kernel_tests --gtest_filter='LutGemm*' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/kernel-tests-lut.log
tail -4 $out/kernel-tests-lut.log; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck: SanitizerSubsetFusedNorm (m = 1 fused, both instances) + StripKernelRowsDoNotDependOnM (plain m = 1)"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 80 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.SanitizerSubsetFusedNorm:LutGemmGpuTest.StripKernelRowsDoNotDependOnM' 2>&1 | tail -4; done; } > $out/sanitizer.log 2>&1
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "elapsed $SECONDS"
