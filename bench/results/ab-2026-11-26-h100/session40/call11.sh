#!/usr/bin/env bash
# session 40 call 11 (experiment build on db3e462): the 128-row raw-scale loop with its refill
# after the second commit group's lookups (FLUTE_LUT_TC_LATEREFILL=1, kRawLateLoop) against the
# kept loop (refill after the first group), same binary, 3 rounds, M = 65-128
set -u
d=.dev; out=$OUT
tar -xJf $d/p40h.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p40h/lib
bin=$d/p40h/bin
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { timeout 90 $bin/flute-bench-kernel --shapes $S --m $1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ for r in 1 2 3; do
    echo "== late r$r"; FLUTE_LUT_TC_LATEREFILL=1 kb 65,96,128 4g128,3g128,4g64 fp16; FLUTE_LUT_TC_LATEREFILL=1 kb 128 4g128 bf16
    echo "== kept r$r"; kb 65,96,128 4g128,3g128,4g64 fp16; kb 128 4g128 bf16
  done; } > $out/kbench-late-refill-ab.txt 2>&1
echo "elapsed $SECONDS"
