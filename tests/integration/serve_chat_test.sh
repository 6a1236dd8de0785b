#!/bin/bash
# flute serve applies the model's chat template to Generate `messages`, end to end: a random
# 1-layer model gets the real LLaMA-3 template (from the transformers golden file) in its
# tokenizer_config.json; a [system, user] chat must be encoded exactly as the golden
# rendering of that conversation (usage.prompt_tokens = `flute tokenize` of it), and must
# generate the same greedy tokens and logprobs as those ids sent as `token_ids`. The rendered
# string sent as `prompt` gets one more token: the BOS the server adds to raw prompts.
# A model without a chat template answers INVALID_ARGUMENT naming the chat template.
# Needs no ../shared: only the flute binary and python3-grpcio / python3-grpc-tools.
source "$(dirname "$0")/serve_lib.sh"
"$PYTHON" -c "import grpc, grpc_tools" 2>/dev/null || {
  echo "SKIP: $PYTHON lacks grpcio / grpc_tools (python3-grpcio python3-grpc-tools)"
  exit 77
}
GOLDEN="$FLUTE_SOURCE_DIR/tests/reference/data/tokenizer_chat_golden.json"
MODEL="$WORK_DIR/model"
NO_CHAT_MODEL="$WORK_DIR/model-no-chat"

"$FLUTE_BIN" init-random-model --out "$MODEL" --layers 1 >/dev/null
cp -r "$MODEL" "$NO_CHAT_MODEL"

# Adds the LLaMA-3 template to tokenizer_config.json (other keys kept) and writes the
# expected rendering of the golden [system, user] conversation. The golden file renders with
# bos_token "<|begin_of_text|>"; the server renders with this model's BOS text ("<s>"), which
# the template writes only at the very start, so the expected string swaps that prefix.
"$PYTHON" - "$GOLDEN" "$MODEL" "$WORK_DIR" <<'EOF'
import json, sys
golden_path, model, work = sys.argv[1:]
golden = json.load(open(golden_path))
config_path = model + "/tokenizer_config.json"
config = json.load(open(config_path))
config["chat_template"] = golden["templates"]["llama3"]
json.dump(config, open(config_path, "w"), indent=2)
case = next(r for r in golden["renderings"]
            if r["template"] == "llama3" and r["add_generation_prompt"]
            and [m["role"] for m in r["messages"]] == ["system", "user"])
assert case["output"].startswith(golden["bos_token"]), case["output"]
bos = config["bos_token"]
rendered = bos + case["output"][len(golden["bos_token"]):]
json.dump(case["messages"], open(work + "/messages.json", "w"))
json.dump([rendered], open(work + "/rendered.json", "w"))
json.dump({"rendered": rendered, "without_bos": rendered[len(bos):]},
          open(work + "/expected.json", "w"))
print("conversation:", json.dumps(case["messages"]))
print("expected rendering:", json.dumps(rendered))
EOF
# The rendered string's ids exactly as the server's tokenizer encodes it, BOS text included
# (add_special_tokens off: the template writes the BOS itself).
"$FLUTE_BIN" tokenize --tokenizer "$MODEL" --json-in "$WORK_DIR/rendered.json" \
  >"$WORK_DIR/rendered_ids.json"
echo "expected ids: $(cat "$WORK_DIR/rendered_ids.json")"

start_server "$MODEL" --max-batch-size 4 --kv-cache-mb 16
"$PYTHON" - "$ADDR" "$WORK_DIR" <<'EOF'
import json, os, sys
sys.path.insert(0, os.path.join(os.environ["FLUTE_SOURCE_DIR"], "tests", "integration"))
import python_client as pc
addr, work = sys.argv[1:]
pb = pc.pb
messages = json.load(open(work + "/messages.json"))
expected = json.load(open(work + "/expected.json"))
expected_ids = json.load(open(work + "/rendered_ids.json"))[0]
client = pc.Client(addr)
common = dict(max_new_tokens=4, temperature=0, ignore_eos=True)

chat = pb.ChatMessages(messages=[pb.ChatMessage(role=m["role"], content=m["content"])
                                 for m in messages])
chat_tokens, chat_text, chat_last = client.generate(timeout=60, messages=chat, **common)
pc.check(chat_last is not None, "chat request: no final response")
pc.check(chat_last.usage.prompt_tokens == len(expected_ids),
         "chat prompt_tokens %d != %d ids of the golden rendering"
         % (chat_last.usage.prompt_tokens, len(expected_ids)))
pc.check(len(chat_tokens) == 4, "chat generated %d tokens, expected 4" % len(chat_tokens))
print("chat: prompt_tokens=%d tokens=%s" % (chat_last.usage.prompt_tokens, chat_tokens))

# A raw prompt is encoded WITH special tokens (the server prepends the BOS id), a chat
# WITHOUT them (the template writes the BOS text, which the tokenizer splits out as the BOS
# id). The rendering minus its BOS text is NOT an equivalent raw prompt with this
# SentencePiece tokenizer: alone, its first piece gets the dummy-prefix space ("\u2581<"),
# while after the split-out BOS it does not ("<"). So the raw prompt sent here is the whole
# rendering, and it must be exactly one BOS id longer than the chat: [BOS] + chat ids.
server_ids = client.stub.Tokenize(pb.TokenizeRequest(text=expected["rendered"],
                                                     add_special_tokens=False), timeout=10)
pc.check(list(server_ids.token_ids) == expected_ids,
         "Tokenize RPC of the rendering %s != flute tokenize %s"
         % (list(server_ids.token_ids), expected_ids))
bos = client.info().bos_token_id
with_bos = client.stub.Tokenize(pb.TokenizeRequest(text=expected["rendered"],
                                                   add_special_tokens=True), timeout=10)
pc.check(list(with_bos.token_ids) == [bos] + expected_ids,
         "a raw prompt of the rendering should encode to [BOS] + chat ids, got %s"
         % list(with_bos.token_ids))
raw_tokens, _, raw_last = client.generate(timeout=60, prompt=expected["rendered"], **common)
pc.check(raw_last.usage.prompt_tokens == len(expected_ids) + 1,
         "raw prompt_tokens %d != %d + 1 (the BOS the server adds to raw prompts)"
         % (raw_last.usage.prompt_tokens, len(expected_ids)))
dup_tokens, _, _ = client.generate(timeout=60, token_ids=pb.TokenIds(ids=[bos] + expected_ids),
                                   **common)
pc.check(raw_tokens == dup_tokens, "raw prompt tokens %s != its token_ids [BOS]+ids tokens %s"
         % (raw_tokens, dup_tokens))

# The chat generates exactly what its expected ids generate, down to the logprobs (which
# depend on every prompt token through attention, unlike the argmax of a random model).
def with_logprobs(**input_field):
    tokens, logprobs = [], []
    for r in client.stub.Generate(pb.GenerateRequest(logprobs=1, **input_field, **common),
                                  timeout=60):
        tokens.extend(r.token_ids)
        logprobs.extend(lp.chosen.logprob for lp in r.logprobs)
    return tokens, logprobs
chat_run = with_logprobs(messages=chat)
ids_run = with_logprobs(token_ids=pb.TokenIds(ids=expected_ids))
pc.check(chat_run[0] == chat_tokens, "chat tokens changed between runs: %s vs %s"
         % (chat_run[0], chat_tokens))
pc.check(ids_run[0] == chat_run[0], "token_ids tokens %s != chat tokens %s"
         % (ids_run[0], chat_run[0]))
pc.check(len(chat_run[1]) == 4 and all(abs(a - b) <= 1e-5 for a, b in zip(chat_run[1], ids_run[1])),
         "token_ids logprobs %s != chat logprobs %s" % (ids_run[1], chat_run[1]))
print("chat logprobs %s = token_ids logprobs" % ["%.5f" % x for x in chat_run[1]])
print("raw prompt = [BOS] + chat ids; token_ids generate the chat's tokens")
EOF
stop_server

echo "== a model without a chat template"
start_server "$NO_CHAT_MODEL" --max-batch-size 4 --kv-cache-mb 16
"$PYTHON" - "$ADDR" <<'EOF'
import os, sys
sys.path.insert(0, os.path.join(os.environ["FLUTE_SOURCE_DIR"], "tests", "integration"))
import grpc
import python_client as pc
pb = pc.pb
client = pc.Client(sys.argv[1])
chat = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="Hello!")])
try:
    client.generate(timeout=60, messages=chat, max_new_tokens=4, temperature=0)
    pc.fail("messages to a model without a chat template succeeded")
except grpc.RpcError as e:
    pc.check(e.code() == grpc.StatusCode.INVALID_ARGUMENT,
             "expected INVALID_ARGUMENT, got %s: %s" % (e.code(), e.details()))
    pc.check("chat template" in e.details() and "chat_template" in e.details(),
             "message does not name the chat template: %s" % e.details())
    print("no template: %s: %s" % (e.code().name, e.details()))
EOF
stop_server
echo "PASS"
