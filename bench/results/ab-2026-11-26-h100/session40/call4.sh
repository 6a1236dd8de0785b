#!/usr/bin/env bash
# session 40 call 4: ncu of the M = 128 calls that trail or tie cuBLAS (4096x6144: clusters of 2
# splits, 96 blocks; 4096x4096: 4 splits spread), 4-bit G128 fp16, build 9a66a65
set -u
d=.dev; out=$OUT
tar -xJf $d/p40b.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p40b/lib
bin=$d/p40b/bin
ncu=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
for s in 4096x6144 4096x4096; do
  timeout 60 $bin/flute-bench-kernel --shapes $s --m 128 --configs 4g128 --dtypes fp16 --kernels auto --replays 9 2>&1 | grep -E "M=128" | head -2
  timeout 200 $ncu --set full --import-source no -k regex:TcLutGemm --launch-skip 5 --launch-count 1 -o $out/ncu-$s \
    $bin/flute-bench-kernel --shapes $s --m 128 --configs 4g128 --dtypes fp16 --kernels auto --replays 1 > /dev/null 2>&1
  echo "$s ncu rc=$? t=$SECONDS"
  $ncu -i $out/ncu-$s.ncu-rep --page details > $out/ncu-$s-details.txt 2>&1
  $ncu -i $out/ncu-$s.ncu-rep --page source --csv --print-source sass 2> /dev/null | xz -9 > $out/ncu-$s-sass.csv.xz
  grep -E "Duration|Elapsed Cycles|SM Active Cycles|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Grid Size|No Eligible|Issued Warp|Eligible Warps|One or More" $out/ncu-$s-details.txt | head -20
done
echo "elapsed $SECONDS"
