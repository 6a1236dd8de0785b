#!/usr/bin/env bash
# session 37 call 4: ncu durations, 4096x6144 / 4096x4096 M=128 4g128 fp16: classic (cluster off), cluster, UB skip4 (no reduction)
set -u
tar -xJf .dev/p37c.tar.xz -C .dev; tar -xJf .dev/p37b.tar.xz -C .dev; out=$OUT
run() { # name env binary libdir shape
  LD_LIBRARY_PATH=$PWD/.dev/$4/lib env $2 timeout 100 /usr/local/cuda/bin/ncu --kernel-name regex:TcLutGemm --launch-skip 8 --launch-count 3 --section SpeedOfLight --section LaunchStats --section Occupancy --metrics gpu__time_duration.sum,sm__cycles_active.avg,sm__cycles_active.max,smsp__cycles_active.avg \
   $3 --shapes $5 --m 128 --configs 4g128 --dtypes fp16 --kernels auto-pdl --replays 1 > $out/ncu-$1-$5.txt 2>&1
  echo "== $1 $5"; grep -E "TcLutGemm|gpu__time_duration|sm__cycles_active|Grid Size|Cluster Size|Duration  " $out/ncu-$1-$5.txt | sed 's/(TcArgs).*//' | head -24
}
for sh in 4096x6144 4096x4096; do
  run classic FLUTE_LUT_TC_CLUSTER=off .dev/p37c/bin/flute-bench-kernel p37c $sh
  run cluster FLUTE_X=1 .dev/p37c/bin/flute-bench-kernel p37c $sh
  run ub4 FLUTE_UB_TC_SKIP=4 .dev/p37b/bin/flute-bench-kernel-ub p37b $sh
done
echo "elapsed $SECONDS"
