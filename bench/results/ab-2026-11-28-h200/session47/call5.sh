#!/usr/bin/env bash
# session 47 call 5: the slow M = 1 rows of the large shapes in the full table (call 4: same plan,
# 108-120 us inside the full table, 86.4 alone). Order, configs and preceding load varied.
set -u
d=.dev; out=$OUT
tar -xJf $d/p47x.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47x/lib
bin=$d/p47x/bin
q() { nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu,temperature.memory,clocks_event_reasons.active --format=csv,noheader; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
R=28672x8192,8192x57344,8192x8192,8192x10240,14336x4096,4096x28672,4096x4096,4096x6144
kb() { local tag=$1; shift; echo "== $tag [$(q)]"; timeout 60 $bin/flute-bench-kernel "$@" --dtypes fp16 --kernels auto-pdl --replays 9 2>&1 | grep -E "^\| (8192x57344|28672x8192) \| fp16 \| (1|2) \| 4b-g128" | awk -F'|' '{printf "  %s M=%s %s us\n",$2,$4,$7}'; echo "   after [$(q)]"; }
kb "full table order" --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64
kb "reversed order" --shapes $R --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64
kb "alone" --shapes 8192x57344,28672x8192 --m 1,2 --configs 4g128
kb "alone, all M and configs" --shapes 8192x57344,28672x8192 --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64
kb "full order, 4g128 only" --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128
kb "full order, M 1-2 only" --shapes $S --m 1,2 --configs 4g128,3g128,2g128,4g64
kb "alone again" --shapes 8192x57344,28672x8192 --m 1,2 --configs 4g128
echo "elapsed $SECONDS"
