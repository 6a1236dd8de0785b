#!/usr/bin/env python3
"""Reference outputs of transformers for ../shared/models/manpage-llama-22m, computed in fp32
from the bf16 weights (TF32 off): greedy continuations of a few prompts, the tokenizer's ids
for those prompts, logits for the first tokens of the validation set, and the perplexity of
the first windows of manpage-val.u16 (for a CI-sized slice of `flute ppl`).

    python3 tests/reference/make_manpage_reference.py --model DIR --tokens FILE --out FILE.json
"""
import argparse
import json

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaForCausalLM

PROMPTS = [
    "NAME\n       ls - list directory contents",
    "The following options are available:",
    "SYNOPSIS\n       grep [OPTION...] PATTERNS [FILE...]",
    "If the file does not exist,",
    "tar - an archiving utility",
    "Übersetzung: 🙂 ünïcödé",
]


def perplexity(model, ids, window, num_windows, device):
    total_nll, total_count = 0.0, 0
    for w in range(num_windows):
        chunk = torch.tensor(ids[w * window:(w + 1) * window + 1], dtype=torch.long, device=device)
        inputs, targets = chunk[:-1], chunk[1:]
        if len(targets) < window:
            break
        with torch.no_grad():
            logits = model(input_ids=inputs[None]).logits[0].float()
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        total_nll += float(nll)
        total_count += len(targets)
    return float(np.exp(total_nll / total_count)), total_count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--logits-out", required=True)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16,
                                             attn_implementation="eager")
    model = model.float().to(device).eval()

    greedy = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt).input_ids
        with torch.no_grad():
            out = model.generate(torch.tensor([ids], device=device), max_new_tokens=48,
                                 do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=0)
        new_ids = out[0, len(ids):].tolist()
        greedy.append({"prompt": prompt, "prompt_ids": ids, "output_ids": new_ids,
                       "output_text": tokenizer.decode(new_ids)})

    val = np.fromfile(args.tokens, dtype="<u2").astype(np.int64)
    # Windows as in the model README: window i = ids[512 i, 512 i + 512), target = next id.
    window = 512
    first = val[:64]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(first[None], device=device)).logits[0].float().cpu()
    save_file({"input_ids": torch.tensor(first, dtype=torch.int32), "logits": logits.contiguous()},
              args.logits_out)

    slices = {}
    for n in (4, 16):
        ppl, count = perplexity(model, val.tolist(), window, n, device)
        slices[str(n)] = {"ppl": ppl, "scored_tokens": count}
    full_windows = (len(val) - 1) // window
    full_ppl, full_count = perplexity(model, val.tolist(), window, full_windows, device)
    result = {"model": "manpage-llama-22m", "dtype": "fp32 compute from bf16 weights",
              "transformers": __import__("transformers").__version__, "torch": torch.__version__,
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "greedy": greedy, "ppl_first_windows": slices,
              "ppl_full": {"ppl": full_ppl, "windows": full_windows, "scored_tokens": full_count}}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
    print(json.dumps({"ppl_full": result["ppl_full"], "slices": slices}))


if __name__ == "__main__":
    main()
