#!/usr/bin/env bash
# session 34 call 2: engine CUDA tests on the split build; compute-sanitizer racecheck of the engine tests whose 300-row passes run the fused MT=128 LUT instances (only the LUT tensor-core kernels instrumented)
set -u
d=.dev; out=$OUT
[ -d $d/p34a ] || { echo "pack gone (machine not warm)"; exit 3; }
if [ ! -f $d/sh_00 ]; then echo "sh_00 is gone"; exit 3; fi
cat $d/sh_00 $d/sh_01 > $d/shared.tar.xz && tar -xJf $d/shared.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/p34a/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/p34a/bin
export FLUTE_CUDA_PLUGIN=$PWD/$bin/libflute_cuda.so
hdr() { echo "# $1 (build $(cat $d/build-id)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ hdr "engine_tests --gtest_filter=*Cuda*"; timeout 200 $bin/engine_tests --gtest_filter='*Cuda*' 2>&1; echo "rc=$?"; } > $out/engine-cuda-tests.log 2>&1
grep -E "^# |^\[  (PASSED|FAILED) |^\[  FAILED|rc=" $out/engine-cuda-tests.log; echo "t=$SECONDS"
{ for t in DequantizedPrefillPathMatchesTheCpuBackend ChunkedPrefillMatchesOnePass DecodeStepsRunTheFusedNorms Bf16StepsRunTheDeferredNorm; do
    left=$((560 - SECONDS)); [ $left -lt 30 ] && { echo "# $t: not run (time)"; continue; }
    hdr "compute-sanitizer --tool racecheck --kernel-name regex:TcLutGemm engine_tests --gtest_filter=CudaBackend.$t (timeout $left s)"
    timeout $left compute-sanitizer --tool racecheck --kernel-name regex:TcLutGemm $bin/engine_tests --gtest_filter=CudaBackend.$t 2>&1 | grep -E "^\[  (PASSED|FAILED) |RACECHECK SUMMARY|Hazard|Error|error" | tail -6
    echo "rc=${PIPESTATUS[0]} t=$SECONDS"; done
} > $out/engine-racecheck.log 2>&1; cat $out/engine-racecheck.log | cut -c1-220
echo "elapsed $SECONDS"
