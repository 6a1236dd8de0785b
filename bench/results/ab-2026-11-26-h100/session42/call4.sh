#!/usr/bin/env bash
# session 42 call 4 (after call3.sh's shared unpack on the same warm machine): build 25aa717 —
# engine CUDA tests with the man-page model; the 8B e2e table (W4 + bf16 + batch-invariant)
set -u
d=.dev; out=$OUT
[ -d $d/shared/models ] || echo "shared gone (machine not warm): engine parity tests will skip"
tar -xJf $d/p42e.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p42e/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/p42e/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 (build $(cat $d/build-id)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda*"; timeout 150 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|rc=" $out/engine-cuda-tests.log; grep -c "SKIPPED" $out/engine-cuda-tests.log; echo "t=$SECONDS"
{ hdr "flute bench e2e --shape 8b --weights w4,dense --compare-invariant --prefill 512,2048"
  timeout 240 $bin/flute bench e2e --shape 8b --weights w4,dense --compare-invariant --prefill 512,2048 --json $out/e2e-8b.json --markdown $out/e2e-8b.md 2>&1 | tail -30; echo "rc=$?"; } > $out/e2e-8b.log 2>&1
tail -3 $out/e2e-8b.log; cat $out/e2e-8b.md 2>/dev/null | head -30; echo "t=$SECONDS"
echo "elapsed $SECONDS"
