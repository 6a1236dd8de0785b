#!/usr/bin/env bash
# The README's first command: installs the Debian packages, builds, makes a small
# RANDOM-weight test model (no download, no account), serves it over gRPC, streams one reply
# with `flute client`, and drains the server. See scripts/quickstart_serve.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD"
bash scripts/setup.sh
exec bash scripts/quickstart_serve.sh "$@"
