#!/usr/bin/env bash
# session 47 calls 7-8: the engine's CUDA tests with ../shared (the man-page model) on the H200.
# ../shared's archive (31.6 MB) and the test binaries (19.5 MB) do not fit one call's carry beside the
# tracked tree, so the archive went in two pieces over two back-to-back calls on the same warm machine.
# call 7 (carry .dev/shpart.00):
#   cp .dev/shpart.00 /tmp/shpart.00
# call 8 (carry .dev/shpart.01 .dev/p47t9.tar.xz; p47t = engine_tests + libflute_cuda.so of ee4a486):
cat /tmp/shpart.00 .dev/shpart.01 | tar -xJ -C .dev && tar -xJf .dev/p47t9.tar.xz -C .dev &&
export LD_LIBRARY_PATH=$PWD/.dev/p47t/lib FLUTE_SHARED_DIR=$PWD/.dev/shared FLUTE_CUDA_PLUGIN=$PWD/.dev/p47t/bin/libflute_cuda.so &&
{ echo "# engine_tests --gtest_filter=*Cuda* (build ee4a486, ../shared carried) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
  timeout 240 .dev/p47t/bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $OUT/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |rc=|ms total" $OUT/engine-cuda-tests.log
