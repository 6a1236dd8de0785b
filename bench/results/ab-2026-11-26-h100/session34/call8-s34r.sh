#!/usr/bin/env bash
# session 34: racecheck of engine tests (whole process instrumented), one test per process
set -u
d=.dev; out=$OUT
[ -d $d/p34r ] || { echo "pack gone (machine not warm)"; exit 3; }
if [ ! -d $d/shared ]; then [ -f $d/sh_00 ] || { echo "sh_00 is gone"; exit 3; }; cat $d/sh_00 $d/sh_01 > $d/shared.tar.xz && tar -xJf $d/shared.tar.xz -C $d; fi
export LD_LIBRARY_PATH=$PWD/$d/p34r/lib FLUTE_SHARED_DIR=$PWD/$d/shared FLUTE_CUDA_PLUGIN=$PWD/$d/p34r/bin/libflute_cuda.so
bin=$d/p34r/bin; limit=$1; shift
for t in "$@"; do
  left=$((limit - SECONDS)); [ $left -lt 20 ] && { echo "# $t: not run (time)"; continue; }
  echo "# compute-sanitizer --tool racecheck engine_tests --gtest_filter=CudaBackend.$t (timeout $left s) (build $(cat $d/build-id)) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
  timeout $left compute-sanitizer --tool racecheck $bin/engine_tests --gtest_filter=CudaBackend.$t > $out/full-$t.txt 2>&1
  echo "rc=$? t=$SECONDS"
  echo "## hazards by location"; grep -E "Race reported" $out/full-$t.txt | sed 's/ between .* at / at /' | sort | uniq -c
  grep -E "^\[  (PASSED|FAILED) |RACECHECK SUMMARY|normalized" $out/full-$t.txt
done
