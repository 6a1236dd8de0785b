#!/usr/bin/env bash
# session 44 call 5 (call 2 again, the one-row X loads as plain C++ predicated loads, zero elsewhere): the one-row X in lanes 0-3, plain and fused one-row calls (p44g) — strip and
# fused kernel tests, sanitizer on the one-row paths, and the M = 1 kernel A/B against HEAD's
# flute-bench-kernel (25aa717, from p42s) in alternating processes.
set -u
d=.dev; out=$OUT
tar -xJf $d/p44g.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p44g/lib
bin=$d/p44g/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests: strip, fused, small shapes, LLaMA shapes, SwiGLU, PDL"
  timeout 200 $bin/kernel_tests --gtest_filter='LutGemmGpuTest.Strip*:LutGemmGpuTest.Fused*:LutGemmGpuTest.SmallShapes*:LutGemmGpuTest.LlamaShapes:LutGemmGpuTest.SwiGlu*:LutGemmGpuTest.Pdl*:LutGemmGpuTest.SanitizerSubsetFusedNorm' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/kernel-tests.log
tail -3 $out/kernel-tests.log; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck: SanitizerSubsetFusedNorm (m = 1 fused, both instances) + StripKernelRowsDoNotDependOnM (plain m = 1)"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 100 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.SanitizerSubsetFusedNorm:LutGemmGpuTest.StripKernelRowsDoNotDependOnM' 2>&1 | tail -4; done; } > $out/sanitizer.log 2>&1
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { timeout 100 $bin/$1 --shapes $S --m 1 --configs 4g128,3g128,2g128 --dtypes $2 --kernels auto-pdl --replays 9 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "M = 1 A/B: p44b (new) vs flute-bench-kernel of 25aa717 (head), alternating, 2 rounds, fp16 and bf16"
  for r in 1 2; do for dt in fp16 bf16; do
    echo "== new $dt r$r"; kb flute-bench-kernel $dt; echo "== head $dt r$r"; kb flute-bench-kernel-head $dt; echo "t=$SECONDS" >&2
  done; done; } > $out/kbench-m1-vs-head.txt
echo "t=$SECONDS"
echo "elapsed $SECONDS"
