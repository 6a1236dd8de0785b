#!/usr/bin/env bash
# session 49 call 4 (carry .dev/p49d.tar.xz): 4 bits at M = 6 and 8 on the K = 8192 shapes, where the
# plan stages X (a resident X of 8 rows is 128 KB beside the 32 KB pair table): strip groups with one
# tile per warp (8 KB stages) keep X resident with 2-3 pipelines in one block per SM. Forced plans
# (FLUTE_LUT_STRIP=tpw,stages@KxN, FLUTE_LUT_STRIP_GROUPS) on the strip kernel against the default plan
# and the tensor-core kernel (auto's choice), 2 rounds, fp16, 4-bit G128 and G64.
set -u
d=.dev; out=$OUT
[ -d $d/p49d ] || tar -xJf $d/p49d.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p49d/lib
bin=$d/p49d/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
kb() { local shape=$1 kernels=$2; shift 2; env FLUTE_LUT_STRIP_PLAN_LOG=1 "$@" timeout 60 $bin/flute-bench-kernel --shapes $shape --m 6,8 --configs 4g128,4g64 --dtypes fp16 --kernels $kernels --replays 9 2>&1 | grep -E "^\| [0-9]|^strip plan" | awk -F'|' '/^strip plan/ {print "  " $0; next} {printf "%s %s M=%s %s %s %s us %s%% x%s\n", $2, $3, $4, $5, $6, $7, $9, $11}'; }
{ for r in 1 2; do
    for shape in 8192x57344 8192x10240 8192x8192; do
      hdr "r$r $shape default: strip-pdl,tc-pdl"; kb $shape strip-pdl,tc-pdl
      for v in "1,2 3" "1,2 2" "1,3 2" "2,2 2" "1,3 3"; do
        set -- $v
        hdr "r$r $shape FLUTE_LUT_STRIP=$1@$shape FLUTE_LUT_STRIP_GROUPS=$2"; kb $shape strip-pdl FLUTE_LUT_STRIP=$1@$shape FLUTE_LUT_STRIP_GROUPS=$2
      done
    done
  done; } > $out/kbench-m6-8-groups-tpw1.txt 2>&1
echo "elapsed $SECONDS"
