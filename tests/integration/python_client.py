#!/usr/bin/python3
"""A second, independent client of flute.v1 (Debian's python3-grpcio), used by the serve
integration tests. Stubs are generated at start from proto/ into a temporary directory.

  python_client.py --addr HOST:PORT MODE [options]

Modes: generate, health, info, concurrent, cancel, deadline, overload, invalid, soak.
Each prints what it checked and exits 1 with a message on the first failed check.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import grpc

SOURCE_DIR = os.environ.get(
    "FLUTE_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def load_stubs():
    """Compiles flute.proto and health.proto with grpc_tools into a temp dir; returns modules."""
    out = tempfile.mkdtemp(prefix="flute-pystubs-")
    proto_root = os.path.join(SOURCE_DIR, "proto")
    # health.proto goes under its own folder name: a generated top-level "grpc" package would
    # shadow grpcio itself.
    os.makedirs(os.path.join(out, "src", "flute_test_health"))
    shutil.copy(os.path.join(proto_root, "grpc/health/v1/health.proto"),
                os.path.join(out, "src", "flute_test_health", "health.proto"))
    from grpc_tools import protoc
    for include, proto in ((proto_root, "flute/v1/flute.proto"),
                           (os.path.join(out, "src"), "flute_test_health/health.proto")):
        rc = protoc.main(["protoc", "-I" + include, "--python_out=" + out,
                          "--grpc_python_out=" + out, os.path.join(include, proto)])
        if rc != 0:
            sys.exit("protoc failed on %s" % proto)
    sys.path.insert(0, out)
    from flute.v1 import flute_pb2, flute_pb2_grpc
    from flute_test_health import health_pb2, health_pb2_grpc
    return flute_pb2, flute_pb2_grpc, health_pb2, health_pb2_grpc


pb, pb_grpc, health_pb, health_grpc = load_stubs()


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


class Client:
    def __init__(self, addr):
        self.channel = grpc.insecure_channel(addr)
        self.stub = pb_grpc.TextGenerationStub(self.channel)
        self.health = health_grpc.HealthStub(self.channel)

    def info(self):
        return self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)

    def generate(self, timeout=None, **fields):
        """Streams one request; returns (token_ids, text, last response)."""
        tokens, text, last = [], "", None
        for response in self.stub.Generate(pb.GenerateRequest(**fields), timeout=timeout):
            tokens.extend(response.token_ids)
            text += response.text
            if response.HasField("finish_reason"):
                last = response
        return tokens, text, last

    def wait_blocks_free(self, seconds=10):
        """Waits until nothing runs or waits and every KV block is free; returns ModelInfo."""
        give_up = time.time() + seconds
        while True:
            info = self.info()
            if info.num_running == 0 and info.num_waiting == 0 and \
                    info.free_kv_blocks == info.total_kv_blocks:
                return info
            if time.time() > give_up:
                fail("KV blocks not freed: running=%d waiting=%d free=%d of %d" % (
                    info.num_running, info.num_waiting, info.free_kv_blocks, info.total_kv_blocks))
            time.sleep(0.05)


def reason_name(last):
    return pb.FinishReason.Name(last.finish_reason)


def mode_generate(client, args):
    tokens, text, last = client.generate(prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                                         temperature=0.0)
    print(text)
    print("token_ids: " + " ".join(str(t) for t in tokens))
    check(len(tokens) > 0, "no tokens streamed")
    check(last is not None, "no final response with a finish reason")
    check(last.usage.completion_tokens == len(tokens), "usage.completion_tokens != tokens streamed")
    check(last.timings.time_to_first_token_seconds > 0, "no time to first token")
    print("python client: %d tokens, finish_reason=%s, ttft=%.3fs" % (
        len(tokens), reason_name(last), last.timings.time_to_first_token_seconds))


def mode_health(client, args):
    """Liveness (the empty name) must be SERVING; readiness must be --expect when given."""
    names = health_pb.HealthCheckResponse.ServingStatus.Name
    for service in ("", "flute.v1.TextGeneration"):
        status = client.health.Check(health_pb.HealthCheckRequest(service=service), timeout=5).status
        print("health %-26r %s" % (service, names(status)))
        if service == "":
            check(names(status) == "SERVING", "liveness is %s" % names(status))
        elif args.expect:
            check(names(status) == args.expect, "readiness is %s, expected %s" % (
                names(status), args.expect))


def mode_info(client, args):
    info = client.info()
    print(json.dumps({f.name: v for f, v in info.ListFields()}, default=list))


PROMPTS = ["NAME", "SYNOPSIS", "The following options are available:", "DESCRIPTION\n",
           "ls - list directory contents", "-v, --verbose", "EXIT STATUS", "SEE ALSO",
           "grep searches for PATTERNS in each FILE.", "tar", "OPTIONS", "ENVIRONMENT"]


def concurrent_cases(n, eos_ids):
    """Mixed prompts, lengths and stop conditions, each greedy."""
    rng = random.Random(5)
    cases = []
    for i in range(n):
        case = dict(prompt=PROMPTS[i % len(PROMPTS)] + (" " * (i // len(PROMPTS))),
                    max_new_tokens=rng.choice([1, 5, 17, 40, 64]), temperature=0.0,
                    request_id="c%d" % i)
        if i % 4 == 1:
            case["stop"] = ["\n", "the"]
        if i % 4 == 2:
            case["ignore_eos"] = True
        if i % 6 == 3:
            case["logprobs"] = 3
        cases.append(case)
    return cases


def run_concurrently(client, cases):
    """Each case as its own stream, all at once; checks that each equals its solo run."""
    solo = [client.generate(**c) for c in cases]
    results = [None] * len(cases)
    errors = []

    def run(i):
        try:
            results[i] = client.generate(**cases[i])
        except grpc.RpcError as e:
            errors.append("request %d: %s %s" % (i, e.code(), e.details()))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "; ".join(errors))
    reasons = {}
    for i, (alone, together) in enumerate(zip(solo, results)):
        check(alone[0] == together[0], "request %d: concurrent tokens %s != solo %s" % (
            i, together[0], alone[0]))
        check(alone[1] == together[1], "request %d: concurrent text differs" % i)
        name = reason_name(together[2])
        check(name == reason_name(alone[2]), "request %d: finish reason differs" % i)
        reasons[name] = reasons.get(name, 0) + 1
    return reasons


def mode_concurrent(client, args):
    start = time.time()
    reasons = run_concurrently(client, concurrent_cases(args.n, client.info().eos_token_ids))
    info = client.wait_blocks_free()
    print("%d concurrent greedy streams equal their solo outputs (%.1fs; finish reasons %s; "
          "%d preemptions so far)" % (args.n, time.time() - start, reasons, info.num_preemptions))
    if args.expect_preemption and info.num_preemptions == 0:
        # Whether the mixed cases above outgrow the cache depends on how their steps interleave
        # (on a loaded 2-core machine they may not). Eight streams of 64 tokens at once need
        # about four times the cache the test gives the server: some must be preempted.
        long_cases = [dict(prompt=PROMPTS[i], max_new_tokens=64, ignore_eos=True, temperature=0.0,
                           request_id="long%d" % i) for i in range(8)]
        run_concurrently(client, long_cases)
        info = client.wait_blocks_free()
        print("8 concurrent 64-token greedy streams equal their solo outputs (%d preemptions so far)"
              % info.num_preemptions)
    if args.expect_preemption:
        check(info.num_preemptions > 0, "no preemption happened; the test meant to force one")


def long_request(**extra):
    fields = dict(prompt="The following options", max_new_tokens=400, ignore_eos=True,
                  temperature=0.0)
    fields.update(extra)
    return fields


def mode_cancel(client, args):
    before = client.generate(prompt="SYNOPSIS", max_new_tokens=20, temperature=0.0)
    call = client.stub.Generate(pb.GenerateRequest(**long_request()))
    received = 0
    for response in call:
        received += len(response.token_ids)
        if received >= 3:
            break
    info = client.info()
    check(info.num_running == 1 and info.free_kv_blocks < info.total_kv_blocks,
          "the long request does not hold a slot and blocks: %s" % info)
    call.cancel()
    info = client.wait_blocks_free()
    print("cancel after %d tokens: slot and blocks freed (%d of %d blocks free)" % (
        received, info.free_kv_blocks, info.total_kv_blocks))
    after = client.generate(prompt="SYNOPSIS", max_new_tokens=20, temperature=0.0)
    check(before[0] == after[0], "a request after the cancel differs from before it")
    print("later request unaffected")


def mode_deadline(client, args):
    start = time.time()
    try:
        client.generate(timeout=0.5, **long_request(max_new_tokens=2000))
        fail("a 2000-token request finished within a 0.5 s deadline")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "expected DEADLINE_EXCEEDED, got %s" % e.code())
    info = client.wait_blocks_free()
    print("deadline: DEADLINE_EXCEEDED after %.2fs, blocks freed (%d of %d)" % (
        time.time() - start, info.free_kv_blocks, info.total_kv_blocks))


def mode_overload(client, args):
    info = client.info()
    capacity = info.max_batch_size + info.max_queue
    n = capacity + 8
    outcomes = [None] * n   # ("ok" | code, details, seconds to the first answer)
    calls = []
    start = time.time()

    def run(i):
        call = client.stub.Generate(pb.GenerateRequest(**long_request()))
        calls.append(call)
        try:
            next(iter(call))
            outcomes[i] = ("ok", "", time.time() - start)
        except grpc.RpcError as e:
            outcomes[i] = (e.code(), e.details(), time.time() - start)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    # The rejected ones answer at once; the queued ones would wait for a free slot.
    time.sleep(3)
    for call in list(calls):
        call.cancel()
    for t in threads:
        t.join()
    rejected = [o for o in outcomes if o and o[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
    others = [o for o in outcomes if o and o[0] not in ("ok", grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                        grpc.StatusCode.CANCELLED)]
    check(not others, "unexpected answers: %s" % others)
    check(len(rejected) >= n - capacity, "only %d of %d requests rejected (capacity %d)" % (
        len(rejected), n, capacity))
    slowest = max(o[2] for o in rejected)
    check(slowest < 2.0, "a rejection took %.2f s" % slowest)
    for code, details, _ in rejected:
        check("%d requests" % info.max_queue in details, "the limit is not in the message: %s" % details)
    print("overload: %d of %d RESOURCE_EXHAUSTED within %.0f ms (%r)" % (
        len(rejected), n, 1000 * slowest, rejected[0][1]))
    client.wait_blocks_free()


def raw_generate(client, raw_bytes):
    """Sends pre-serialized GenerateRequest bytes (for what the stubs refuse to build)."""
    method = client.channel.unary_stream("/flute.v1.TextGeneration/Generate",
                                         request_serializer=None,
                                         response_deserializer=pb.GenerateResponse.FromString)
    return list(method(raw_bytes, timeout=10))


def mode_invalid(client, args):
    info = client.info()
    ctx, vocab = info.context_length, info.vocab_size
    cases = [
        ("no input", dict(max_new_tokens=5), "input is missing"),
        ("empty prompt", dict(prompt=""), "prompt is empty"),
        ("prompt past the context", dict(token_ids=pb.TokenIds(ids=[5] * ctx)), str(ctx)),
        ("token id past the vocab", dict(token_ids=pb.TokenIds(ids=[1, vocab])), str(vocab)),
        ("max_new_tokens 0", dict(prompt="a", max_new_tokens=0), "max_new_tokens"),
        ("max_new_tokens huge", dict(prompt="a", max_new_tokens=10 ** 8), "max_new_tokens"),
        ("temperature -1", dict(prompt="a", temperature=-1.0), "temperature"),
        ("temperature NaN", dict(prompt="a", temperature=float("nan")), "temperature"),
        ("top_p 0", dict(prompt="a", top_p=0.0), "top_p"),
        ("top_k -1", dict(prompt="a", top_k=-1), "top_k"),
        ("min_p 2", dict(prompt="a", min_p=2.0), "min_p"),
        ("repetition_penalty 0", dict(prompt="a", repetition_penalty=0.0), "repetition_penalty"),
        ("presence_penalty 3", dict(prompt="a", presence_penalty=3.0), "presence_penalty"),
        ("logprobs 21", dict(prompt="a", logprobs=21), "logprobs"),
        ("empty stop string", dict(prompt="a", stop=["x", ""]), "stop[1]"),
        ("stop token id -1", dict(prompt="a", stop_token_ids=[-1]), "stop_token_ids[0]"),
        ("empty messages", dict(messages=pb.ChatMessages()), "messages"),
    ]
    for name, fields, expected in cases:
        try:
            client.generate(**fields)
            fail("%s: accepted" % name)
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT,
                  "%s: expected INVALID_ARGUMENT, got %s (%s)" % (name, e.code(), e.details()))
            check(expected in e.details(), "%s: %r does not mention %r" % (name, e.details(), expected))
            print("INVALID_ARGUMENT  %-26s %s" % (name, e.details()))
    # A prompt that is not UTF-8: field 1 (prompt), length-delimited, bytes ff fe.
    try:
        raw_generate(client, b"\x0a\x03a\xff\xfe")
        fail("non-UTF-8 prompt: accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in e.details(),
              "non-UTF-8 prompt: got %s (%s)" % (e.code(), e.details()))
        print("INVALID_ARGUMENT  %-26s %s" % ("non-UTF-8 prompt", e.details()))
    client.wait_blocks_free()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    fail("no VmRSS for pid %d" % pid)


def mode_soak(client, args):
    rng = random.Random(9)
    stop_at = time.time() + args.warmup + args.seconds
    counts = {"finished": 0, "cancelled": 0, "errors": 0}
    lock = threading.Lock()

    def worker(seed):
        r = random.Random(seed)
        while time.time() < stop_at:
            fields = dict(prompt=r.choice(PROMPTS), max_new_tokens=r.randint(1, 80),
                          temperature=r.choice([0.0, 0.8]), seed=r.randint(0, 1000),
                          ignore_eos=r.random() < 0.5)
            call = client.stub.Generate(pb.GenerateRequest(**fields), timeout=30)
            cancel_after = r.randint(0, 20) if r.random() < 0.4 else None
            try:
                got = 0
                for response in call:
                    got += len(response.token_ids)
                    if cancel_after is not None and got >= cancel_after:
                        call.cancel()
                        break
                with lock:
                    counts["cancelled" if cancel_after is not None and got >= cancel_after
                           else "finished"] += 1
            except grpc.RpcError as e:
                with lock:
                    if e.code() == grpc.StatusCode.CANCELLED:
                        counts["cancelled"] += 1
                    else:
                        counts["errors"] += 1
                        print("soak error: %s %s" % (e.code(), e.details()), flush=True)

    # The first seconds of load warm up allocator pools, thread stacks and gRPC buffers;
    # RSS is sampled after them and at the end.
    threads = [threading.Thread(target=worker, args=(rng.random(),)) for _ in range(args.clients)]
    for t in threads:
        t.start()
    time.sleep(args.warmup)
    rss_start = rss_kib(args.server_pid)
    for t in threads:
        t.join()
    info = client.wait_blocks_free(seconds=30)
    rss_end = rss_kib(args.server_pid)
    growth = (rss_end - rss_start) / 1024.0
    print("soak %ds, %d clients: %s; blocks %d/%d free; RSS %.1f -> %.1f MiB (%+.1f MiB)" % (
        args.seconds, args.clients, counts, info.free_kv_blocks, info.total_kv_blocks,
        rss_start / 1024.0, rss_end / 1024.0, growth))
    check(counts["errors"] == 0, "requests failed during the soak")
    check(counts["cancelled"] > 0 and counts["finished"] > 0, "the soak did not mix cancels and finishes")
    check(growth < max(8.0, 0.10 * rss_start / 1024.0), "RSS grew by %.1f MiB" % growth)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addr", required=True)
    parser.add_argument("mode", choices=["generate", "health", "info", "concurrent", "cancel",
                                         "deadline", "overload", "invalid", "soak"])
    parser.add_argument("--prompt", default="NAME")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--expect-preemption", action="store_true",
                        help="concurrent: fail unless the server preempted a sequence")
    parser.add_argument("--expect", help="health: expected readiness (SERVING, NOT_SERVING)")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=10, help="soak: seconds before the first RSS sample")
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args()
    client = Client(args.addr)
    globals()["mode_" + args.mode](client, args)


if __name__ == "__main__":
    main()
