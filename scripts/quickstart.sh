#!/usr/bin/env bash
# Installs, builds, makes a small RANDOM-weight test model (no download) and generates from
# it. Replace models/random-tiny with a real checkpoint directory to get real text.
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache hits across checkouts in other folders (CI clones afresh each time).
export CCACHE_BASEDIR="$PWD"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target flute
model=models/random-tiny
[ -f "$model/config.json" ] || ./build/bin/flute init-random-model --out "$model"
./build/bin/flute generate --model "$model" --prompt "The license grants you" \
  --max-new-tokens 32 --temperature 0.8 --top-p 0.95 --seed 1
