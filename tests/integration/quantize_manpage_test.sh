#!/usr/bin/env bash
# `flute quantize` as a user runs it, on the man-page model: NF4 G128 quantization, the
# quantized model's perplexity on a slice of the validation tokens (a little above bf16's),
# and the command-line errors (existing output, group size, bad table file, bad method).
# Full-file perplexities are in the issue-4 report (minutes of CPU; not run here).
set -euo pipefail
flute=${FLUTE_BIN:?FLUTE_BIN must point at the flute binary}
source_dir=${FLUTE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
shared=${FLUTE_SHARED_DIR:-$source_dir/../shared}
model=$shared/models/manpage-llama-22m
tokens=$shared/data/manpage-val.u16
if [ ! -d "$model" ] || [ ! -f "$tokens" ]; then
  echo "SKIP: $model or $tokens not found (set FLUTE_SHARED_DIR)"; exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Expects failure with a message containing $1; runs the rest as the command.
expect_error() {
  local pattern=$1; shift
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || fail "expected failure ($pattern) from: $*"
  grep -qF -- "$pattern" <<< "$out" || fail "expected '$pattern' in: $out"
}

"$flute" quantize --model "$model" --out "$work/nf4" --bits 4 --group-size 128 --method nf > "$work/log" 2>&1 \
  || { cat "$work/log"; fail "quantize nf4"; }
grep -q '"method": "nf"' "$work/nf4/config.json" || fail "config.json lacks quantization_config"
[ -f "$work/nf4/tokenizer.model" ] || fail "tokenizer.model not copied"
# Non-TTY progress: plain lines.
grep -q "^quantize: 100.0%" "$work/log" || fail "no plain progress lines: $(head -3 "$work/log")"

ppl() { "$flute" ppl --model "$1" --tokens "$tokens" --max-windows 4 2>/dev/null | tail -1 | sed 's/^ppl=//'; }
dense=$(ppl "$model")
quant=$(ppl "$work/nf4")
echo "4-window ppl: bf16 $dense, nf4 g128 $quant"
awk -v d="$dense" -v q="$quant" 'BEGIN { exit !(q > d && q < 1.1 * d) }' \
  || fail "nf4 ppl $quant not within (bf16 $dense, 1.1 x bf16)"

expect_error "already exists; pass --force" \
  "$flute" quantize --model "$model" --out "$work/nf4" --bits 4 --group-size 128 --method nf
"$flute" quantize --model "$model" --out "$work/nf4" --bits 2 --group-size 64 --method uniform --force > /dev/null 2>&1 \
  || fail "--force did not replace the output"
grep -q '"method": "uniform"' "$work/nf4/config.json" || fail "--force left the old checkpoint"
# (K % G is tested on a small checkpoint in tests/engine/quant_checkpoint_test.cc: every K of
# this model is a multiple of 256.)
expect_error "--group-size must be 32, 64, 128 or 256, got 48" \
  "$flute" quantize --model "$model" --out "$work/g256" --bits 4 --group-size 48 --method nf
echo '[-1, 0, 1]' > "$work/table.json"
expect_error "needs exactly 4 values" \
  "$flute" quantize --model "$model" --out "$work/t" --bits 2 --group-size 64 --method "table:$work/table.json"
expect_error "nf, nfl, uniform or table:FILE" \
  "$flute" quantize --model "$model" --out "$work/t" --method gptq
expect_error "--calib-tokens" \
  "$flute" quantize --model "$model" --out "$work/t" --method nfl
[ ! -e "$work/g256" ] && [ ! -e "$work/t" ] || fail "a failed run left an output directory"
echo PASS
