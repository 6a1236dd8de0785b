#!/usr/bin/env bash
# session 47 calls 13-14: `flute ppl --device cuda` (unquantized and NF4 G128, bf16 and fp16) and
# `flute serve --device cuda` with Prometheus metrics (NF4 G128, the man-page model) on the H200,
# build 4098cd0 (engine and kernels of ee4a486). ../shared went over in two pieces (call 13:
# `cp .dev/shpart.00 /tmp/`), this script is call 14 (carry .dev/shpart.01 .dev/pack-e2e.tar.xz).
set -u
d=.dev; out=$OUT
cat /tmp/shpart.00 $d/shpart.01 | tar -xJ -C $d || exit 1
rm -rf $d/pack-e2e && tar -xJf $d/pack-e2e.tar.xz -C $d
export LD_LIBRARY_PATH=$PWD/$d/pack-e2e/lib FLUTE_SHARED_DIR=$PWD/$d/shared
bin=$d/pack-e2e/bin
model=$d/shared/models/manpage-llama-22m
tokens=$d/shared/data/manpage-val.u16
header() { echo "# $1 (build 4098cd0) — $(date -u +%FT%TZ) — $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"; }
{ header "flute ppl --device cuda, full manpage-val.u16; CPU references 3.5178 unquantized, 3.6178 NF4 G128"
  $bin/flute quantize --model $model --out $d/nf4 --bits 4 --group-size 128 --method nf --force 2>&1 | tail -1
  for m in $model $d/nf4; do for dt in bfloat16 float16; do
    echo "## $(basename $m) --dtype $dt"; s=$SECONDS
    timeout 120 $bin/flute ppl --model $m --tokens $tokens --device cuda --dtype $dt 2>&1 | tr '\r' '\n' | grep -v "^windows" | tail -2; echo "($((SECONDS - s)) s)"
  done; done; } > $out/ppl-cuda.log 2>&1
cat $out/ppl-cuda.log
{ header "flute serve --device cuda --dtype bfloat16, NF4 G128 (quantized above), Prometheus metrics"
  $bin/flute serve --model $d/nf4 --device cuda --port 50071 --metrics-port 9471 > $out/serve-cuda.stderr 2>&1 &
  pid=$!
  for i in $(seq 60); do $bin/flute health --addr localhost:50071 --service flute.v1.TextGeneration >/dev/null 2>&1 && break; sleep 1; done
  timeout 30 $bin/flute client --addr localhost:50071 --prompt "NAME" --max-new-tokens 32 2>&1 | tail -3
  timeout 120 $bin/flute bench serve --addr localhost:50071 --concurrency 1,8,32 --requests 64 --max-new-tokens 64 2>&1 | tail -8
  python3 -c "import urllib.request; print(urllib.request.urlopen('http://localhost:9471/metrics').read().decode())" | grep -E "^flute_(gpu_memory_used_bytes|generation_tokens_total|requests_total|build_info)"
  kill -TERM $pid; wait $pid; echo "serve exit=$?"; tail -5 $out/serve-cuda.stderr; } > $out/serve-cuda.log 2>&1
cat $out/serve-cuda.log
echo "elapsed $SECONDS"
