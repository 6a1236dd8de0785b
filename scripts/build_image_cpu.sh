#!/usr/bin/env bash
# Builds the CPU variant of the flute-serve image with buildah (no Docker engine: chroot
# isolation) on a Debian 12 base made by debootstrap from this machine's configured Debian
# mirror, then runs the container: `flute health` must answer SERVING and `flute client`
# must stream a generation from a model made by the image's own `flute init-random-model`.
#
#   sudo scripts/build_image_cpu.sh            # as root; slow: the build compiles the project
#   WORK=/var/tmp/x JOBS=4 scripts/build_image_cpu.sh
#
# Env: WORK (scratch dir, default /var/tmp/flute-image), JOBS (compile jobs in the build,
# default 2), IMAGE (tag, default localhost/flute-serve:cpu), NICE (default 19).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/var/tmp/flute-image}
JOBS=${JOBS:-2}
IMAGE=${IMAGE:-localhost/flute-serve:cpu}
BASE=localhost/flute-debian:12-debootstrap
NICE=${NICE:-19}
log() { echo "[$(date +%H:%M:%S)] build_image_cpu: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap and buildah's chroot isolation need it)"
missing=()
for p in buildah debootstrap; do command -v "$p" > /dev/null || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
fi
mkdir -p "$WORK"
# overlay-on-overlay does not work in every container; vfs always does (more disk, slower).
if ! buildah info > /dev/null 2>&1; then export STORAGE_DRIVER=vfs; fi

# The first Debian mirror configured for bookworm (deb822 .sources or one-line .list).
mirror() {
  local m=""
  if ls /etc/apt/sources.list.d/*.sources > /dev/null 2>&1; then
    m=$(awk '/^URIs:/ {uri=$2} /^Suites:/ && /bookworm( |$)/ && uri ~ /debian\/?$/ {print uri; exit}' \
          /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

# --- 1. the base image ------------------------------------------------------------------------
if buildah inspect --type image "$BASE" > /dev/null 2>&1; then
  log "base image $BASE already present"
else
  MIRROR=$(mirror)
  log "debootstrap bookworm from $MIRROR"
  rm -rf "$WORK/rootfs"
  start=$SECONDS
  nice -n "$NICE" debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  tar -C "$WORK/rootfs" --numeric-owner -cf "$WORK/rootfs.tar" .
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$WORK/rootfs.tar" / > /dev/null
  buildah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit --rm "$ctr" "$BASE" > /dev/null
  rm -rf "$WORK/rootfs" "$WORK/rootfs.tar"
  log "base image $BASE made in $((SECONDS - start)) s"
fi

# --- 2. the image ---------------------------------------------------------------------------
log "buildah bud (CPU variant) from $SRC, $JOBS compile jobs"
start=$SECONDS
# --format docker: the OCI format has no HEALTHCHECK.
nice -n "$NICE" buildah bud --isolation chroot --format docker --pull=never --layers \
  --build-arg BUILD_BASE="$BASE" --build-arg RUNTIME_BASE="$BASE" --build-arg BUILD_JOBS="$JOBS" \
  -f "$SRC/Dockerfile" -t "$IMAGE" "$SRC" > "$WORK/bud.log" 2>&1 \
  || { tail -40 "$WORK/bud.log" >&2; fail "buildah bud (log: $WORK/bud.log)"; }
log "image $IMAGE built in $((SECONDS - start)) s"
buildah images "$IMAGE" >&2

# --- 3. run it ----------------------------------------------------------------------------------
ctr=$(buildah from "$IMAGE")
server_pid=""
# The server inside the container: the process listening on $port (chroot isolation shares
# the host's process and network namespaces). Killing `buildah run` does not stop it.
server_in_container() { ss -Hltnp "sport = :$port" 2> /dev/null | grep -Eo 'pid=[0-9]+' | head -1 | cut -d= -f2; }
stop_server() {  # SIGTERM (the server drains and exits 0); returns buildah run's status
  local pid
  pid=$(server_in_container)
  [ -n "$pid" ] && kill -TERM "$pid" 2> /dev/null
  local rc=0
  wait "$server_pid" || rc=$?
  server_pid=""
  return $rc
}
cleanup() {
  if [ -n "$server_pid" ]; then stop_server || true; fi
  buildah rm "$ctr" > /dev/null 2>&1 || true
}
trap cleanup EXIT
run() { buildah run --isolation chroot "$@"; }

user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")
[ -n "$user" ] && [ "${user%%:*}" != 0 ] && [ "${user%%:*}" != root ] \
  || fail "the image runs as '$user', expected a non-root user"
log "image user: $user"
health=$(buildah inspect --type image --format '{{.Docker.Config.Healthcheck.Test}}' "$IMAGE" 2>&1 || true)
case "$health" in *flute*health*) log "HEALTHCHECK: $health" ;;
  *) fail "the image has no HEALTHCHECK running flute health (got '$health')" ;; esac

vol="$WORK/model-volume"
rm -rf "$vol" && mkdir -p "$vol" && chmod 0777 "$vol"
run -v "$vol:/out" "$ctr" -- /opt/flute/bin/flute init-random-model --out /out/model > "$WORK/init.log" 2>&1 \
  || { cat "$WORK/init.log" >&2; fail "flute init-random-model in the container"; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The image's default command, on loopback (chroot isolation shares the host's network).
run -v "$vol/model:/model:ro" "$ctr" -- /opt/flute/bin/flute serve --model /model \
  --host 127.0.0.1 --port "$port" --metrics-port 0 --device cpu > "$WORK/serve.log" 2>&1 &
server_pid=$!

ok=0
for _ in $(seq 120); do
  if run "$ctr" -- /opt/flute/bin/flute health --addr "127.0.0.1:$port" \
       --service flute.v1.TextGeneration --timeout 2 > "$WORK/health.log" 2>&1; then ok=1; break; fi
  kill -0 "$server_pid" 2> /dev/null || { cat "$WORK/serve.log" >&2; fail "the server exited"; }
  sleep 1
done
[ $ok = 1 ] || { cat "$WORK/serve.log" "$WORK/health.log" >&2; fail "no SERVING within 120 s"; }
log "health check (the image's HEALTHCHECK command): $(cat "$WORK/health.log")"

run "$ctr" -- /opt/flute/bin/flute client --addr "127.0.0.1:$port" --prompt "Once upon a time" \
  --max-new-tokens 16 --temperature 0 > "$WORK/client.out" 2> "$WORK/client.err" \
  || { cat "$WORK/client.err" >&2; fail "generate call"; }
grep -q 'completion_tokens=[1-9]' "$WORK/client.err" || { cat "$WORK/client.err" >&2; fail "no tokens generated"; }
log "generate call: $(tr '\n' ' ' < "$WORK/client.out" | head -c 200) $(tail -1 "$WORK/client.err")"
stop_server || { cat "$WORK/serve.log" >&2; fail "the server did not exit 0 on SIGTERM"; }
log "SIGTERM: $(tail -1 "$WORK/serve.log")"
echo "PASS: $IMAGE builds with buildah, answers the health check and a generate call"
