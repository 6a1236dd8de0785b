#!/usr/bin/env bash
# Drives the `flute` binary as a user would: a random test model end to end, sampling
# reproducibility, the perplexity contract, and clear failures on bad input.
set -euo pipefail
flute=${FLUTE_BIN:?}
src=${FLUTE_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# A random-weight model made by the binary itself (no download).
"$flute" init-random-model --out "$work/model" --layers 2 > /dev/null
grep -q RANDOM "$work/model/README.md" || fail "random model is not labelled"

# Greedy generation is deterministic; sampling with a seed reproduces.
a=$("$flute" generate --model "$work/model" --prompt "The license" --max-new-tokens 12 --temperature 0 2>/dev/null)
b=$("$flute" generate --model "$work/model" --prompt "The license" --max-new-tokens 12 --temperature 0 2>/dev/null)
[ "$a" = "$b" ] || fail "greedy output differs between runs"
s1=$("$flute" generate --model "$work/model" --prompt "The license" --max-new-tokens 12 --temperature 1 --top-p 0.9 --seed 7 2>/dev/null)
s2=$("$flute" generate --model "$work/model" --prompt "The license" --max-new-tokens 12 --temperature 1 --top-p 0.9 --seed 7 2>/dev/null)
[ "$s1" = "$s2" ] || fail "same seed gave different samples"

# Every error is a message and a non-zero exit, never a crash.
expect_error() {  # expect_error PATTERN COMMAND...
  local pattern=$1; shift
  local rc=0
  "$@" > "$work/out" 2> "$work/err" || rc=$?
  [ "$rc" -ne 0 ] || fail "expected failure: $*"
  [ "$rc" -lt 128 ] || fail "crashed (signal $((rc - 128))): $*"
  grep -q -- "$pattern" "$work/err" || { cat "$work/err" >&2; fail "message lacks '$pattern': $*"; }
}
expect_error "$work/missing" "$flute" generate --model "$work/missing" --prompt hi
expect_error "top_p" "$flute" generate --model "$work/model" --prompt hi --temperature 1 --top-p 1.5
cp -r "$work/model" "$work/truncated"
size=$(stat -c %s "$work/truncated/model.safetensors")
truncate -s $((size / 2)) "$work/truncated/model.safetensors"
expect_error "model.safetensors" "$flute" generate --model "$work/truncated" --prompt hi
printf '{"architectures": ["LlamaForCausalLM"], ' > "$work/model/config.json.bad"
cp -r "$work/model" "$work/badjson" && mv "$work/badjson/config.json.bad" "$work/badjson/config.json"
expect_error "config.json" "$flute" generate --model "$work/badjson" --prompt hi
printf '\x01\x00\x02' > "$work/odd.u16"
expect_error "multiple of 2" "$flute" ppl --model "$work/model" --tokens "$work/odd.u16"
# bench e2e checks its flags before it looks for a GPU.
expect_error "expected w2, w3, w4, dense, bf16 or fp16" "$flute" bench e2e --weights w4,w5
expect_error "pass --dtype float16" "$flute" bench e2e --weights w4,fp16

# The perplexity contract on the trained man-page model (a CI-sized slice).
shared=${FLUTE_SHARED_DIR:-$src/../shared}
if [ -d "$shared/models/manpage-llama-22m" ]; then
  out=$("$flute" ppl --model "$shared/models/manpage-llama-22m" --tokens "$shared/data/manpage-val.u16" --max-windows 4 2>/dev/null)
  last=$(echo "$out" | tail -n 1)
  [[ $last =~ ^ppl=([0-9.]+)$ ]] || fail "last line is not ppl=<value>: $last"
  expected=$(/usr/bin/python3 -c "import json; print(json.load(open('$src/tests/reference/data/manpage_reference.json'))['ppl_first_windows']['4']['ppl'])")
  /usr/bin/python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if abs(a-b) <= 1e-3*b else 1)" \
    "${BASH_REMATCH[1]}" "$expected" || fail "ppl ${BASH_REMATCH[1]} vs transformers $expected"
else
  echo "skipping the man-page perplexity check: ../shared not found"
fi
echo "cli_test: all checks passed"
