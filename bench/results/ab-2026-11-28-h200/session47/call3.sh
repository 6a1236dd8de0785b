#!/usr/bin/env bash
# session 47 call 3: H200 probes with HEAD's binaries (environment knobs only): the dense 16-bit
# GEMV (the bf16 engine's products) at M = 1-32; the strip kernel's pipeline depth forced
# (FLUTE_LUT_STRIP=tpw,stages) at M = 1-4; ncu (clocks left alone) of the strip kernel at M = 1
# and of the tensor-core kernel at M = 128, with the warp stall reasons.
set -u
d=.dev; out=$OUT
tar -xJf $d/p47x.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p47x/lib
bin=$d/p47x/bin
hdr() { echo "# $1 — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "dense GEMV vs cuBLAS, bf16, default shapes, M = 1-32"
  timeout 100 $bin/flute-bench-kernel --dense-gemv --m 1,2,4,8,16,32 --dtypes bf16 --kernels gemv-pdl 2>&1 | grep -E "^\||copy"; } > $out/dense-gemv.txt
echo "dense t=$SECONDS"
S=4096x6144,4096x4096,4096x28672,14336x4096,8192x10240,8192x8192,8192x57344,28672x8192
kb() { env "$@" timeout 60 $bin/flute-bench-kernel --shapes $S --m 1,2,4 --configs 4g128,2g128 --dtypes fp16 --kernels strip-pdl --replays 9 2>/dev/null | grep -E "^\| [0-9]" | awk -F'|' '{printf "%s M=%s %s %s us %s%%\n", $2, $4, $5, $7, $9}'; }
{ hdr "strip kernel depth forced, fp16, alternating, 2 rounds"
  for r in 1 2; do for cfg in default 2,2 2,3 2,4 1,3 1,4; do
    echo "== $cfg r$r"; if [ $cfg = default ]; then kb; else kb FLUTE_LUT_STRIP=$cfg; fi
  done; done; } > $out/strip-depth.txt
echo "depth t=$SECONDS"
NCU=$(ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
prof() {  # tag shape m kernel-regex [env]
  local tag=$1 shape=$2 m=$3 re=$4; shift 4
  env "$@" timeout 100 $NCU --clock-control none --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis --section Occupancy --section SchedulerStats \
    --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\\.ratio -k "regex:$re" -s 20 -c 1 \
    $bin/flute-bench-kernel --shapes $shape --m $m --configs 4g128 --dtypes fp16 --kernels auto --replays 3 > $out/ncu-$tag.txt 2>&1
  echo "$tag rc=$? t=$SECONDS"; }
prof strip-m1-8192x8192 8192x8192 1 LutGemmStrip
prof tc-m128-4096x6144 4096x6144 128 TcLutGemm
for f in $out/ncu-*.txt; do echo "== $f"; grep -E "Duration|DRAM Throughput|Issued Warp Per|Eligible Warps|Warp Cycles Per Issued|Registers Per|Achieved Active" $f | head -12
  grep -E "issue_stalled" $f | awk '{print $1, $NF}' | sort -k2 -g -r | head -8; done
echo "elapsed $SECONDS"
