#!/usr/bin/env bash
# session 46 call 10: instruction mix (ncu InstructionStats, SourceCounters' warp stall sampling)
# of the 16-row kernel at M = 16 and the strip kernel at M = 8, 4096x28672 4-bit G128 fp16; SASS
# of the 16-row kernel.
set -u
d=.dev; out=$OUT
tar -xJf $d/p46h.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p46h/lib
bin=$d/p46h/bin
NCU=/opt/nvidia/nsight-compute/2025.3.1/ncu
prof() {
  local tag=$1 m=$2 re=$3; shift 3
  env "$@" timeout 200 $NCU --section InstructionStats --section WarpStateStats --section SourceCounters --metrics smsp__pcsamp_warps_issue_stalled_barrier,smsp__pcsamp_warps_issue_stalled_long_scoreboard,smsp__pcsamp_warps_issue_stalled_short_scoreboard,smsp__pcsamp_warps_issue_stalled_math_pipe_throttle,smsp__pcsamp_warps_issue_stalled_wait,smsp__pcsamp_warps_issue_stalled_mio_throttle,smsp__pcsamp_warps_issue_stalled_selected,smsp__pcsamp_warps_issue_stalled_not_selected,smsp__pcsamp_warps_issue_stalled_lg_throttle,smsp__pcsamp_warps_issue_stalled_dispatch_stall,smsp__pcsamp_warps_issue_stalled_tex_throttle,smsp__pcsamp_warps_issue_stalled_math_pipe_throttle,smsp__inst_executed.sum,smsp__inst_executed_pipe_tensor.sum,smsp__inst_executed_op_shared_ld.sum -k "regex:$re" -s 20 -c 1 \
    $bin/flute-bench-kernel --shapes 4096x28672 --m $m --configs 4g128 --dtypes fp16 --kernels auto --replays 3 > $out/ncu2-$tag.txt 2>&1
  echo "$tag rc=$? t=$SECONDS"; }
prof rows16-m16 16 Rows16
prof strip-m8 8 LutGemmStripKernel
for f in $out/ncu2-*.txt; do echo "== $f"; grep -E "smsp__|Executed Ipc|Issued Ipc|Warp Cycles Per Issued|Branch Instructions|Executed Instructions  " $f | head -30; done
CUOBJ=$(ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -1); echo "cuobjdump: $CUOBJ"
if [ -n "$CUOBJ" ]; then $CUOBJ -sass -fun '_ZN5flute3lut51_GLOBAL__N__58d9d5a3_18_lut_gemm_rows16_cu_99f0cba019LutGemmRows16KernelI6__halfLi4ELi2EEEvNS1_10Rows16ArgsE' $bin/flute-bench-kernel > $out/sass-rows16.txt 2>&1; wc -l $out/sass-rows16.txt; fi
echo "elapsed $SECONDS"
