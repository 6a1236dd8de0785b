#!/usr/bin/env bash
# session 42 call 2: plain one-row strip calls take codes and scales by cp.async.bulk, X resident
# (uncommitted on 25aa717, build p42b) — LutGemmGpuTest, sanitizer, shared-memory wavefronts (ncu),
# kernel alone at M = 1 against FLUTE_LUT_STRIP_BULK=off (the same binary), 3 alternating rounds
set -u
d=.dev; out=$OUT
tar -xJf $d/p42b.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p42b/lib
bin=$d/p42b/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmGpuTest.* (build p42b)"; timeout 240 $bin/kernel_tests --gtest_filter='LutGemmGpuTest.*' 2>&1; echo "rc=$?"; } > $out/strip-tests.log
grep -E "^\[  (PASSED|FAILED) |^rc=|FAILED|Bulk" $out/strip-tests.log | tail -8; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck, LutGemmGpuTest.StripKernelRowsDoNotDependOnM (M = 1 on the bulk path) (build p42b)"
  for tool in memcheck racecheck; do echo "## $tool"; timeout 60 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.StripKernelRowsDoNotDependOnM' 2>&1 | tail -4; done
} > $out/sanitizer.log 2>&1
grep -E "SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "t=$SECONDS"
ncu=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
for bulk in off on; do for c in 2g128 4g128; do
  FLUTE_LUT_STRIP_BULK=$bulk timeout 40 $ncu --metrics l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,smsp__inst_executed.sum,gpu__time_duration.sum -k regex:LutGemmStrip --launch-skip 3 --launch-count 1 \
    $bin/flute-bench-kernel --shapes 8192x57344 --m 1 --configs $c --dtypes fp16 --kernels auto --replays 1 2>&1 | grep -E "wavefronts|inst_executed|duration" | sed "s/^/bulk=$bulk $c /"
done; done
echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { FLUTE_LUT_STRIP_BULK=$1 timeout 100 $bin/flute-bench-kernel --shapes $S --m 1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel M = 1: FLUTE_LUT_STRIP_BULK=off vs on (default), alternating, build p42b"
  for r in 1 2 3; do
    echo "== off r$r"; kb off 4g128,3g128,2g128,4g64 fp16; kb off 4g128,3g128,2g128 bf16
    echo "== on r$r"; kb on 4g128,3g128,2g128,4g64 fp16; kb on 4g128,3g128,2g128 bf16
    echo "t=$SECONDS" >&2
  done; } > $out/kbench-m1-bulk-ab.txt
grep "57344\|28672x8192" $out/kbench-m1-bulk-ab.txt | grep fp16 | head -24
echo "elapsed $SECONDS"
