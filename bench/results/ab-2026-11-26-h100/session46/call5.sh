#!/usr/bin/env bash
# session 46 call 5: the large-M LUT path (dequantize, then cuBLAS) in pieces of output features
# that stay in L2 (FLUTE_DEQUANT_CHUNK_MB; unset: the whole matrix, HEAD's path). 8B W4 prefill of
# one 512- and one 2048-token prompt (the 2048 pass dequantizes; the 512 pass runs the LUT kernel
# unless FLUTE_LUT_KERNEL_MAX_ROWS moves it), alternating processes, 2 rounds; the bf16 engine in
# the first process.
set -u
d=.dev; out=$OUT
tar -xJf $d/p46e.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p46e/lib
bin=$d/p46e/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
pf() {  # tag weights [env...]
  local tag=$1 w=$2; shift 2
  echo "$tag: $(env "$@" timeout 120 $bin/flute bench e2e --shape 8b --weights $w --batches 1 --prefill 512,2048 --steps 4 2>&1 | grep -E "^\| 8b .* prefill" | awk -F'|' '{printf "%s %s tok %s ms  ", $3, $7+0, $8}')"; }
{ hdr "8B prefill ms: whole-matrix dequantize vs pieces of 16 / 32 / 48 MB; the 512 pass on the LUT kernel or (max rows 256) dequantized"
  pf "bf16 engine" dense
  for r in 1 2; do
    pf "head r$r" w4
    for mb in 16 32 48; do pf "pieces ${mb}MB r$r" w4 FLUTE_DEQUANT_CHUNK_MB=$mb; done
    pf "whole, 512 dequantized r$r" w4 FLUTE_LUT_KERNEL_MAX_ROWS=256
    for mb in 16 32 48; do pf "pieces ${mb}MB, 512 dequantized r$r" w4 FLUTE_DEQUANT_CHUNK_MB=$mb FLUTE_LUT_KERNEL_MAX_ROWS=256; done
    echo "t=$SECONDS" >&2
  done
} > $out/e2e-prefill-pieces.txt 2>&1
cat $out/e2e-prefill-pieces.txt
echo "elapsed $SECONDS"
