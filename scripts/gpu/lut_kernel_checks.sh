#!/usr/bin/env bash
# The LUT-GEMM kernels' checks on the GPU machine (issue 5), run from the repository root:
#   bash scripts/gpu/lut_kernel_checks.sh STAGE...
#   STAGE: tests | sanitize | sass | bench-ab | tune | bench-full
# Expects .dev/pack-kernel.tar.xz (kernel_tests, flute-bench-kernel and the kernels' object
# files, built and packed on the development machine). Logs go to $OUT, headed with the date
# and the card.
set -u
out=${OUT:?set OUT}
d=.dev
rm -rf $d/pack-kernel && tar -xJf $d/pack-kernel.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/pack-kernel/lib
bin=$d/pack-kernel/bin
header() { echo "# $1 — $(date -u +%F) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
shapes=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192

for stage in "$@"; do
  case $stage in
    tests)
      { header "kernel_tests --gtest_filter=LutGemm*"; timeout 300 $bin/kernel_tests --gtest_filter='LutGemm*' 2>&1; echo "rc=$?"; } > $out/lut-gemm-tests.log
      grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[       OK|FAILED|Failure|rc=" $out/lut-gemm-tests.log | tail -25 ;;
    sanitize)
      { header "compute-sanitizer memcheck + racecheck, SanitizerSubset"
        for tool in memcheck racecheck; do
          timeout 200 compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='*SanitizerSubset*' 2>&1 | tail -4
        done; } > $out/lut-gemm-sanitizer.log 2>&1
      cat $out/lut-gemm-sanitizer.log ;;
    sass)  # instruction mix of the kernels' main loops
      for o in $bin/*.o; do cuobjdump -sass $o > $out/$(basename $o .o).sass 2>&1; done
      ls -la $out/*.sass ;;
    bench-ab)  # split-K vs strip (with and without PDL), decode sizes, same process
      timeout 500 $bin/flute-bench-kernel --shapes $shapes --m 1,2,4,8 --configs 4g128,3g128,2g128,4g64 --dtypes fp16 \
        --kernels splitk,strip,strip-pdl --replays 9 --md $out/lut-ab.md --json $out/lut-ab.json 2> $out/lut-ab.log
      echo "rc=$?"; tail -3 $out/lut-ab.log ;;
    tune)  # the strip kernel's (tiles per warp, stages) configurations against the automatic plan
      for cfg in auto 1,4 1,3 2,2 2,4; do
        [ $cfg = auto ] && unset FLUTE_LUT_STRIP || export FLUTE_LUT_STRIP=$cfg
        echo "## FLUTE_LUT_STRIP=$cfg"
        timeout 200 $bin/flute-bench-kernel --shapes $shapes --m 1,4 --configs 4g128,2g128 --dtypes fp16 \
          --kernels strip --replays 9 2>&1 >/dev/null | grep -E "strip|error"
      done > $out/lut-tune.log 2>&1; unset FLUTE_LUT_STRIP
      echo "tune done" ;;
    bench-full)
      timeout 560 $bin/flute-bench-kernel --kernels auto,auto-pdl --replays 9 --md $out/lut-full.md --json $out/lut-full.json 2> $out/lut-full.log
      echo "rc=$?"; tail -3 $out/lut-full.log ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
