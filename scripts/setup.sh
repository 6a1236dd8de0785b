#!/usr/bin/env bash
# Installs every build and test dependency of flute-serve from Debian 12 packages.
# Idempotent: packages already present are left as they are; apt-get update runs only when
# a package is missing. Run as root (or with sudo available).
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev                                   # Status/StatusOr, strings, flags
  libgrpc++-dev protobuf-compiler-grpc          # gRPC service (server/)
  libprotobuf-dev protobuf-compiler             # protobuf messages (proto/)
  prometheus-cpp-dev                            # /metrics exposer (server/)
  libsentencepiece-dev sentencepiece            # SentencePiece tokenizers (engine/spm_plugin)
  libpcre2-dev                                  # tokenizer.json pre-tokenizer regex
  libgtest-dev libgmock-dev libbenchmark-dev    # tests and micro-benchmarks
  nlohmann-json3-dev                            # config.json, safetensors headers
  libcli11-dev                                  # the flute command line
  libopenblas-dev                               # sgemm for CPU prefill
  python3 python3-numpy python3-grpcio python3-grpc-tools  # second gRPC client in tests
  prometheus                                    # real Prometheus + promtool in the metrics test
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
