#!/usr/bin/env bash
# session 48 call 1: one-row plain calls on the H200. (a) the plans of 2-8 rows at M = 1
# (FLUTE_LUT_STRIP_ONE_ROW=resident: X resident, ldmatrix loads; with FLUTE_LUT_STRIP_GROUPS=2|3
# strip groups), against the one-row instances; (b) the 2- and 4-bit one-group instances capped at
# 128 registers (bench-r128, built with FLUTE_STRIP_REGS_24=128) against 80 (bench-base), M = 1-4.
# Alternating processes, 2 rounds, fp16, the 8 playbook shapes.
set -u
d=.dev; out=$OUT
tar -xJf $d/p48a.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p48a/lib
bin=$d/p48a/bin
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
row() { grep -E "^\| [0-9]" | awk -F'|' '{printf "  %s M=%s %s %s us cublas %s\n",$2,$4,$5,$7,$10}'; }
kb() { local tag=$1 b=$2 m=$3; shift 3; echo "== $tag"; env "$@" timeout 120 $bin/$b --shapes $S --m $m --configs 4g128,3g128,2g128 --dtypes fp16 --kernels auto-pdl --replays 9 --cooldown-ms 100 2>/dev/null | row; }
FLUTE_LUT_STRIP_PLAN_LOG=1 FLUTE_LUT_STRIP_ONE_ROW=resident FLUTE_LUT_STRIP_GROUPS=3 timeout 60 $bin/bench-base --shapes $S --m 1 --configs 4g128,3g128,2g128 --dtypes fp16 --kernels auto-pdl --replays 1 2>&1 | grep "strip plan" > $out/plans-g3.txt
FLUTE_LUT_STRIP_PLAN_LOG=1 FLUTE_LUT_STRIP_ONE_ROW=resident timeout 60 $bin/bench-base --shapes $S --m 1 --configs 4g128,3g128,2g128 --dtypes fp16 --kernels auto-pdl --replays 1 2>&1 | grep "strip plan" > $out/plans-res.txt
echo "plans t=$SECONDS"
for r in 1 2; do
  kb "base m1 r$r" bench-base 1
  kb "resident m1 r$r" bench-base 1 FLUTE_LUT_STRIP_ONE_ROW=resident
  kb "resident g2 m1 r$r" bench-base 1 FLUTE_LUT_STRIP_ONE_ROW=resident FLUTE_LUT_STRIP_GROUPS=2
  kb "resident g3 m1 r$r" bench-base 1 FLUTE_LUT_STRIP_ONE_ROW=resident FLUTE_LUT_STRIP_GROUPS=3
  kb "r128 m1 r$r" bench-r128 1
  kb "r128 resident m1 r$r" bench-r128 1 FLUTE_LUT_STRIP_ONE_ROW=resident
  echo "t=$SECONDS" >&2
done > $out/one-row.txt
for r in 1 2; do
  kb "base m2-4 r$r" bench-base 2,3,4
  kb "r128 m2-4 r$r" bench-r128 2,3,4
  echo "t=$SECONDS" >&2
done > $out/regs-m2-4.txt
echo "elapsed $SECONDS"
