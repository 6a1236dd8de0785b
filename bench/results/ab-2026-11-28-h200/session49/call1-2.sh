#!/usr/bin/env bash
# session 49 calls 1-2: the engine's CUDA tests with ../shared (the man-page model) on the H200, with
# session 48's final build (91a801f; p49e = engine_tests, libflute_cuda.so, libflute_spm.so).
# ../shared's archive (31.6 MB) and the pack (25.8 MB) do not fit one call's carry beside the tracked
# tree, so the archive goes in two pieces over two back-to-back calls on the same warm machine.
# call 1 (carry .dev/shpart.00):
#   cp .dev/shpart.00 /tmp/shpart.00
# call 2 (carry .dev/shpart.01 .dev/p49e.tar.xz):
set -u
cat /tmp/shpart.00 .dev/shpart.01 | tar -xJ -C .dev && tar -xJf .dev/p49e.tar.xz -C .dev || exit 1
export LD_LIBRARY_PATH=$PWD/.dev/p49e/lib FLUTE_SHARED_DIR=$PWD/.dev/shared FLUTE_CUDA_PLUGIN=$PWD/.dev/p49e/bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda* (build 91a801f, ../shared carried)"
  timeout 300 .dev/p49e/bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $OUT/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |rc=|ms total" $OUT/engine-cuda-tests.log; echo "t=$SECONDS"
echo "elapsed $SECONDS"
