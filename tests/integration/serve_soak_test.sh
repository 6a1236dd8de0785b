#!/bin/bash
# 60-second soak of flute serve (CPU, man-page model in NF4) with random cancels: no KV
# block leaks (GetModelInfo), no failed requests, server RSS flat from start to end.
source "$(dirname "$0")/serve_lib.sh"
require_model
MODEL=$(nf4_model)
start_server "$MODEL" --max-batch-size 8 --max-queue 64 --kv-cache-mb 32
py soak --seconds "${FLUTE_SOAK_SECONDS:-60}" --clients 10 --server-pid "$SERVER_PID"
stop_server
echo "PASS"
