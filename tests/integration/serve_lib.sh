# Helpers of the serve_*_test.sh integration tests (sourced, not a test itself).
# Needs FLUTE_BIN (the flute binary) and FLUTE_SOURCE_DIR; ../shared for the man-page model.
set -euo pipefail

: "${FLUTE_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${FLUTE_BIN:=$FLUTE_SOURCE_DIR/build/bin/flute}"
PYTHON=/usr/bin/python3
PY_CLIENT="$FLUTE_SOURCE_DIR/tests/integration/python_client.py"
export FLUTE_SOURCE_DIR

SHARED_DIR="${FLUTE_SHARED_DIR:-$FLUTE_SOURCE_DIR/../shared}"
BF16_MODEL="$SHARED_DIR/models/manpage-llama-22m"
WORK_DIR="$(mktemp -d /tmp/flute-serve-test.XXXXXX)"
SERVER_PID=""

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT

require_model() {
  if [[ ! -f "$BF16_MODEL/config.json" ]]; then
    echo "SKIP: $BF16_MODEL not found (../shared absent; set FLUTE_SHARED_DIR)"
    exit 77
  fi
  command -v "$PYTHON" >/dev/null && "$PYTHON" -c "import grpc, grpc_tools" 2>/dev/null || {
    echo "SKIP: $PYTHON lacks grpcio / grpc_tools (python3-grpcio python3-grpc-tools)"
    exit 77
  }
}

# The man-page model quantized to NF4 (4-bit NormalFloat, groups of 64), made once and kept
# in FLUTE_TEST_CACHE. Prints its directory.
nf4_model() {
  local cache="${FLUTE_TEST_CACHE:-/tmp/flute-test-cache}"
  local dir="$cache/manpage-llama-22m-nf4-g64"
  if [[ ! -f "$dir/config.json" ]]; then
    mkdir -p "$cache"
    local tmp="$cache/.nf4-$$"
    rm -rf "$tmp"
    "$FLUTE_BIN" quantize --model "$BF16_MODEL" --out "$tmp" --bits 4 --group-size 64 \
      --method nf --force >&2
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"   # another test may have won the race
  fi
  echo "$dir"
}

# start_server MODEL [flute serve flags...]: starts the server on a free port, waits until
# it is ready; sets SERVER_PID, ADDR and SERVER_LOG.
start_server() {
  local model="$1"
  shift
  SERVER_LOG="$WORK_DIR/server-$RANDOM.log"
  # Created here, not by the background job's redirection: the first sed below may run before
  # the job opens the file, and sed's error then ended the test under set -e (a CI flake).
  : >"$SERVER_LOG"
  "$FLUTE_BIN" serve --model "$model" --host 127.0.0.1 --port 0 --device cpu "$@" \
    >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  local port=""
  for _ in $(seq 1 600); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$SERVER_LOG" | head -1)
    [[ -n "$port" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVER_LOG"; echo "FAIL: server died"; exit 1; }
    sleep 0.1
  done
  [[ -n "$port" ]] || { cat "$SERVER_LOG"; echo "FAIL: server did not listen"; exit 1; }
  ADDR="127.0.0.1:$port"
  "$FLUTE_BIN" client --addr "$ADDR" --wait-ready 300 || {
    cat "$SERVER_LOG"; echo "FAIL: server not ready"; exit 1; }
  echo "server $SERVER_PID ready at $ADDR"
}

# stop_server: SIGTERM, expect exit status 0 within 60 s.
stop_server() {
  kill -TERM "$SERVER_PID"
  local rc=0
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=""
  if [[ $rc -ne 0 ]]; then cat "$SERVER_LOG"; echo "FAIL: server exited with $rc"; exit 1; fi
}

py() { "$PYTHON" "$PY_CLIENT" --addr "$ADDR" "$@"; }
