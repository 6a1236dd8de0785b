#!/usr/bin/env bash
# session 48 call 7: the upper bound of the wide pair table in the strip kernel at 2 and 4 bits on
# the H200 (session 23 measured it on the H100: <= 1 % at 4 bits). bench-wide-ub is this session's
# final build with the lookups addressed as on the wide table (one PRMT, LDS [R + UR]) over the
# narrow one: WRONG OUTPUTS, timing only (the same instructions and bank pattern as a real wide
# table). Against the final build (p48d), alternating, 2 rounds, fp16, M = 1 / 2 / 4.
set -u
d=.dev; out=$OUT
tar -xJf $d/p48d.tar.xz -C $d; tar -xJf $d/p48f.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p48d/lib
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
row() { grep -E "^\| [0-9]" | awk -F'|' '{printf "  %s M=%s %s %s us cublas %s\n",$2,$4+0,$5,$7,$10}'; }
kb() { local tag=$1 b=$2; echo "== $tag"; timeout 90 $b --shapes $S --m 1,2,4 --configs 4g128,2g128 --dtypes fp16 --kernels auto-pdl --replays 9 --cooldown-ms 100 2>/dev/null | row; }
for r in 1 2; do
  kb "base r$r" $d/p48d/bin/flute-bench-kernel
  kb "wide-ub r$r" $d/p48f/bin/bench-wide-ub
  echo "t=$SECONDS" >&2
done > $out/wide-ub.txt
echo "elapsed $SECONDS"
