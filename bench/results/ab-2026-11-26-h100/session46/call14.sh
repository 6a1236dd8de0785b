#!/usr/bin/env bash
# session 46 call 14: the 16-row kernel as kept (4 bits on the wide pair table; plain calls without early weights) — every LUT GPU
# test, compute-sanitizer on its subset, the full benchmark tables (fp16, bf16), and M = 9-16 on the
# 8 playbook shapes against FLUTE_LUT_ROWS16=off (the tensor-core kernel), alternating, 2 rounds.
set -u
d=.dev; out=$OUT
tar -xJf $d/p46k.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p46k/lib
bin=$d/p46k/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests LutGemm*"
  timeout 300 $bin/kernel_tests --gtest_filter='LutGemm*' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/kernel-tests-lut.log
grep -E "^\[  (PASSED|FAILED) |tests ran" $out/kernel-tests-lut.log | tail -4; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck: SanitizerSubsetRows16"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 100 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.SanitizerSubsetRows16' 2>&1 | tail -4; done; } > $out/sanitizer.log 2>&1
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for dt in fp16 bf16; do
  timeout 120 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > /dev/null 2>&1; echo "table $dt rc=$? t=$SECONDS"
done
kb() { local dt=$1; shift; env "$@" timeout 100 $bin/flute-bench-kernel --shapes $S --m 9,12,16 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 2>/dev/null | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "M = 9-16 A/B: rows16 vs FLUTE_LUT_ROWS16=off, alternating, 2 rounds, 8 shapes"
  for r in 1 2; do for dt in fp16 bf16; do
    echo "== new $dt r$r"; kb $dt FLUTE_LUT_ROWS16=on; echo "== off $dt r$r"; kb $dt FLUTE_LUT_ROWS16=off; echo "t=$SECONDS" >&2
  done; done; } > $out/kbench-m9-16-rows16.txt
tar -cf $out/tables.tar -C $out lut-gemm-fp16.md lut-gemm-fp16.json lut-gemm-bf16.md lut-gemm-bf16.json && rm -f $out/lut-gemm-*.md $out/lut-gemm-*.json
echo "elapsed $SECONDS"
