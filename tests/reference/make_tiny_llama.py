#!/usr/bin/env python3
"""Builds a small random LLaMA with Hugging Face transformers and writes its checkpoint and
reference logits, for the engine's parity test (tests/engine/hf_parity_test.cc).

The model exercises what a LLaMA-3 checkpoint needs: grouped-query attention (4 query heads,
2 KV heads), llama3 RoPE scaling, an untied LM head, an explicit head_dim, and a vocabulary
that is not a power of two. Logits are computed in fp32 with eager attention.

Run where transformers is installed (the GPU machine):
    python3 tests/reference/make_tiny_llama.py --out tests/reference/data/tiny-llama
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def make_config():
    common = dict(vocab_size=1003, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    try:  # transformers >= 5: rope_parameters carries theta and scaling together
        return LlamaConfig(rope_parameters=dict(ROPE, rope_theta=500000.0), **common)
    except TypeError:
        return LlamaConfig(rope_theta=500000.0, rope_scaling=dict(ROPE), **common)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(1234)
    config = make_config()
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # larger weights than the default init, so attention is not uniform
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)

    seq_len = 40  # longer than original_max_position_embeddings: scaled frequencies matter
    ids = torch.randint(0, config.vocab_size, (1, seq_len), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float().contiguous()
    save_file({"input_ids": ids[0].to(torch.int32).contiguous(), "logits": logits},
              os.path.join(args.out, "reference_logits.safetensors"))
    with open(os.path.join(args.out, "reference_info.json"), "w") as f:
        json.dump({"transformers": __import__("transformers").__version__,
                   "torch": torch.__version__, "seq_len": seq_len,
                   "logit_range": float(logits.max() - logits.min())}, f, indent=1)
    print("tiny llama written to", args.out, "logit range", float(logits.max() - logits.min()))


if __name__ == "__main__":
    main()
