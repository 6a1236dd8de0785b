#!/usr/bin/env bash
# session 45 call 1: strip groups (2-3 strip pipelines per block sharing the pair table and a
# resident X), forced with FLUTE_LUT_STRIP_GROUPS — the new strip tests, then M = 2-8 timings:
# HEAD's binary (86737bc), the new binary at its default (1 group), 2 and 3 groups.
set -u
d=.dev; out=$OUT
tar -xJf $d/p45a.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45a/lib
bin=$d/p45a/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter='LutGemmGpuTest.Strip*'"
  timeout 200 $bin/kernel_tests --gtest_filter='LutGemmGpuTest.Strip*' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/strip-tests.log
tail -5 $out/strip-tests.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { timeout 120 $bin/$1 --shapes $S --m $2 --configs 4g128,2g128 --dtypes fp16 --kernels $3 --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "M = 2-4 auto-pdl: head / new g1 / new g2 / new g3, 1 round"
  echo "== head"; kb flute-bench-kernel-head 2,3,4 auto-pdl; echo "t=$SECONDS" >&2
  echo "== new g1"; kb flute-bench-kernel 2,3,4 auto-pdl; echo "t=$SECONDS" >&2
  for g in 2 3; do echo "== new g$g"; FLUTE_LUT_STRIP_GROUPS=$g kb flute-bench-kernel 2,3,4 auto-pdl; echo "t=$SECONDS" >&2; done
} > $out/kbench-m2-4-groups.txt
echo "t=$SECONDS"
{ hdr "M = 5, 8: head auto-pdl (tensor-core kernel on the large shapes) / new strip-pdl g1 g2 g3"
  echo "== head auto"; kb flute-bench-kernel-head 5,8 auto-pdl; echo "t=$SECONDS" >&2
  for g in 1 2 3; do echo "== new strip g$g"; FLUTE_LUT_STRIP_GROUPS=$g kb flute-bench-kernel 5,8 strip-pdl; echo "t=$SECONDS" >&2; done
} > $out/kbench-m5-8-groups.txt
echo "elapsed $SECONDS"
