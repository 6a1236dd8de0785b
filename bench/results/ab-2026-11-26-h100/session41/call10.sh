#!/usr/bin/env bash
# session 41 call 10: the plain MT = 128 kernel's classic calls on warp-uniform segments, Stream-K
# in a kernel of its own (uncommitted on 63be69f, build p41l) — tensor-core tests, sanitizer on
# the spread subset, kernel alone at M = 65-512 against HEAD (p41a), 3 rounds, and the full
# LUT-GEMM tables
set -u
d=.dev; out=$OUT
for p in p41a p41l; do tar -xJf $d/$p.tar.xz -C $d; done
bin=$d/p41l/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc* (build p41l)"; LD_LIBRARY_PATH=$PWD/$d/p41l/lib timeout 200 $bin/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED) |^rc=|FAILED" $out/tc-tests.log | tail -6; echo "t=$SECONDS"
{ hdr "compute-sanitizer memcheck + racecheck, *SpreadSanitizerSubset* (build p41l)"
  for tool in memcheck racecheck; do echo "## $tool"; LD_LIBRARY_PATH=$PWD/$d/p41l/lib timeout 80 /usr/local/cuda/bin/compute-sanitizer --tool $tool $bin/kernel_tests --gtest_filter='*SpreadSanitizerSubset*' 2>&1 | tail -4; done
} > $out/sanitizer.log 2>&1
grep -E "SUMMARY|PASSED|FAILED" $out/sanitizer.log; echo "t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { local b=$1; shift; LD_LIBRARY_PATH=$PWD/$d/$b/lib timeout 100 $d/$b/bin/flute-bench-kernel --shapes $S --m $1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel: HEAD (p41a) vs p41l, alternating"
  for r in 1 2 3; do
    echo "== head r$r"; kb p41a 65,96,128 4g128,3g128,2g128,4g64 fp16; kb p41a 128,256,512 4g128 bf16
    echo "== uni3 r$r"; kb p41l 65,96,128 4g128,3g128,2g128,4g64 fp16; kb p41l 128,256,512 4g128 bf16
    echo "t=$SECONDS" >&2
  done; } > $out/kbench-uniform-classic-mt128-own-sk-ab.txt
echo "t=$SECONDS"
for dt in fp16 bf16; do
  [ $SECONDS -gt 440 ] && { echo "skipped $dt table (time)"; continue; }
  LD_LIBRARY_PATH=$PWD/$d/p41l/lib timeout 70 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > /dev/null 2>&1
  echo "$dt rc=$? t=$SECONDS"
done
echo "elapsed $SECONDS"
