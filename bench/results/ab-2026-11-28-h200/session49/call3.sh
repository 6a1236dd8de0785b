#!/usr/bin/env bash
# session 49 call 3 (carry .dev/p49d.tar.xz: kernel_tests with the new sanitizer subset test and
# flute-bench-kernel, both of 91a801f's kernels): (1) compute-sanitizer memcheck + racecheck on the one-row
# copy-X instances (LutGemmStripOneRowGpuTest.ResidentXSanitizerSubset); (2) M = 5 and 8 on the strip
# kernel (X staged or resident, its plan) against the tensor-core kernel, in one process, 2 rounds,
# fp16, the 8 playbook shapes: is the M >= 5 rule (measured on the H100) right on the H200?
set -u
d=.dev; out=$OUT
tar -xJf $d/p49d.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p49d/lib
bin=$d/p49d/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests LutGemmStripOneRow*"; timeout 120 $bin/kernel_tests --gtest_filter='LutGemmStripOneRow*' 2>&1 | grep -E "^\[  |one-row launches"; } > $out/one-row-tests.log 2>&1
cat $out/one-row-tests.log; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck: LutGemmStripOneRowGpuTest.ResidentXSanitizerSubset"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 170 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmStripOneRowGpuTest.ResidentXSanitizerSubset' 2>&1 | tail -5; echo "rc=$? t=$SECONDS"; done; } > $out/sanitizer.log 2>&1
cat $out/sanitizer.log
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
{ for r in 1 2; do
    hdr "r$r M=5,8 fp16: auto-pdl, strip-pdl, tc-pdl in one process"
    timeout 120 $bin/flute-bench-kernel --shapes $S --m 5,8 --configs 4g128,3g128,2g128,4g64 --dtypes fp16 --kernels auto-pdl,strip-pdl,tc-pdl --replays 9 2>&1 | grep -E "^\| [0-9]|copy" | awk -F'|' '{printf "%s %s M=%s %s %s %s us %s%% x%s\n", $2, $3, $4, $5, $6, $7, $9, $11}'
  done; } > $out/kbench-m5-8-strip-vs-tc.txt 2>&1
echo "elapsed $SECONDS"
