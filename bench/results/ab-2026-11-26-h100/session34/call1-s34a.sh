#!/usr/bin/env bash
# session 34 call 1: attention_decode split (kernels byte-identical): attention/RoPE GPU tests; 8B e2e A/B HEAD plugin (base33.so = d2a0788 code) vs split, alternating
set -u
d=.dev; out=$OUT
tar -xJf $d/p34a.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p34a/lib
bin=$d/p34a/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 (build $(cat $d/build-id)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "kernel_tests --gtest_filter='*Attention*:*RopeKvWrite*'"; timeout 200 $bin/kernel_tests --gtest_filter='*Attention*:*RopeKvWrite*' 2>&1 | grep -vE "^\[ RUN"; echo "rc=${PIPESTATUS[0]}"; } > $out/attention-gpu-tests.log 2>&1
grep -E "^\[  (PASSED|FAILED) |FAILED|rc=|tests from .* ran" $out/attention-gpu-tests.log | tail -6; echo "t=$SECONDS"
e2e() { timeout 60 $bin/flute bench e2e --shape 8b --weights w4,dense --batches 1,16,32 --prefill 0 2>&1 | grep -E "^\| 8b " | awk -F'|' '{printf "%s %s%s %s ms  ", $3, $5, $6+0, $8} END {print ""}'; }
{ hdr "8B e2e decode, w4 and bf16 in one process: base plugin (HEAD 8f8fc79 = d2a0788 kernels) / new (attention_decode split), 3 rounds alternating"
  for r in 1 2 3; do echo "base: $(FLUTE_CUDA_PLUGIN=$PWD/$bin/base33.so e2e)"; echo "new:  $(e2e)"; done
} > $out/e2e-attention-decode-split-ab.txt 2>&1; cat $out/e2e-attention-decode-split-ab.txt
echo "elapsed $SECONDS"
