#!/usr/bin/env bash
# session 37 call 11: final build (578a672): full kernel tables fp16 / bf16, every kernel GPU test
set -u
d=.dev; out=$OUT
tar -xJf $d/p37k.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p37k/lib
bin=$d/p37k/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
for dt in fp16 bf16; do
  timeout 60 $bin/flute-bench-kernel --kernels auto-pdl --replays 9 --dtypes $dt --md $out/t-$dt.md --json $out/t-$dt.json > /dev/null 2>&1
  echo "table $dt rc=$? t=$SECONDS"
done
{ hdr "kernel_tests (all GPU kernels), build 578a672"; timeout $((330 - SECONDS)) $bin/kernel_tests 2>&1; echo "rc=$?"; } > $out/kernel-gpu-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|^\[  FAILED" $out/kernel-gpu-tests.log | tail -6
echo "elapsed $SECONDS"
