#!/usr/bin/env bash
# session 45 call 5: the two rows of call 4 where the final build was slower than HEAD's binary
# (8192x57344 3-bit M = 4 bf16, 2-bit M = 1 fp16), 6 alternating rounds with every plan logged,
# plus the neighbouring rows.
set -u
d=.dev; out=$OUT
tar -xJf $d/p45d.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p45d/lib
bin=$d/p45d/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
kb() { FLUTE_LUT_STRIP_PLAN_LOG=1 timeout 60 $bin/$1 --shapes 8192x57344 --m $2 --configs $3 --dtypes $4 --kernels auto-pdl --replays 9 2>&1 | grep -E "^\| [0-9]|strip plan" | awk -F'|' '/strip plan/{print; next} {printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ hdr "8192x57344: new (final) vs head (86737bc), alternating, 6 rounds"
  for r in 1 2 3 4 5 6; do
    echo "== new r$r"; kb flute-bench-kernel 3,4 3g128 bf16; kb flute-bench-kernel 1 2g128 fp16
    echo "== head r$r"; kb flute-bench-kernel-head 3,4 3g128 bf16; kb flute-bench-kernel-head 1 2g128 fp16
  done; } > $out/kbench-recheck.txt 2>&1
echo "elapsed $SECONDS"
