#!/usr/bin/env bash
# A real Prometheus (Debian's `prometheus`, on loopback) scrapes `flute serve` (CPU backend,
# a random-weight model from `flute init-random-model`) during a short load from
# `flute client`; the test then asks Prometheus's HTTP API whether the TTFT and inter-token
# histograms and the token counters moved exactly as the clients counted. Also checks the
# deploy/ configuration with promtool and scripts/check_metric_refs.py.
#
# Env: FLUTE_BIN (the flute binary), FLUTE_SOURCE_DIR (the checkout). Exit 77 = skipped.
set -euo pipefail

FLUTE_BIN=${FLUTE_BIN:-build/bin/flute}
SRC=${FLUTE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PY=/usr/bin/python3
REQUESTS=${REQUESTS:-6}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-12}

fail() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "prometheus_test: $*" >&2; }

if ! "$FLUTE_BIN" serve --help > /dev/null 2>&1; then
  echo "SKIP: $FLUTE_BIN has no 'serve' command" >&2
  exit 77
fi
for tool in prometheus promtool curl; do
  command -v "$tool" > /dev/null || fail "'$tool' not found: install Debian's prometheus and curl (scripts/setup.sh)"
done

# Trap 3 of docs/toolchain.md: the metrics exposer cannot start threads in a process that
# links cuBLAS (its static TLS). The server binary must load cuBLAS with dlopen, if at all.
if command -v ldd > /dev/null && ldd "$FLUTE_BIN" | grep -Eq 'libcublas(Lt)?\.so'; then
  fail "$FLUTE_BIN links cuBLAS: the /metrics exposer cannot start (toolchain.md, trap 3)"
fi

work=$(mktemp -d /tmp/flute-prom-test.XXXXXX)
server_pid=""
prom_pid=""
cleanup() {
  for pid in $server_pid $prom_pid; do kill "$pid" 2> /dev/null || true; done
  for pid in $server_pid $prom_pid; do wait "$pid" 2> /dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --- static checks of deploy/ --------------------------------------------------------------
# The deploy config names the rules file by its in-container path; check a copy that points
# at the file in the checkout.
sed "s|/etc/prometheus/alerts.yml|$SRC/deploy/prometheus/alerts.yml|" \
  "$SRC/deploy/prometheus/prometheus.yml" > "$work/deploy-prometheus.yml"
promtool check config "$work/deploy-prometheus.yml" || fail "promtool check config"
promtool check rules "$SRC/deploy/prometheus/alerts.yml" || fail "promtool check rules"
$PY "$SRC/scripts/check_metric_refs.py" || fail "check_metric_refs.py (source)"

# --- the server -----------------------------------------------------------------------------
"$FLUTE_BIN" init-random-model --out "$work/model" > "$work/init.log" 2>&1 \
  || { cat "$work/init.log" >&2; fail "flute init-random-model"; }
"$FLUTE_BIN" serve --model "$work/model" --host 127.0.0.1 --port 0 --metrics-port 0 \
  --device cpu --threads 1 > "$work/serve.log" 2>&1 &
server_pid=$!

wait_for_log() {  # pattern, seconds
  for _ in $(seq $(($2 * 10))); do
    grep -Eq "$1" "$work/serve.log" && return 0
    kill -0 "$server_pid" 2> /dev/null || { cat "$work/serve.log" >&2; fail "flute serve exited"; }
    sleep 0.1
  done
  cat "$work/serve.log" >&2
  fail "no '$1' in the server log within $2 s"
}
wait_for_log 'listening on [^ ]*:[0-9]+' 60
wait_for_log 'metrics on http://[^ ]*:[0-9]+/metrics' 60
grpc_port=$(grep -Eo 'listening on [^ ]*:[0-9]+' "$work/serve.log" | head -1 | grep -Eo '[0-9]+$')
metrics_port=$(grep -Eo 'metrics on http://[^ ]*:[0-9]+/' "$work/serve.log" | head -1 | grep -Eo '[0-9]+/$' | tr -d /)
addr=127.0.0.1:$grpc_port
log "server: gRPC $addr, metrics 127.0.0.1:$metrics_port"

ready=0
for _ in $(seq 120); do
  if "$FLUTE_BIN" health --addr "$addr" --service flute.v1.TextGeneration --timeout 2 > /dev/null 2>&1; then
    ready=1; break
  fi
  kill -0 "$server_pid" 2> /dev/null || { cat "$work/serve.log" >&2; fail "flute serve exited"; }
  sleep 0.5
done
[ $ready = 1 ] || { cat "$work/serve.log" >&2; fail "server not SERVING within 60 s"; }
"$FLUTE_BIN" health --addr "$addr" > /dev/null || fail "liveness (empty service name) not SERVING"
if "$FLUTE_BIN" health --addr "$addr" --service no.such.Service --timeout 2 2> /dev/null; then
  fail "health of an unknown service must not exit 0"
fi

# The live /metrics page must export everything the dashboard and the rules use.
$PY "$SRC/scripts/check_metric_refs.py" --metrics-url "http://127.0.0.1:$metrics_port/metrics" \
  || fail "check_metric_refs.py (live scrape)"

# --- Prometheus -----------------------------------------------------------------------------
prom_port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $SRC/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: flute
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
prom_pid=$!
api="http://127.0.0.1:$prom_port"

# query EXPR -> the sum of the instant vector's values, or "none" when it is empty.
query() {
  curl -sf --get "$api/api/v1/query" --data-urlencode "query=$1" | $PY -c '
import json, sys
r = json.load(sys.stdin)
if r.get("status") != "success":
    sys.exit("query failed: %s" % r)
res = r["data"]["result"]
print(repr(sum(float(x["value"][1]) for x in res)) if res else "none")'
}
wait_until() {  # expr expected seconds: until query(expr) == expected
  local value=none
  for _ in $(seq $(($3 * 2))); do
    value=$(query "$1" 2> /dev/null || echo none)
    if [ "$value" != none ] && $PY -c "import sys; sys.exit(abs($value - $2) > 1e-9)"; then return 0; fi
    sleep 0.5
  done
  fail "$1 = $value, expected $2"
}
for _ in $(seq 60); do curl -sf "$api/-/ready" > /dev/null 2>&1 && break; sleep 0.5; done
curl -sf "$api/-/ready" > /dev/null || { cat "$work/prometheus.log" >&2; fail "Prometheus not ready"; }
wait_until 'up{job="flute"}' 1 30
wait_until 'flute_generation_tokens_total' 0 10
log "Prometheus on $api scrapes the server"

# --- load: concurrent greedy streams; the clients count their tokens --------------------------
prompts=("The quick brown fox" "Once upon a time" "ls lists directory contents"
         "A B C D E F G" "hello" "grep searches files for patterns")
pids=()
for i in $(seq "$REQUESTS"); do
  prompt=${prompts[$(((i - 1) % ${#prompts[@]}))]}
  "$FLUTE_BIN" client --addr "$addr" --prompt "$prompt" --max-new-tokens "$MAX_NEW_TOKENS" \
    --temperature 0 --ignore-eos --show-tokens --timeout 120 \
    > "$work/client$i.out" 2> "$work/client$i.err" &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { cat "$work/client$((i + 1)).err" >&2; fail "client $((i + 1)) failed"; }
done

generated=0; prompt_tokens=0; inter_token=0
for i in $(seq "$REQUESTS"); do
  # Tokens the client received (its own count), and the usage the server reported.
  received=$(grep '^token_ids:' "$work/client$i.err" | tr ' ' '\n' | grep -Ec '^[0-9]+$' || true)
  usage=$(grep -Eo 'prompt_tokens=[0-9]+ completion_tokens=[0-9]+' "$work/client$i.err") \
    || fail "client $i printed no usage: $(cat "$work/client$i.err")"
  p=$(echo "$usage" | sed -E 's/prompt_tokens=([0-9]+).*/\1/')
  c=$(echo "$usage" | sed -E 's/.*completion_tokens=([0-9]+)/\1/')
  [ "$received" = "$MAX_NEW_TOKENS" ] || fail "client $i received $received tokens, asked $MAX_NEW_TOKENS with --ignore-eos"
  [ "$c" = "$received" ] || fail "client $i: usage says $c tokens, received $received"
  [ "$p" -gt 0 ] || fail "client $i: prompt_tokens=$p"
  generated=$((generated + received))
  prompt_tokens=$((prompt_tokens + p))
  inter_token=$((inter_token + received - 1))
done
log "clients: $REQUESTS requests, $prompt_tokens prompt tokens, $generated generated"

# --- what Prometheus saw --------------------------------------------------------------------
wait_until 'flute_generation_tokens_total' "$generated" 20
wait_until 'flute_prompt_tokens_total' "$prompt_tokens" 10
wait_until 'flute_time_to_first_token_seconds_count' "$REQUESTS" 10
wait_until 'flute_inter_token_latency_seconds_count' "$inter_token" 10
wait_until 'flute_e2e_request_latency_seconds_count' "$REQUESTS" 10
wait_until 'flute_request_queue_time_seconds_count' "$REQUESTS" 10
wait_until 'flute_request_success_total{finished_reason="length"}' "$REQUESTS" 10
wait_until 'flute_requests_total{grpc_code="OK"}' "$REQUESTS" 10
wait_until 'flute_num_requests_running' 0 10
wait_until 'flute_num_requests_waiting' 0 10
wait_until 'count(flute_build_info{device="cpu"})' 1 5

# Histograms are consistent: the +Inf bucket holds every observation, the sums are positive,
# and a quantile over the load window is a real latency.
wait_until 'flute_time_to_first_token_seconds_bucket{le="+Inf"}' "$REQUESTS" 5
wait_until 'flute_inter_token_latency_seconds_bucket{le="+Inf"}' "$inter_token" 5
for expr in 'flute_time_to_first_token_seconds_sum' 'flute_inter_token_latency_seconds_sum' \
            'sum(flute_engine_step_duration_seconds_count)' 'flute_batch_size_sum' \
            'histogram_quantile(0.99, sum by (le) (increase(flute_time_to_first_token_seconds_bucket[5m])))' \
            'histogram_quantile(0.5, sum by (le) (increase(flute_inter_token_latency_seconds_bucket[5m])))'; do
  v=$(query "$expr")
  [ "$v" != none ] && $PY -c "import sys, math; v=$v; sys.exit(not (v > 0 and math.isfinite(v)))" \
    || fail "$expr = $v, expected a positive finite value"
  log "$expr = $v"
done
# The batch-size histogram saw steps with several sequences (the clients ran concurrently).
v=$(query 'max(flute_batch_size_sum) / max(flute_batch_size_count)')
log "mean batch size per step = $v"

# Every query of the Grafana dashboard is valid PromQL for this Prometheus; the latency,
# token and load panels return data (the error panel may rightly be empty).
$PY - "$SRC/deploy/grafana/dashboards/flute.json" "$api" <<'PYEOF' || fail "dashboard queries"
import json, sys, urllib.parse, urllib.request
dashboard, api = sys.argv[1], sys.argv[2]
def exprs(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for v in node.values():
            yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)
bad, empty, total = [], [], 0
for expr in exprs(json.load(open(dashboard))):
    total += 1
    q = expr.replace("$instance", ".*").replace("$__rate_interval", "2m")
    try:
        with urllib.request.urlopen(api + "/api/v1/query?" + urllib.parse.urlencode({"query": q})) as r:
            result = json.load(r)["data"]["result"]
    except Exception as e:  # a PromQL error is HTTP 400
        bad.append(f"{expr}: {e}")
        continue
    if not result:
        empty.append(expr)
for b in bad:
    print("invalid dashboard query:", b, file=sys.stderr)
expected_empty = [e for e in empty if "grpc_code" in e or "preemptions" in e]
for e in empty:
    if e not in expected_empty:
        print("dashboard query without data after the load:", e, file=sys.stderr)
print(f"dashboard: {total} queries valid, {total - len(empty)} with data", file=sys.stderr)
sys.exit(1 if bad or len(empty) != len(expected_empty) else 0)
PYEOF

# The rules loaded into the real Prometheus, and none fires on a healthy server.
rules=$(curl -sf "$api/api/v1/rules" | $PY -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
print(sum(len(g["rules"]) for g in groups))')
[ "$rules" -ge 4 ] || fail "Prometheus loaded $rules alert rules from deploy/prometheus/alerts.yml"
firing=$(curl -sf "$api/api/v1/alerts" | $PY -c '
import json, sys
print(",".join(a["labels"]["alertname"] for a in json.load(sys.stdin)["data"]["alerts"] if a["state"] == "firing"))')
[ -z "$firing" ] || fail "alerts firing on a healthy server: $firing"

# SIGTERM: the server drains and exits 0.
kill -TERM "$server_pid"
wait "$server_pid" || { cat "$work/serve.log" >&2; fail "flute serve exited non-zero after SIGTERM"; }
server_pid=""
echo "PASS: Prometheus saw $REQUESTS requests, $generated generated and $prompt_tokens prompt tokens"
