#!/usr/bin/env bash
# session 48 call 6: why strip groups lose at M = 1. ncu (clocks left alone) of the strip kernel on
# 8192x57344, 4-bit G128 fp16, M = 1: the default (one group, X resident in the one-row order,
# 2 blocks per SM, 3 stages), the ldmatrix layout with one group, 2 groups per block (ldmatrix,
# 4 stages each, 1 block per SM), and X staged (the rule before this session).
set -u
d=.dev; out=$OUT
tar -xJf $d/p48d.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p48d/lib
bin=$d/p48d/bin
NCU=$(ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
prof() {  # tag [env]
  local tag=$1; shift
  env FLUTE_LUT_STRIP_PLAN_LOG=1 "$@" timeout 60 $NCU --clock-control none --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis --section Occupancy --section SchedulerStats \
    --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\\.ratio,smsp__inst_executed.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum -k "regex:LutGemmStrip" -s 20 -c 1 \
    $bin/flute-bench-kernel --shapes 8192x57344 --m 1 --configs 4g128 --dtypes fp16 --kernels auto --replays 3 > $out/ncu-$tag.txt 2>&1
  echo "$tag rc=$? t=$SECONDS"; }
prof g1-one-row
prof g1-ldmatrix FLUTE_LUT_STRIP_ONE_ROW=ldmatrix
prof g2-ldmatrix FLUTE_LUT_STRIP_ONE_ROW=resident FLUTE_LUT_STRIP_GROUPS=2 FLUTE_LUT_STRIP_X=resident
prof staged FLUTE_LUT_STRIP_ONE_ROW=staged
for f in $out/ncu-*.txt; do echo "== $f"; grep -E "strip plan" $f | head -1; grep -E "Duration|DRAM Throughput|Issued Warp Per|Eligible Warps|Warp Cycles Per Issued|Achieved Active|inst_executed.sum|bank_conflicts|wavefronts_mem_shared" $f | head -14
  grep -E "issue_stalled" $f | awk '{print $1, $NF}' | sort -k2 -g -r | head -7; done
echo "elapsed $SECONDS"
