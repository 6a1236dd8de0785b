#!/usr/bin/env bash
# session 45 call 7: the test file after factoring the device-X launch helper (UploadX,
# RunOnDeviceX) out of the resident-X and strip-groups tests — every LUT-GEMM GPU test again.
set -u
d=.dev; out=$OUT
tar -xJf $d/p45f.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45f/lib
bin=$d/p45f/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter='LutGemm*' (final test file)"
  timeout 300 $bin/kernel_tests --gtest_filter='LutGemm*' 2>&1 | grep -vE "^FLUTE_LUT_STRIP=|^\[ RUN|^\[       OK|worst normalized error"; echo "rc=$?"; } > $out/kernel-tests-lut.log
tail -4 $out/kernel-tests-lut.log; grep -E "groups per block|FAILED" $out/kernel-tests-lut.log | head
echo "elapsed $SECONDS"
