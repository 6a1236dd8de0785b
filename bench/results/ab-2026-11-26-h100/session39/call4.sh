#!/usr/bin/env bash
# session 39 call 4: build with the own slice on chip at MT = 128 only (strip kernel as at HEAD) —
# kernel GPU tests (all), sanitizer subsets; strip-kernel plan sweep at M = 2-4 (why is M = 4 so
# much slower than M = 2 on the large shapes?)
set -u
tar -xJf .dev/p39d.tar.xz -C .dev
d=.dev/p39d/bin; export LD_LIBRARY_PATH=$PWD/.dev/p39d/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
kb() { timeout 60 $d/flute-bench-kernel --shapes $1 --m $2 --configs $3 --dtypes $4 --kernels ${5:-auto-pdl} --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
S=8192x57344,28672x8192,8192x10240,14336x4096,4096x28672
{ hdr "strip plan sweep: default vs FLUTE_LUT_STRIP=tpw,stages x FLUTE_LUT_STRIP_X, M = 1-4, 2 rounds"
  for r in 1 2; do
    echo "== default r$r"; kb $S 1,2,3,4 4g128,2g128 fp16
    for x in staged resident; do
      for cfg in 1,2 1,3 1,4 2,2 2,3 2,4; do
        echo "== x=$x cfg=$cfg r$r"; FLUTE_LUT_STRIP_X=$x FLUTE_LUT_STRIP=$cfg kb $S 2,3,4 4g128,2g128 fp16
      done
    done
  done
} > $out/kbench-strip-sweep.txt 2>&1
echo "t=$SECONDS"
{ hdr "kernel_tests (all GPU kernels)"; timeout 330 $d/kernel_tests 2>&1; echo "rc=$?"; } > $out/kernel-gpu-tests.log
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^rc=|tests ran|FAILED|spread reduction|cluster splits" $out/kernel-gpu-tests.log | tail -8; echo "t=$SECONDS"
