#!/bin/bash
# Quickstart: build flute, make a small RANDOM-WEIGHT LLaMA-architecture model (no download,
# no account: its output is gibberish by design), serve it over gRPC, stream one reply with
# `flute client`, and stop the server.
#   scripts/quickstart_serve.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
PORT="${FLUTE_QUICKSTART_PORT:-50051}"

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$BUILD_DIR" flute
FLUTE="$BUILD_DIR/bin/flute"

MODEL_DIR="$(mktemp -d /tmp/flute-quickstart.XXXXXX)"
SERVER_PID=""
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" || true
  rm -rf "$MODEL_DIR"
}
trap cleanup EXIT

"$FLUTE" init-random-model --out "$MODEL_DIR/model" --force
"$FLUTE" serve --model "$MODEL_DIR/model" --host 127.0.0.1 --port "$PORT" --device cpu &
SERVER_PID=$!
"$FLUTE" client --addr "127.0.0.1:$PORT" --wait-ready 120
"$FLUTE" client --addr "127.0.0.1:$PORT" --prompt "Hello, flute!" --max-new-tokens 32
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
SERVER_PID=""
echo "quickstart: served and streamed a reply, then drained and stopped the server"
