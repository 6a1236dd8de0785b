#!/usr/bin/env bash
# session 47 call 6: the card's power limits; the tensor-core kernel at M = 64 / 128 on the H200
# against cuBLAS with its environment knobs (FLUTE_LUT_TC=mt64, FLUTE_LUT_TC_STREAMK=on|off),
# alternating, 2 rounds, M = 64 / 128 rows only (no M = 1 rows after them).
set -u
d=.dev; out=$OUT
tar -xJf $d/p47x.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47x/lib
bin=$d/p47x/bin
nvidia-smi -q -d POWER,CLOCK,PERFORMANCE > $out/power.txt 2>&1; grep -iE "Power Limit|Max Clocks|SM  |Memory  " $out/power.txt | head -20
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { local tag=$1; shift; echo "== $tag"; env "$@" timeout 60 $bin/flute-bench-kernel --shapes $S --m 64,96,128 --configs 4g128,2g128 --dtypes fp16 --kernels auto-pdl --replays 9 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "  %s M=%s %s %s us cublas %s x%s\n",$2,$4,$5,$7,$10,$11}'; }
{ for r in 1 2; do kb "default r$r"; kb "mt64 r$r" FLUTE_LUT_TC=mt64; kb "streamk-off r$r" FLUTE_LUT_TC_STREAMK=off; kb "streamk-on r$r" FLUTE_LUT_TC_STREAMK=on; done; } > $out/tc-large-m.txt 2>&1
echo "elapsed $SECONDS"
