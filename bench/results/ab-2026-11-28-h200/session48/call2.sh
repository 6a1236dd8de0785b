#!/usr/bin/env bash
# session 48 call 2: plain one-row calls with X resident in the one-row order (new kM1 copy-X
# instances). (1) GPU tests of the strip kernel (the new one-row file and the strip tests of
# lut_gemm_gpu_test.cc); (2) M = 1, fp16, 8 playbook shapes, 4/3/2-bit G128, alternating processes,
# 2 rounds: FLUTE_LUT_STRIP_ONE_ROW=staged (the old plan), the new default, resident with
# FLUTE_LUT_STRIP_GROUPS=1 (one-row order everywhere it fits), ldmatrix with GROUPS=1 (call 1's
# layout), resident with 2 and 3 groups (ldmatrix instances); the forced ones with FLUTE_LUT_STRIP_X=resident.
set -u
d=.dev; out=$OUT
tar -xJf $d/p48b.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p48b/lib
bin=$d/p48b/bin
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv > $out/card.txt
timeout 240 $bin/kernel_tests --gtest_filter='LutGemmStripOneRow*:LutGemmGpuTest.StripKernel*:LutGemmGpuTest.StripPlan*' > $out/strip-tests.log 2>&1
echo "tests rc=$? t=$SECONDS"; tail -4 $out/strip-tests.log
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
row() { grep -E "^\| [0-9]" | awk -F'|' '{printf "  %s M=%s %s %s us cublas %s\n",$2,$4+0,$5,$7,$10}'; }
kb() { local tag=$1; shift; echo "== $tag"; env "$@" timeout 90 $bin/flute-bench-kernel --shapes $S --m 1 --configs 4g128,3g128,2g128 --dtypes fp16 --kernels auto-pdl --replays 9 --cooldown-ms 100 2>/dev/null | row; }
for v in staged auto; do FLUTE_LUT_STRIP_PLAN_LOG=1 FLUTE_LUT_STRIP_ONE_ROW=$v timeout 60 $bin/flute-bench-kernel --shapes $S --m 1 --configs 4g128,3g128,2g128 --dtypes fp16 --kernels auto-pdl --replays 1 2>&1 | grep "strip plan" > $out/plans-$v.txt; done
for r in 1 2; do
  kb "staged r$r" FLUTE_LUT_STRIP_ONE_ROW=staged
  kb "auto r$r"
  kb "res-g1 r$r" FLUTE_LUT_STRIP_ONE_ROW=resident FLUTE_LUT_STRIP_GROUPS=1 FLUTE_LUT_STRIP_X=resident
  kb "ldm-g1 r$r" FLUTE_LUT_STRIP_ONE_ROW=ldmatrix FLUTE_LUT_STRIP_GROUPS=1 FLUTE_LUT_STRIP_X=resident
  kb "res-g2 r$r" FLUTE_LUT_STRIP_ONE_ROW=resident FLUTE_LUT_STRIP_GROUPS=2 FLUTE_LUT_STRIP_X=resident
  kb "res-g3 r$r" FLUTE_LUT_STRIP_ONE_ROW=resident FLUTE_LUT_STRIP_GROUPS=3 FLUTE_LUT_STRIP_X=resident
  echo "t=$SECONDS" >&2
done > $out/one-row.txt
echo "elapsed $SECONDS"
