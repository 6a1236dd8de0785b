#!/usr/bin/env bash
# Produces every transformers reference the CPU tests compare against. Runs on the GPU
# machine (Python with torch + transformers); the man-page model is carried in .dev/manpage.
# Outputs go to $OUT (then copied into tests/reference/data/ by hand).
set -euo pipefail
out=${OUT:?set OUT}
model=${MANPAGE_MODEL:-.dev/manpage/manpage-llama-22m}
tokens=${MANPAGE_TOKENS:-.dev/manpage/manpage-val.u16}
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())'
python3 tests/reference/make_tiny_llama.py --out "$out/tiny-llama"
python3 tests/reference/make_manpage_reference.py --model "$model" --tokens "$tokens" \
  --out "$out/manpage_reference.json" --logits-out "$out/manpage_logits.safetensors"
