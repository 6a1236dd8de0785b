#!/usr/bin/env bash
# session 47 call 1: HEAD (ee4a486) on the first H200 — the card, every kernel GPU test, the full
# benchmark tables (fp16, bf16), and the kernel choices side by side (auto / strip / tc, PDL) at
# M = 1-32 on the 8 playbook shapes, 4-bit G128 fp16, to see where H100-tuned plans sit on this card.
set -u
d=.dev; out=$OUT
tar -xJf $d/p47a.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47a/lib
bin=$d/p47a/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ nvidia-smi; nvidia-smi -q | grep -iE "clocks|MHz|Bus Id|Product Name" | head -40; } > $out/card.txt 2>&1
{ hdr "kernel_tests (all GPU kernels)"; timeout 300 $bin/kernel_tests 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=${PIPESTATUS[0]}"; } > $out/kernel-gpu-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|tests ran|FAILED" $out/kernel-gpu-tests.log | tail -8; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for dt in fp16 bf16; do
  timeout 120 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > /dev/null 2>&1; echo "table $dt rc=$? t=$SECONDS"
done
{ hdr "kernel choices, 4g128 fp16 and 2g128 fp16, M = 1-32"
  timeout 150 $bin/flute-bench-kernel --shapes $S --m 1,2,3,4,6,8,9,12,16,24,32 --configs 4g128,2g128 --dtypes fp16 --kernels auto-pdl,strip-pdl,tc-pdl --replays 9 2>&1 | grep -E "^\|"; } > $out/kbench-choices.txt
echo "choices t=$SECONDS"
tar -cf $out/tables.tar -C $out lut-gemm-fp16.md lut-gemm-fp16.json lut-gemm-bf16.md lut-gemm-bf16.json && rm -f $out/lut-gemm-*.json
echo "elapsed $SECONDS"
