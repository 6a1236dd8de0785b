#!/usr/bin/env bash
# session 45 call 4: the final build (p45d: automatic strip groups; the one-group instances
# PTX-identical to HEAD's) — every kernel GPU test, the sanitizers on the grouped launches, the
# full benchmark tables (fp16, bf16), and M = 1-8 against HEAD's binary (86737bc) in alternating
# processes, 2 rounds, fp16 and bf16.
set -u
d=.dev; out=$OUT
tar -xJf $d/p45d.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45d/lib
bin=$d/p45d/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests (every kernel GPU test)"
  timeout 330 $bin/kernel_tests 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/kernel-gpu-tests.log
grep -E "^\[  (PASSED|FAILED) |tests ran|groups per block|spread|cluster splits" $out/kernel-gpu-tests.log | tail -8; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck: SanitizerSubsetStripGroups + SanitizerSubset"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 120 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.SanitizerSubsetStripGroups:LutGemmGpuTest.SanitizerSubset' 2>&1 | tail -4; done; } > $out/sanitizer.log 2>&1
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for dt in fp16 bf16; do
  timeout 90 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > /dev/null 2>&1; echo "table $dt rc=$? t=$SECONDS"
done
kb() { timeout 100 $bin/$1 --shapes $S --m 1,2,3,4,5,6,8 --configs 4g128,3g128,2g128,4g64 --dtypes $2 --kernels auto-pdl --replays 9 2>/dev/null | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "M = 1-8 A/B: new (final) vs head (86737bc), alternating, 2 rounds, fp16 and bf16"
  for r in 1 2; do for dt in fp16 bf16; do
    echo "== new $dt r$r"; kb flute-bench-kernel $dt; echo "== head $dt r$r"; kb flute-bench-kernel-head $dt; echo "t=$SECONDS" >&2
  done; done; } > $out/kbench-m1-8-vs-head.txt
tar -cf $out/tables.tar -C $out lut-gemm-fp16.md lut-gemm-fp16.json lut-gemm-bf16.md lut-gemm-bf16.json && rm -f $out/lut-gemm-*.md $out/lut-gemm-*.json
echo "elapsed $SECONDS"
