#!/usr/bin/env bash
# Writes calibration tokens for `flute quantize --method nfl`: Debian manual pages rendered
# as plain text, EXCLUDING every page that appears in the validation text, tokenized with the
# model's SentencePiece tokenizer in ~4,000-character chunks, each `<s> ... </s>` (the layout
# of manpage-val.u16), as little-endian uint16 ids.
#
# usage: scripts/make_calibration_tokens.sh OUT.u16 [TOKENIZER_MODEL] [VAL_TEXT] [MAX_CHARS]
# (TOKENIZE_TEXT=path/to/tokenize_text if the build is not in build/)
set -euo pipefail
out=${1:?usage: $0 OUT.u16 [tokenizer.model] [validation.txt] [max_chars]}
shared=${FLUTE_SHARED_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
tokenizer=${2:-$shared/models/manpage-llama-22m/tokenizer.model}
val=${3:-$shared/data/manpage-val.txt}
max_chars=${4:-200000}
tokenize_text=${TOKENIZE_TEXT:-$(cd "$(dirname "$0")/.." && pwd)/build/bin/tokenize_text}
[ -x "$tokenize_text" ] || { echo "error: $tokenize_text not built (ninja tokenize_text; or set TOKENIZE_TEXT)" >&2; exit 1; }
for tool in man col; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Page titles of the validation text ("ls(1) ... ls(1)" header lines), lower-cased.
grep -oE '^[^ ]+\([0-9][A-Za-z]*\)' "$val" | tr 'A-Z' 'a-z' | sort -u > "$work/val_titles"
echo "validation text has $(wc -l < "$work/val_titles") page titles; excluding them" >&2

: > "$work/text"
for page in $(ls /usr/share/man/man1 /usr/share/man/man8 | grep -E '\.(1|8)(\.gz)?$' | sed -E 's/\.gz$//' | sort); do
  name=${page%.*}; section=${page##*.}
  title=$(echo "$name($section)" | tr 'A-Z' 'a-z')
  grep -qxF "$title" "$work/val_titles" && continue
  # Rendered like the validation text: no hyphenation or justification, runs of blanks
  # collapsed, indentation reduced to one space.
  MANWIDTH=72 man --nh --nj -P cat "$section" "$name" 2>/dev/null | col -bx |
    sed -E 's/[[:space:]]+$//; s/^[[:space:]]+/ /; s/([^ ])  +/\1 /g' >> "$work/text" || true
  [ "$(wc -c < "$work/text")" -ge "$max_chars" ] && break
done

# Overlap check: long lines of the calibration text that also occur in the validation text.
grep -E '.{40,}' "$work/text" | sort -u > "$work/long_lines"
shared_lines=$(grep -cxFf "$work/long_lines" "$val" || true)
echo "calibration text: $(wc -c < "$work/text") chars; long lines shared with validation: $shared_lines of $(wc -l < "$work/long_lines")" >&2

# ~4,000-character chunks, <s> ... </s>, through the engine's tokenizer (tools/tokenize_text).
"$tokenize_text" "$(dirname "$tokenizer")" "$work/text" "$out"
