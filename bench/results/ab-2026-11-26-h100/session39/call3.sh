#!/usr/bin/env bash
# session 39 call 3: strip kernel 2-bit register table, fixed selectors — LUT GPU tests; kbench
# r2 (no quad table in shared memory) vs r1 (quad table memory kept, unused) vs 6eb52f1 (base)
set -u
tar -xJf .dev/p39c.tar.xz -C .dev; tar -xJf .dev/base39.tar.xz -C .dev; tar -xJf .dev/r39.tar.xz -C .dev
d=.dev/p39c/bin; cp .dev/base39/flute-bench-kernel-base .dev/r39/flute-bench-kernel-r1 $d/; export LD_LIBRARY_PATH=$PWD/.dev/p39c/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests LutGemmGpuTest.*"; timeout 200 $d/kernel_tests --gtest_filter='LutGemmGpuTest.*' 2>&1; echo "rc=$?"; } > $out/lut-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|FAILED|\[       OK \] LutGemmGpuTest.StripKernelOneHot" $out/lut-tests.log | tail -12
echo "t=$SECONDS"
kb() { local b=$1; shift; timeout 100 $d/$b --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
{ hdr "flute-bench-kernel: 2-bit register table r2 (no table memory) vs r1 (table memory kept) vs 6eb52f1 (base), 3 rounds"
  for r in 1 2 3; do
    echo "== r2 r$r"; kb flute-bench-kernel $S 1,2,4 2g128 fp16
    echo "== r1 r$r"; kb flute-bench-kernel-r1 $S 1,2,4 2g128 fp16
    echo "== base r$r"; kb flute-bench-kernel-base $S 1,2,4 2g128 fp16
  done
} > $out/kbench-reg2.txt 2>&1
echo "elapsed $SECONDS"
