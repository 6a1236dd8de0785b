#!/usr/bin/env bash
# session 46 call 1: HEAD's binary (83ad3ae) only, environment knobs. Resident X with strip groups on
# the shapes whose strips do not reach 1.5 per pipeline (the K = 4096 / 14336 playbook shapes), which
# the plan never tried: default / X resident with 1, 2, 3 groups forced, M = 2-4 auto-pdl and
# M = 5-8 strip-pdl (the auto choice there, the tensor-core kernel, as baseline), 2 rounds, every
# plan logged.
set -u
d=.dev; out=$OUT
tar -xJf $d/p46a.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p46a/lib
bin=$d/p46a/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
S=4096x6144,4096x4096,14336x4096,8192x10240,8192x8192
kb() {  # tag m kernels [env...]
  local tag=$1 m=$2 k=$3; shift 3
  env FLUTE_LUT_STRIP_PLAN_LOG=1 "$@" timeout 100 $bin/flute-bench-kernel --shapes $S --m $m --configs 4g128,3g128,2g128 --dtypes fp16 --kernels $k --replays 9 > $out/raw-$tag.txt 2>&1
  echo "rc=$?" >> $out/raw-$tag.txt
  grep -E "^\| [0-9]" $out/raw-$tag.txt | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "M = 2-4 auto-pdl; M = 5-8 auto-pdl (base) and strip-pdl: default / X=resident groups 1,2,3; 2 rounds"
  for r in 1 2; do
    echo "== base r$r"; kb base-r$r 2,3,4 auto-pdl
    for g in 1 2 3; do echo "== res g$g r$r"; kb res-g$g-r$r 2,3,4 auto-pdl FLUTE_LUT_STRIP_X=resident FLUTE_LUT_STRIP_GROUPS=$g; done
    echo "== base58 r$r"; kb base58-r$r 5,6,8 auto-pdl
    echo "== strip58 r$r"; kb strip58-r$r 5,6,8 strip-pdl
    for g in 2 3; do echo "== strip58 res g$g r$r"; kb strip58-res-g$g-r$r 5,6,8 strip-pdl FLUTE_LUT_STRIP_X=resident FLUTE_LUT_STRIP_GROUPS=$g; done
    echo "t=$SECONDS" >&2
  done
} > $out/kbench.txt
grep -h "strip plan" $out/raw-*-r1.txt | sort | uniq > $out/plans.txt
grep -h "rc=" $out/raw-*.txt | sort | uniq -c
tar -cf $out/raw.tar -C $out $(cd $out && ls raw-*.txt) && rm -f $out/raw-*.txt
echo "elapsed $SECONDS"
