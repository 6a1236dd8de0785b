#!/usr/bin/env bash
# session 40 call 8 (after call1.sh's shared unpack on the same warm machine): final build f260841 —
# engine CUDA tests; 8B W4 prefill of 64 / 128 tokens (MT = 128 calls of <= 128 rows) against
# FLUTE_LUT_TC_RAWSCALES=off, 3 rounds
set -u
d=.dev; out=$OUT
[ -d $d/shared/models ] || echo "shared gone (machine not warm): engine parity tests will skip"
tar -xJf $d/p40g.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p40g/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/p40g/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 (build $(cat $d/build-id)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda*"; timeout 150 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|rc=" $out/engine-cuda-tests.log | head -5; echo "t=$SECONDS"
{ for r in 1 2 3; do
    echo "== raw r$r"; timeout 90 $bin/flute bench e2e --shape 8b --weights w4 --batches 1 --steps 8 --prefill 64,128 2>&1 | grep -E "^\| 8b.*prefill"
    echo "== off r$r"; FLUTE_LUT_TC_RAWSCALES=off timeout 90 $bin/flute bench e2e --shape 8b --weights w4 --batches 1 --steps 8 --prefill 64,128 2>&1 | grep -E "^\| 8b.*prefill"
  done; } > $out/e2e-prefill128-rawscales-ab.txt 2>&1
cat $out/e2e-prefill128-rawscales-ab.txt; echo "elapsed $SECONDS"
