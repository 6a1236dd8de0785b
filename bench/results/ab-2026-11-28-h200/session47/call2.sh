#!/usr/bin/env bash
# session 47 call 2: HEAD (ee4a486) engine on the H200 — the engine's CUDA tests (../shared absent:
# the man-page parity tests skip), the 8B table (W4, bf16, batch-invariant, prefill 512 / 2048) and
# the 70B W4 table.
set -u
d=.dev; out=$OUT
tar -xJf $d/p47x.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47x/lib
bin=$d/p47x/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda* (no ../shared)"; timeout 120 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|rc=" $out/engine-cuda-tests.log; echo "t=$SECONDS"
{ hdr "flute bench e2e --shape 8b --weights w4,dense --compare-invariant --prefill 512,2048"
  timeout 240 $bin/flute bench e2e --shape 8b --weights w4,dense --compare-invariant --prefill 512,2048 --json $out/e2e-8b.json --markdown $out/e2e-8b.md 2>&1 | tail -30; echo "rc=$?"; } > $out/e2e-8b.log 2>&1
grep -E "^\| 8b" $out/e2e-8b.log; echo "t=$SECONDS"
{ hdr "flute bench e2e --shape 70b --weights w4 --prefill 512,2048"
  timeout $((560-SECONDS)) $bin/flute bench e2e --shape 70b --weights w4 --prefill 512,2048 --json $out/e2e-70b.json --markdown $out/e2e-70b.md 2>&1 | tail -20; echo "rc=$?"; } > $out/e2e-70b.log 2>&1
grep -E "^\| 70b|rc=" $out/e2e-70b.log
echo "elapsed $SECONDS"
