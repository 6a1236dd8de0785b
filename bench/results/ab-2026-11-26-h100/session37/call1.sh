#!/usr/bin/env bash
# session 37 call 1: upper bounds — TC kernel without X refills (1), without W refills (2), neither (3)
set -u
tar -xJf .dev/p37a.tar.xz -C .dev; d=.dev/p37a/bin; export LD_LIBRARY_PATH=$PWD/.dev/p37a/lib; out=$OUT
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
kb() { timeout 150 $d/flute-bench-kernel-ub --shapes $1 --m $2 --configs $3 --dtypes fp16 --kernels auto-pdl --replays 7 2>&1 | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s M=%s %s %s us %s%% x%s\n", $2, $4, $5, $7, $9, $11}'; }
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
{ hdr "UB skip modes (FLUTE_UB_TC_SKIP 0 none, 1 X refills, 2 W refills, 3 both), alternating, fp16 4g128"
  for r in 1 2; do
    for v in 0 1 2 3; do echo "== skip $v round $r"; FLUTE_UB_TC_SKIP=$v kb $S 32,64,128 4g128; done
  done
} > $out/kbench-ub-skip.txt 2>&1
cat $out/kbench-ub-skip.txt
echo "t=$SECONDS"
for m in 128 32; do for v in 0 1; do
  FLUTE_UB_TC_SKIP=$v timeout 120 /usr/local/cuda/bin/ncu --kernel-name regex:TcLutGemm --launch-skip 12 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
    --metrics lts__t_bytes.sum.per_second,lts__t_sectors_srcunit_tex_op_read.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__m_xbar2l1tex_read_bytes.sum.per_second \
    $d/flute-bench-kernel-ub --shapes 4096x28672 --m $m --configs 4g128 --dtypes fp16 --kernels auto-pdl --replays 1 > $out/ncu-m$m-skip$v.txt 2>&1
  echo "== ncu M=$m skip $v"; grep -E "Duration|Memory Throughput|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|lts__t_bytes|lts__t_sectors|gmma|xbar2l1tex|Eligible Warps|Warp Cycles Per Issued|Registers Per|Achieved Occupancy|Block Limit Shared" $out/ncu-m$m-skip$v.txt | head -20
done; done
echo "elapsed $SECONDS"
