#!/usr/bin/env bash
# session 46 call 13: fourth version of the 16-row kernel (4 bits: the wide pair table, the stages in its rows) (lut_gemm_rows16.cu, X in registers; plain calls
# of 9-16 rows at k = 2048 / 4096, 2 and 4 bits): its GPU tests, then M = 9-16 against the
# tensor-core kernel (FLUTE_LUT_ROWS16=off) in alternating processes, and a sweep of its depth.
set -u
d=.dev; out=$OUT
tar -xJf $d/p46k.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p46k/lib
bin=$d/p46k/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests Rows16 + SwiGLU"
  timeout 200 $bin/kernel_tests --gtest_filter='LutGemmGpuTest.Rows16*:LutGemmGpuTest.SanitizerSubsetRows16:LutGemmGpuTest.SwiGluEpilogue*:LutGemmGpuTest.SmallShapes*' 2>&1 | grep -vE "^\[ RUN|^\[       OK|worst normalized error" | tail -30; echo "rc=$?"; } > $out/tests.log
tail -6 $out/tests.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,8192x8192
kb() { local dt=$1 m=$2; shift 2; env "$@" timeout 100 $bin/flute-bench-kernel --shapes $S --m $m --configs 4g128,2g128,4g64,3g128 --dtypes $dt --kernels auto-pdl --replays 9 2>&1 | grep -E "^\| [0-9]|rror" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "M = 9-16 A/B: rows16 (new) vs FLUTE_LUT_ROWS16=off, alternating, 2 rounds"
  for r in 1 2; do for dt in fp16 bf16; do
    echo "== new $dt r$r"; kb $dt 9,12,16 FLUTE_LUT_ROWS16=on; echo "== off $dt r$r"; kb $dt 9,12,16 FLUTE_LUT_ROWS16=off; echo "t=$SECONDS" >&2
  done; done
} > $out/kbench-rows16.txt 2>&1
echo "elapsed $SECONDS"
