#!/usr/bin/env bash
# session 48 call 4: the final kernel build of the session. Every GPU kernel test (log committed
# under tests/results/), then issue 5's tables in fp16 and bf16 (8 playbook shapes, M = 1-128,
# 4/3/2-bit G128 and 4-bit G64, cuBLAS and the copy bandwidth in the same run).
set -u
d=.dev; out=$OUT
tar -xJf $d/p48d.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p48d/lib
bin=$d/p48d/bin
{ nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv; date -u; } > $out/kernel-gpu-tests.log
timeout 300 $bin/kernel_tests >> $out/kernel-gpu-tests.log 2>&1; echo "rc=$?" >> $out/kernel-gpu-tests.log
echo "tests t=$SECONDS"; grep -E "^\[  (PASSED|FAILED)|tests from .* ran" $out/kernel-gpu-tests.log | head
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
for dt in fp16 bf16; do
  timeout 200 $bin/flute-bench-kernel --shapes $S --m 1,2,4,8,16,32,64,128 --configs 4g128,3g128,2g128,4g64 --dtypes $dt --kernels auto-pdl --replays 9 --md $out/lut-gemm-$dt.md --json $out/lut-gemm-$dt.json > /dev/null 2>&1; echo "table $dt rc=$? t=$SECONDS"
done
echo "elapsed $SECONDS"
