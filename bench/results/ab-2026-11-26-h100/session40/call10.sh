#!/usr/bin/env bash
# session 40 call 10: focused re-runs (build f260841) of the final tables' edge points: 4096x4096
# at M = 128 (4-bit G64 0.98x cuBLAS in the fp16 table) and 4096x28672 3-bit M = 8 (bf16 / fp16
# 1.102 in the tables), 5 rounds, both dtypes
set -u
d=.dev; out=$OUT
tar -xJf $d/p40f.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p40f/lib
bin=$d/p40f/bin
kb() { timeout 60 $bin/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes fp16,bf16 --kernels auto-pdl --replays 9 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ for r in 1 2 3 4 5; do
    echo "== f260841 r$r"; kb 4096x4096 128 4g128,4g64,3g128,2g128; kb 4096x28672 8 3g128,4g128
  done; } > $out/kbench-edge-points.txt 2>&1
cat $out/kbench-edge-points.txt | sort | awk '{k=$1" "$2" "$3" "$4; v[k]=v[k]" "$5; x[k]=x[k]" "$NF} END {for (k in v) print k, "us:" v[k], " x:" x[k]}' | sort
echo "elapsed $SECONDS"
