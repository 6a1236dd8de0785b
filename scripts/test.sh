#!/usr/bin/env bash
# Installs the dependencies (Debian packages), builds everything and runs every test.
# Tests that need ../shared (the reference model and data) or a GPU skip with a message
# when those are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache hits across checkouts in other folders (CI clones afresh each time).
export CCACHE_BASEDIR="$PWD"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 1500
