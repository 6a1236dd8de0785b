#!/usr/bin/env bash
# session 49 call 6 (carry .dev/p49g.tar.xz: the final build; kernel_tests and flute-bench-kernel with
# OneTilePerWarpForResidentX, 3 groups of one tile per warp only in one-round plans): (1) every GPU kernel test (log committed under tests/results/);
# (2) compute-sanitizer memcheck + racecheck on the new test's launches; (3) the new plan against
# FLUTE_LUT_STRIP_TPW1=off, same binary, alternating processes, M = 5-8, 1 round per dtype (2-bit: a control, its plans
# do not change); (4) issue 5's tables in fp16 and bf16.
set -u
d=.dev; out=$OUT
tar -xJf $d/p49g.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p49g/lib
bin=$d/p49g/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv; date -u; } > $out/kernel-gpu-tests.log
timeout 280 $bin/kernel_tests >> $out/kernel-gpu-tests.log 2>&1; echo "rc=$?" >> $out/kernel-gpu-tests.log
echo "tests t=$SECONDS"; grep -E "^\[  (PASSED|FAILED)|tests from .* ran|rc=" $out/kernel-gpu-tests.log | head
{ hdr "compute-sanitizer memcheck + racecheck: LutGemmGpuTest.StripPlanTakesOneTilePerWarpWhereXFillsSharedMemory"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 100 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.StripPlanTakesOneTilePerWarpWhereXFillsSharedMemory' 2>&1 | tail -4; echo "rc=$? t=$SECONDS"; done; } > $out/sanitizer.log 2>&1
cat $out/sanitizer.log
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { local dt=$1; shift; env "$@" timeout 80 $bin/flute-bench-kernel --shapes $S --m 5,6,7,8 --configs 4g128,4g64,2g128 --dtypes $dt --kernels auto-pdl --replays 9 2>/dev/null | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ for r in 1; do for dt in fp16 bf16; do
    [ $r = 2 ] && [ $dt = bf16 ] && continue
    hdr "== new $dt r$r"; kb $dt FLUTE_LUT_STRIP_TPW1=on
    hdr "== off $dt r$r"; kb $dt FLUTE_LUT_STRIP_TPW1=off
  done; done; } > $out/kbench-m7-8-tpw1-vs-off.txt 2>&1
echo "ab t=$SECONDS"
for dt in fp16 bf16; do
  timeout 150 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > /dev/null 2>&1; echo "table $dt rc=$? t=$SECONDS"
done
echo "elapsed $SECONDS"
