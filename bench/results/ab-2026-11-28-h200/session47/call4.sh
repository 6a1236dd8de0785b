#!/usr/bin/env bash
# session 47 call 4: why the table's 8192x57344 / 28672x8192 M = 1 rows (call 1: 113.9 / 57.8 us)
# were slower than the same kernel in call 1's and call 3's other runs (86-87 / 44 us): the full
# table command again with every strip plan logged, then the two shapes alone.
set -u
d=.dev; out=$OUT
tar -xJf $d/p47x.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47x/lib
bin=$d/p47x/bin
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for r in 1 2; do
FLUTE_LUT_STRIP_PLAN_LOG=1 timeout 100 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes fp16 --kernels auto-pdl --replays 9 > $out/table-r$r.txt 2>&1
echo "table r$r t=$SECONDS"
done
grep -E "k=8192 n=57344 b=4 G=128 m=1 |k=28672 n=8192 b=4 G=128 m=1 " $out/table-r1.txt $out/table-r2.txt
grep -E "^\| (8192x57344|28672x8192) \| fp16 \| 1 \| 4b-g128" $out/table-r1.txt $out/table-r2.txt
for r in 1 2; do
FLUTE_LUT_STRIP_PLAN_LOG=1 timeout 60 $bin/flute-bench-kernel --shapes 8192x57344,28672x8192 --m 1,2 --configs 4g128 --dtypes fp16 --kernels auto-pdl --replays 9 2>&1 | grep -E "strip plan|^\| [0-9]" 
done
echo "elapsed $SECONDS"
