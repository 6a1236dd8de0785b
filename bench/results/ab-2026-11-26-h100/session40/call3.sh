#!/usr/bin/env bash
# session 40 call 3 (same warm machine as call 2): the shared model and data, then the engine CUDA
# tests on build 9a66a65 (call 2 ran them on a fresh machine without the model), and the 70B table
set -u
d=.dev; out=$OUT
tar -xJf $d/shared.tar.xz -C $d
[ -d $d/p40a/bin ] || tar -xJf $d/p40a.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p40a/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/p40a/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 (build $(cat $d/build-id 2>/dev/null || echo 9a66a65)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda*"; timeout 150 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|rc=" $out/engine-cuda-tests.log; echo "t=$SECONDS"
{ hdr "flute bench e2e --shape 70b --weights w4 --prefill 512,2048"
  timeout 300 $bin/flute bench e2e --shape 70b --weights w4 --prefill 512,2048 --json $out/e2e-70b.json --markdown $out/e2e-70b.md 2>&1 | tail -20; echo "rc=$?"; } > $out/e2e-70b.log 2>&1
tail -3 $out/e2e-70b.log; echo "elapsed $SECONDS"
