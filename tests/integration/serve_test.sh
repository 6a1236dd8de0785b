#!/bin/bash
# flute serve on the CPU backend with the man-page model quantized to NF4: the C++ and the
# Python client stream, health and reflection answer, 24 concurrent greedy streams equal
# their solo outputs, cancel and deadline free KV blocks, malformed requests get
# INVALID_ARGUMENT, overload gets RESOURCE_EXHAUSTED, SIGTERM drains.
# (flute serve --help lists the flags used here.)
source "$(dirname "$0")/serve_lib.sh"
require_model
MODEL=$(nf4_model)
echo "model: $MODEL"

start_server "$MODEL" --max-batch-size 8 --max-queue 64 --kv-cache-mb 64
py health --expect SERVING

echo "== C++ client"
"$FLUTE_BIN" client --addr "$ADDR" --prompt "NAME" --max-new-tokens 24 --temperature 0 \
  --show-tokens >"$WORK_DIR/cpp.out" 2>"$WORK_DIR/cpp.err"
cat "$WORK_DIR/cpp.out" "$WORK_DIR/cpp.err"
grep -q "finish_reason=" "$WORK_DIR/cpp.err" || { echo "FAIL: no finish line"; exit 1; }
[[ -s "$WORK_DIR/cpp.out" ]] || { echo "FAIL: no text"; exit 1; }

echo "== Python client"
py generate --prompt "NAME" --max-new-tokens 24 | tee "$WORK_DIR/py.out"
# Both clients got the same greedy tokens.
cpp_tokens=$(grep '^token_ids:' "$WORK_DIR/cpp.err")
py_tokens=$(grep '^token_ids:' "$WORK_DIR/py.out")
[[ "$cpp_tokens" == "$py_tokens" ]] || { echo "FAIL: C++ client '$cpp_tokens' != Python '$py_tokens'"; exit 1; }
py info

echo "== cancel"
py cancel
echo "== deadline"
py deadline
echo "== malformed requests"
py invalid

echo "== SIGTERM drains"
"$FLUTE_BIN" client --addr "$ADDR" --prompt "DESCRIPTION" --max-new-tokens 200 --ignore-eos \
  --temperature 0 >"$WORK_DIR/drain.out" 2>"$WORK_DIR/drain.err" &
CLIENT_PID=$!
sleep 0.5
kill -TERM "$SERVER_PID"
sleep 0.3
py health --expect NOT_SERVING
"$FLUTE_BIN" client --addr "$ADDR" --prompt "late" 2>"$WORK_DIR/late.err" && {
  echo "FAIL: a request was admitted while draining"; exit 1; }
grep -q UNAVAILABLE "$WORK_DIR/late.err" || { cat "$WORK_DIR/late.err"; echo "FAIL: expected UNAVAILABLE"; exit 1; }
echo "draining: readiness NOT_SERVING, new requests UNAVAILABLE"
wait "$CLIENT_PID" || { cat "$WORK_DIR/drain.err"; echo "FAIL: the in-flight stream failed during drain"; exit 1; }
grep -q "finish_reason=length" "$WORK_DIR/drain.err" || { cat "$WORK_DIR/drain.err"; echo "FAIL: drained stream incomplete"; exit 1; }
rc=0; wait "$SERVER_PID" || rc=$?
SERVER_PID=""
[[ $rc -eq 0 ]] || { cat "$SERVER_LOG"; echo "FAIL: server exited $rc after SIGTERM"; exit 1; }
echo "drained: in-flight stream completed, server exited 0"

echo "== 24 concurrent greedy streams vs solo, with a KV cache small enough to preempt"
start_server "$MODEL" --max-batch-size 8 --max-queue 64 --kv-cache-mb 1
py concurrent --n 24 --expect-preemption
stop_server

echo "== overload"
start_server "$MODEL" --max-batch-size 2 --max-queue 2 --kv-cache-mb 64
py overload
stop_server
echo "PASS"
