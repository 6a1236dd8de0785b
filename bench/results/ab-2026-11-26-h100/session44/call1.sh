#!/usr/bin/env bash
# session 44 call 1: one-row strip calls loading their X fragments in lanes 0-3 only (LdsX1) —
# strip-kernel GPU tests; the SASS of the one-row load; A/B against FLUTE_LUT_STRIP_M1X=all (all
# 32 lanes load, as before) in alternating processes, M = 1, 8 playbook shapes, 4/3/2-bit G128 fp16.
set -u
d=.dev; out=$OUT
tar -xJf $d/p44a.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p44a/lib
bin=$d/p44a/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests, strip kernel subset"
  timeout 200 $bin/kernel_tests --gtest_filter='LutGemmGpuTest.Strip*:LutGemmGpuTest.SmallShapes*:LutGemmGpuTest.LlamaShapes' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK" ; echo "rc=$?"; } > $out/strip-tests.log
tail -4 $out/strip-tests.log; echo "t=$SECONDS"
{ hdr "SASS of the one-row load"; export PATH=$PATH:/usr/local/cuda/bin
  which cuobjdump && cuobjdump -sass $bin/flute-bench-kernel 2>&1 | awk '/Function :/{f = /LutGemmStripKernelI6__halfLi2ELi2ELi0ELb0ELb1E/} f' | grep -E "Function|LDS|HMMA" | head -80; } > $out/sass-m1-2bit.txt 2>&1
head -5 $out/sass-m1-2bit.txt
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { timeout 100 $bin/flute-bench-kernel --shapes $S --m 1 --configs 4g128,3g128,2g128 --dtypes fp16 --kernels auto-pdl --replays 9 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s M=%s %s %s us %s%% x%s\n", $2, $4, $5, $7, $9, $11}'; }
{ hdr "M = 1 A/B: lanes 0-3 (new) vs FLUTE_LUT_STRIP_M1X=all (old), alternating, 3 rounds"
  for r in 1 2 3; do
    echo "== new r$r"; kb; echo "== old r$r"; FLUTE_LUT_STRIP_M1X=all kb; echo "t=$SECONDS" >&2
  done; } > $out/kbench-m1-x1-lanes.txt
echo "elapsed $SECONDS"
