#!/usr/bin/env bash
# session 47 call 9: the H200 tables with the two-pass benchmark (rows of M >= 64 timed after all
# smaller rows; kernels unchanged from ee4a486): LUT-GEMM fp16 and bf16, 2 processes each, and the
# dense GEMV (the bf16 engine's products) at M = 1-32.
set -u
d=.dev; out=$OUT
tar -xJf $d/p47b.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47b/lib
bin=$d/p47b/bin
q() { nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active --format=csv,noheader; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for r in 1 2; do for dt in fp16 bf16; do
  echo "[$(q)]"
  timeout 120 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt-r$r.md --json $out/lut-gemm-$dt-r$r.json > /dev/null 2>&1; echo "table $dt r$r rc=$? t=$SECONDS"
done; done
timeout 100 $bin/flute-bench-kernel --dense-gemv --dtypes bf16,fp16 --kernels gemv-pdl --md $out/dense-gemv.md --json $out/dense-gemv.json > /dev/null 2>&1; echo "dense rc=$? t=$SECONDS"
grep -E "^\| (8192x57344|28672x8192) \| fp16 \| 1 \| 4b-g128" $out/lut-gemm-fp16-r*.md
tar -cf $out/tables.tar -C $out $(cd $out && ls *.md *.json) && rm -f $out/*.json
echo "elapsed $SECONDS"
