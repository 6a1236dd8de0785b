#!/usr/bin/env bash
# session 41 call 6: Stream-K at MT = 16 with the opaque zero on the thread index only (v1) and
# without it (v2), against the classic plan (v1's binary, FLUTE_LUT_TC_STREAMK=off); 3 rounds
set -u
d=.dev; out=$OUT
tar -xJf $d/p41h.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p41h/lib
bin=$d/p41h/bin
ncu=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
for v in v1 v2; do
  $ncu --metrics smsp__inst_executed.sum,gpu__time_duration.sum,launch__registers_per_thread -k regex:TcLutGemm --launch-skip 3 --launch-count 1 \
    $bin/flute-bench-kernel-$v --shapes 4096x28672 --m 16 --configs 4g128 --dtypes bf16 --kernels auto --replays 1 2>&1 | grep -E "TcLutGemm|inst_executed|duration|registers" | sed "s/^/$v /"
done
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { local b=$1; shift; timeout 100 $bin/flute-bench-kernel-$b --shapes $S --m $1 --configs $2 --dtypes $3 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s %s M=%s %s %s us %s%% x%s\n", $2, $3, $4, $5, $7, $9, $11}'; }
{ for r in 1 2 3; do
    echo "== v1 r$r"; kb v1 8,16 4g128,3g128,2g128 fp16,bf16
    echo "== v2 r$r"; kb v2 8,16 4g128,3g128,2g128 fp16,bf16
    echo "== off r$r"; FLUTE_LUT_TC_STREAMK=off kb v1 8,16 4g128,3g128,2g128 fp16,bf16
  done; } > $out/kbench-streamk16-v1-v2.txt
grep 28672 $out/kbench-streamk16-v1-v2.txt | grep "4096x28672" | head -40
echo "elapsed $SECONDS"
