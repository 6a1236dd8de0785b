#!/usr/bin/env bash
# session 47 call 10: the benchmark's idle pause before each timed row (--cooldown-ms, two-pass
# order kept): 4-bit G128 fp16 on the 8 shapes, M = 1-128, with pauses of 0, 250 and 1000 ms,
# against each shape alone in its own process (M = 1, 2 and 128; no pause).
set -u
d=.dev; out=$OUT
tar -xJf $d/p47c.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47c/lib
bin=$d/p47c/bin
q() { nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active --format=csv,noheader; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
row() { grep -E "^\| [0-9]" | awk -F'|' '{printf "  %s M=%s %s us cublas %s\n",$2,$4,$7,$10}'; }
for cd in 0 250 1000; do
  echo "== cooldown $cd [$(q)]"; timeout 200 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128 --dtypes fp16 --kernels auto-pdl --replays 9 --cooldown-ms $cd 2>/dev/null | row; echo "t=$SECONDS" >&2
done > $out/cooldown.txt
echo "== alone [$(q)]" >> $out/cooldown.txt
for s in ${S//,/ }; do sleep 1; timeout 30 $bin/flute-bench-kernel --shapes $s --m 1,2,128 --configs 4g128 --dtypes fp16 --kernels auto-pdl --replays 9 --cooldown-ms 0 2>/dev/null | row; done >> $out/cooldown.txt
echo "elapsed $SECONDS"
