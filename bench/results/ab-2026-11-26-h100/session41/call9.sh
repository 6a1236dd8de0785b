#!/usr/bin/env bash
# session 41 call 9: MT = 128 plain calls without split-K in Stream-K take their one segment as
# warp-uniform values (no volatile copy, no opaque zero; Stream-K and the fused kernel as HEAD;
# uncommitted on 63be69f, build p41k) — the tensor-core tests, then kernel alone at M = 65-512
# against HEAD (p41a), 3 rounds
set -u
d=.dev; out=$OUT
for p in p41a p41k; do tar -xJf $d/$p.tar.xz -C $d; done
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter=LutGemmTc* (build p41k)"; LD_LIBRARY_PATH=$PWD/$d/p41k/lib timeout 200 $d/p41k/bin/kernel_tests --gtest_filter='LutGemmTc*' 2>&1; echo "rc=$?"; } > $out/tc-tests.log
grep -E "^\[  (PASSED|FAILED) |^rc=|FAILED" $out/tc-tests.log | tail -6; echo "t=$SECONDS"
ncu=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
for b in p41a p41k; do
  LD_LIBRARY_PATH=$PWD/$d/$b/lib $ncu --metrics smsp__inst_executed.sum,gpu__time_duration.sum,launch__registers_per_thread -k regex:TcLutGemm --launch-skip 3 --launch-count 1 \
    $d/$b/bin/flute-bench-kernel --shapes 4096x4096 --m 128 --configs 4g128 --dtypes fp16 --kernels auto --replays 1 2>&1 | grep -E "TcLutGemm|inst_executed|duration|registers" | sed "s/^/$b /"
done
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { local b=$1; shift; LD_LIBRARY_PATH=$PWD/$d/$b/lib timeout 100 $d/$b/bin/flute-bench-kernel --shapes $S --m $1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "flute-bench-kernel: HEAD (p41a) vs uniform MT = 128 segments (p41k), alternating"
  for r in 1 2 3; do
    echo "== head r$r"; kb p41a 65,96,128 4g128,3g128,2g128,4g64 fp16; kb p41a 128,256,512 4g128 bf16
    echo "== uni2 r$r"; kb p41k 65,96,128 4g128,3g128,2g128,4g64 fp16; kb p41k 128,256,512 4g128 bf16
    echo "t=$SECONDS" >&2
  done; } > $out/kbench-uniform-classic-mt128-ab.txt
grep "4096x4096 .*M= 128" $out/kbench-uniform-classic-mt128-ab.txt | head -24
echo "elapsed $SECONDS"
