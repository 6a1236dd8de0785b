#!/usr/bin/env bash
# session 46 call 9: ncu of the 16-row kernel (4096x28672 4-bit G128 fp16, M = 16) against the strip
# kernel at M = 8 (3 groups) and the tensor-core kernel at M = 16, same shape: speed of light, warp
# states, memory.
set -u
d=.dev; out=$OUT
tar -xJf $d/p46h.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p46h/lib
bin=$d/p46h/bin
NCU=$(ls /usr/local/cuda/bin/ncu /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
prof() {  # tag m kernel-regex [env]
  local tag=$1 m=$2 re=$3; shift 3
  env "$@" timeout 150 $NCU --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis --section Occupancy --section SchedulerStats -k "regex:$re" -s 20 -c 1 \
    $bin/flute-bench-kernel --shapes 4096x28672 --m $m --configs 4g128 --dtypes fp16 --kernels auto --replays 3 > $out/ncu-$tag.txt 2>&1
  echo "$tag rc=$? t=$SECONDS"; }
prof rows16-m16 16 Rows16
prof tc-m16 16 TcLutGemm FLUTE_LUT_ROWS16=off
prof strip-m8 8 LutGemmStripKernel
grep -hE "^  [A-Za-z]|==PROF==|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Issue Slots|Eligible Warps|Active Warps|No Eligible|Stall" $out/ncu-*.txt | head -5
for f in $out/ncu-*.txt; do echo "== $f"; grep -E "Duration|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Issued Warp Per Scheduler|No Eligible|Active Warps Per Scheduler|Eligible Warps Per Scheduler|Warp Cycles Per Issued|L2 Hit|Mem Busy|Max Bandwidth" $f | head -20; done
echo "elapsed $SECONDS"
