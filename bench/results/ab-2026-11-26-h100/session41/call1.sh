#!/usr/bin/env bash
# session 41 call 1: ncu (full set, SASS source page) of the strip kernel at M = 1 on 8192x57344,
# fp16 G128, 4 / 3 / 2 bits, HEAD 63be69f: where the issue slots of the 3- and 2-bit loops go
set -u
d=.dev; out=$OUT
tar -xJf $d/p41a.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p41a/lib
bin=$d/p41a/bin
ncu=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 60 $bin/flute-bench-kernel --shapes 8192x57344,4096x28672 --m 1 --configs 4g128,3g128,2g128 --dtypes fp16 --kernels auto-pdl --replays 9 2>&1 | grep -E "M=1 "
for c in 3g128 2g128 4g128; do
  timeout 150 $ncu --set full --import-source no -k regex:LutGemmStrip --launch-skip 3 --launch-count 1 -o $out/ncu-$c \
    $bin/flute-bench-kernel --shapes 8192x57344 --m 1 --configs $c --dtypes fp16 --kernels auto --replays 1 > /dev/null 2>&1
  echo "$c ncu rc=$? t=$SECONDS"
  $ncu -i $out/ncu-$c.ncu-rep --page details > $out/ncu-$c-details.txt 2>&1
  $ncu -i $out/ncu-$c.ncu-rep --page source --csv --print-source sass 2> /dev/null | xz -9 > $out/ncu-$c-sass.csv.xz
  rm -f $out/ncu-$c.ncu-rep
  grep -E "Duration|SM Frequency|Executed Instructions  |Registers Per|Achieved Active Warps|Issued Warp|Eligible Warps|No Eligible" $out/ncu-$c-details.txt | head -12
done
echo "elapsed $SECONDS"
