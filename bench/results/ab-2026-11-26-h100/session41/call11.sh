#!/usr/bin/env bash
# session 41 call 11: one-row strip calls read X as one LDS.128 per two sub-tiles (X in the
# one-row order; uncommitted on 63be69f, build p41m) — LutGemmGpuTest, sanitizer on the fused
# norm subset, shared-memory wavefronts (ncu), kernel alone at M = 1-2 against HEAD (p41a), 3 rounds
set -u
d=.dev; out=$OUT
for p in p41a p41m; do tar -xJf $d/$p.tar.xz -C $d; done
bin=$d/p41m/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmGpuTest.* (build p41m)"; LD_LIBRARY_PATH=$PWD/$d/p41m/lib timeout 200 $bin/kernel_tests --gtest_filter='LutGemmGpuTest.*' 2>&1; echo "rc=$?"; } > $out/strip-tests.log
grep -E "^\[  (PASSED|FAILED) |^rc=|FAILED" $out/strip-tests.log | tail -6; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck, LutGemmGpuTest.SanitizerSubsetFusedNorm (build p41m)"
  for tool in memcheck racecheck; do echo "## $tool"; LD_LIBRARY_PATH=$PWD/$d/p41m/lib timeout 60 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='LutGemmGpuTest.SanitizerSubsetFusedNorm' 2>&1 | tail -4; done
} > $out/sanitizer.log 2>&1
grep -E "SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "t=$SECONDS"
ncu=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
for b in p41a p41m; do for c in 2g128 3g128; do
  LD_LIBRARY_PATH=$PWD/$d/$b/lib timeout 40 $ncu --metrics l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,smsp__inst_executed.sum,gpu__time_duration.sum -k regex:LutGemmStrip --launch-skip 3 --launch-count 1 \
    $d/$b/bin/flute-bench-kernel --shapes 8192x57344 --m 1 --configs $c --dtypes fp16 --kernels auto --replays 1 2>&1 | grep -E "wavefronts|inst_executed|duration" | sed "s/^/$b $c /"
done; done
echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { local b=$1; shift; LD_LIBRARY_PATH=$PWD/$d/$b/lib timeout 100 $d/$b/bin/flute-bench-kernel --shapes $S --m $1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel: HEAD (p41a) vs one-row X order (p41m), alternating"
  for r in 1 2 3; do
    echo "== head r$r"; kb p41a 1,2 4g128,3g128,2g128,4g64 fp16; kb p41a 1 4g128,3g128,2g128 bf16
    echo "== m1 r$r"; kb p41m 1,2 4g128,3g128,2g128,4g64 fp16; kb p41m 1 4g128,3g128,2g128 bf16
    echo "t=$SECONDS" >&2
  done; } > $out/kbench-m1-x-order-ab.txt
grep "M= 1 " $out/kbench-m1-x-order-ab.txt | grep "57344\|28672x8192" | head -24
echo "elapsed $SECONDS"
