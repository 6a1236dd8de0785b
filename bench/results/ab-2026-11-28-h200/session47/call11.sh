#!/usr/bin/env bash
# session 47 call 11: the H200 tables with the final benchmark (rows of M >= 64 after the smaller
# ones, 250 ms idle before each timed row; kernels of ee4a486): LUT-GEMM fp16 and bf16, and the
# dense GEMV (the bf16 engine's products, default shapes with the LM heads) in bf16.
set -u
d=.dev; out=$OUT
tar -xJf $d/p47c.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47c/lib
bin=$d/p47c/bin
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for dt in fp16 bf16; do
  timeout 200 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > /dev/null 2>&1; echo "table $dt rc=$? t=$SECONDS"
done
timeout 150 $bin/flute-bench-kernel --dense-gemv --dtypes bf16 --kernels gemv-pdl --md $out/dense-gemv-bf16.md --json $out/dense-gemv-bf16.json > /dev/null 2>&1; echo "dense rc=$? t=$SECONDS"
tar -cf $out/tables.tar -C $out $(cd $out && ls *.md *.json) && rm -f $out/*.json
echo "elapsed $SECONDS"
