#!/usr/bin/env bash
# session 43 call 2: build 25aa717 (p42s = HEAD) — where the 8B decode step goes now, W4 G128 and
# the bf16 engine at batches 1 and 16: graph replays with one kernel kind left out (--ablate),
# the full step before and after
set -u
d=.dev; out=$OUT
[ -d $d/p42s ] || tar -xJf $d/p42s.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p42s/lib
bin=$d/p42s/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
e2e() { timeout 120 $bin/flute bench e2e --shape 8b --weights w4,dense --batches 1,16 --prefill 0 --steps 32 "$@" 2>&1 | grep -E "^\| 8b \| (w4|bf16|dense) \| default \| decode" | awk -F'|' '{printf "%s batch %s %s ms\n", $3, $6, $8}'; }
{ hdr "flute bench e2e 8b w4,dense batches 1,16: --ablate one kind at a time"
  echo "== full r1"; e2e
  for k in "qkv proj" "attention" "o proj" "gate_up+swiglu" "down proj" "lm head" "add+rmsnorm"; do
    echo "== without $k"; e2e --ablate "$k"; echo "t=$SECONDS" >&2
  done
  echo "== full r2"; e2e
} > $out/e2e-ablate-b1-b16.txt
cat $out/e2e-ablate-b1-b16.txt
echo "elapsed $SECONDS"
