#!/usr/bin/env bash
# session 41 call 5: why Stream-K at MT = 16 loses (build p41c = streamk-mt16-not-kept.patch on
# 63be69f): ncu of 4096x28672 at M = 16, bf16 4-bit G128, classic plan (FLUTE_LUT_TC_STREAMK=off)
# against Stream-K (default in that build), same binary
set -u
d=.dev; out=$OUT
tar -xJf $d/p41c.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p41c/lib
bin=$d/p41c/bin
ncu=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
for v in classic streamk; do
  if [ $v = classic ]; then export FLUTE_LUT_TC_STREAMK=off; else unset FLUTE_LUT_TC_STREAMK; fi
  timeout 150 $ncu --set full --import-source no -k regex:TcLutGemm --launch-skip 3 --launch-count 1 -o $out/ncu-$v \
    $bin/flute-bench-kernel --shapes 4096x28672 --m 16 --configs 4g128 --dtypes bf16 --kernels auto --replays 1 > /dev/null 2>&1
  echo "$v ncu rc=$? t=$SECONDS"
  $ncu -i $out/ncu-$v.ncu-rep --page details > $out/ncu-$v-details.txt 2>&1
  $ncu -i $out/ncu-$v.ncu-rep --page source --csv --print-source sass 2> /dev/null | xz -9 > $out/ncu-$v-sass.csv.xz
  rm -f $out/ncu-$v.ncu-rep
  grep -E "TcLutGemm|Duration|SM Frequency|Executed Instructions  |Registers Per|Grid Size|Achieved Active Warps|Issued Warp|Eligible Warps|No Eligible|Local" $out/ncu-$v-details.txt | head -14
done
echo "elapsed $SECONDS"
