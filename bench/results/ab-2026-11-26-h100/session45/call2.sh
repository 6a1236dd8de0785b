#!/usr/bin/env bash
# session 45 call 2: strip groups as template instances (kGroups = 1, 2, 3; the one-group
# instances compile as HEAD's) — the strip tests, then M = 2-8 timings: HEAD's binary (86737bc),
# the new binary at its default (1 group), and 2 and 3 groups forced (FLUTE_LUT_STRIP_GROUPS),
# with every plan logged (FLUTE_LUT_STRIP_PLAN_LOG).
set -u
d=.dev; out=$OUT
tar -xJf $d/p45b.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45b/lib
bin=$d/p45b/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter='LutGemmGpuTest.Strip*'"
  timeout 200 $bin/kernel_tests --gtest_filter='LutGemmGpuTest.Strip*' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/strip-tests.log
tail -5 $out/strip-tests.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() {  # binary m kernels tag
  FLUTE_LUT_STRIP_PLAN_LOG=1 timeout 120 $bin/$1 --shapes $S --m $2 --configs 4g128,3g128,2g128 --dtypes fp16 --kernels $3 --replays 7 > $out/raw-$4.txt 2>&1
  echo "rc=$?" >> $out/raw-$4.txt
  grep -E "^\| [0-9]" $out/raw-$4.txt | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "M = 2-4 auto-pdl: head / new g1 / new g2 / new g3, 2 rounds"
  for r in 1 2; do
  echo "== head r$r"; kb flute-bench-kernel-head 2,3,4 auto-pdl head-r$r; echo "t=$SECONDS" >&2
  echo "== new g1 r$r"; kb flute-bench-kernel 2,3,4 auto-pdl g1-r$r; echo "t=$SECONDS" >&2
  for g in 2 3; do echo "== new g$g r$r"; FLUTE_LUT_STRIP_GROUPS=$g kb flute-bench-kernel 2,3,4 auto-pdl g$g-r$r; echo "t=$SECONDS" >&2; done
  done
} > $out/kbench-m2-4-groups.txt
echo "t=$SECONDS"
{ hdr "M = 5-8: head auto-pdl (tensor-core kernel on the large shapes) / new strip-pdl g1 g2 g3"
  echo "== head auto"; kb flute-bench-kernel-head 5,6,8 auto-pdl head-m5; echo "t=$SECONDS" >&2
  for g in 1 2 3; do echo "== new strip g$g"; FLUTE_LUT_STRIP_GROUPS=$g kb flute-bench-kernel 5,6,8 strip-pdl strip-g$g-m5; echo "t=$SECONDS" >&2; done
} > $out/kbench-m5-8-groups.txt
grep -h "strip plan" $out/raw-g*-r1.txt $out/raw-strip-g*.txt | sort | uniq > $out/plans.txt
grep -h "rc=" $out/raw-*.txt | sort | uniq -c
echo "elapsed $SECONDS"
