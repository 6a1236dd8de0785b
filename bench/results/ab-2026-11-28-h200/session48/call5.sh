#!/usr/bin/env bash
# session 48 call 5: the engine with this session's plugin (its decode calls are fused, so they
# keep their instances; a plain one-row call now keeps X resident). (1) engine_tests *Cuda*
# without ../shared (the man-page tests skip); (2) the 8B decode points, W4 and bf16 in one process,
# 2 processes; (3) the gate/up projection at 4 stages in the engine (FLUTE_LUT_STRIP=2,4@4096x28672,
# the plain one-row calls' depth there; the early-weights rule gives 3) against the default,
# batch 1, alternating, 3 rounds.
set -u
d=.dev; out=$OUT
tar -xJf $d/p48e.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p48e/lib
bin=$d/p48e/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda* (no ../shared)"; timeout 200 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests-no-shared.log
echo "tests t=$SECONDS"; grep -E "^\[  (PASSED|FAILED|SKIPPED)|tests from .* ran" $out/engine-cuda-tests-no-shared.log | head
{ for r in 1 2; do
    hdr "r$r flute bench e2e --shape 8b --weights w4,dense --batches 1,16 --prefill 0 --steps 32"
    timeout 100 $bin/flute bench e2e --shape 8b --weights w4,dense --batches 1,16 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b |copy bandwidth"
  done
  for r in 1 2 3; do
    hdr "r$r default: --weights w4 --batches 1"
    timeout 100 $bin/flute bench e2e --shape 8b --weights w4 --batches 1 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b "
    hdr "r$r FLUTE_LUT_STRIP=2,4@4096x28672"
    FLUTE_LUT_STRIP=2,4@4096x28672 timeout 100 $bin/flute bench e2e --shape 8b --weights w4 --batches 1 --prefill 0 --steps 32 2>&1 | grep -E "^\| 8b "
  done; } > $out/e2e-points.txt 2>&1
cat $out/e2e-points.txt
echo "elapsed $SECONDS"
