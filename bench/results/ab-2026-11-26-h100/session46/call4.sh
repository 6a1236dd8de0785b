#!/usr/bin/env bash
# session 46 call 4: the final build (one-round groups for plain calls only; the engine's launches keep
# HEAD's plans) — LUT GPU tests, compute-sanitizer on the one-round launches, the full benchmark
# tables (fp16, bf16), and one more alternating round of M = 2-8 against FLUTE_LUT_STRIP_ONEROUND=off.
set -u
d=.dev; out=$OUT
tar -xJf $d/p46d.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p46d/lib
bin=$d/p46d/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests LutGemm*"
  timeout 300 $bin/kernel_tests --gtest_filter='LutGemm*' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/kernel-tests-lut.log
grep -E "^\[  (PASSED|FAILED) |tests ran|groups per block" $out/kernel-tests-lut.log | tail -8; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck: StripPlanTakesOneRoundGroups"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 100 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.StripPlanTakesOneRoundGroups' 2>&1 | tail -4; done; } > $out/sanitizer.log 2>&1
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for dt in fp16 bf16; do
  timeout 120 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > /dev/null 2>&1; echo "table $dt rc=$? t=$SECONDS"
done
S5=4096x6144,4096x4096,14336x4096,8192x10240,8192x8192
kb() { local dt=$1; shift; env "$@" timeout 100 $bin/flute-bench-kernel --shapes $S5 --m 2,3,4,5,6,8 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 2>/dev/null | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "M = 2-8 A/B: final build vs FLUTE_LUT_STRIP_ONEROUND=off, alternating, 1 round"
  for dt in fp16 bf16; do echo "== new $dt r1"; kb $dt FLUTE_LUT_STRIP_ONEROUND=on; echo "== off $dt r1"; kb $dt FLUTE_LUT_STRIP_ONEROUND=off; done; } > $out/kbench-m2-8-oneround-final.txt
tar -cf $out/tables.tar -C $out lut-gemm-fp16.md lut-gemm-fp16.json lut-gemm-bf16.md lut-gemm-bf16.json && rm -f $out/lut-gemm-*.md $out/lut-gemm-*.json
echo "elapsed $SECONDS"
