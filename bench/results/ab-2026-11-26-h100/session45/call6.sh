#!/usr/bin/env bash
# session 45 call 6: the final build's engine (p45e: flute, engine_tests, the CUDA plugin) — the
# engine CUDA tests (no ../shared: the man-page parity tests skip) and the 8B decode step at
# batches 1 and 16 (W4 and the bf16 engine in the same process), 2 processes. The engine's LUT
# launches (fused, or early weights) keep one group per block and HEAD's PTX.
set -u
d=.dev; out=$OUT
tar -xJf $d/p45e.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45e/lib
bin=$d/p45e/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests *Cuda* (no ../shared)"; timeout 120 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1 | grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|tests? ran"; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
tail -4 $out/engine-cuda-tests.log; echo "t=$SECONDS"
{ hdr "flute bench e2e --shape 8b --weights w4,dense --batches 1,16 --prefill 0 --steps 32, 2 processes"
  for r in 1 2; do echo "== r$r"; timeout 150 $bin/flute bench e2e --shape 8b --weights w4,dense --batches 1,16 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b |copy bandwidth|^\| model" ; done; } > $out/e2e-8b-b1-b16.txt 2>&1
cat $out/e2e-8b-b1-b16.txt | head -30
echo "elapsed $SECONDS"
