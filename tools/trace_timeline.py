#!/usr/bin/env python3
"""The timeline of one traced decode step (kernels/kernel_trace.h).

Reads the CSV that the CUDA engine writes with FLUTE_KERNEL_TRACE_OUT=FILE (a build with
-DFLUTE_KERNEL_TRACE=ON) and prints, per kernel launch in start order, in microseconds from the
step's first block:
  start    the launch's first block starts (with PDL: while the previous kernel still runs)
  release  its first block passes griddepcontrol.wait (the previous kernel has completed)
  first    its first block exits
  end      its last block exits
  dep      release minus the previous launch's end: the dependency latency (grid completion,
           memory flush, wake-up)
  after    end minus release: the launch's time on the step's critical path
and then the median of each per layer over the launches of each name.

With --marks, also the quantiles over the decode attention's blocks of its diagnostic marks
(trace::Mark in kernels/attention_decode.cu's columns kernel), microseconds after each block's wait:
RoPE done, first item computed, last item's copies visible, items done (before the split
merge), and the block's exit.

usage: trace_timeline.py TRACE.csv [--all] [--marks] [--hidden 4096]
"""
import argparse
import collections
import csv
import statistics

KINDS = {1: "embedding", 2: "add+rmsnorm", 3: "lut", 4: "attention", 5: "dense", 6: "sampling", 7: "lut-tc"}


def launch_name(kind, aux0, aux1, hidden):
    """A readable name for a launch of a LLaMA decode step."""
    base = KINDS.get(kind, f"kind{kind}")
    if kind not in (3, 5, 7):
        return base
    n, k = aux0, aux1
    if n > 100000:
        return f"{base} lm head"
    if k > hidden:
        return f"{base} down"
    if n == hidden and k == hidden:
        return f"{base} o"
    if n > 3 * hidden:
        return f"{base} gate/up"
    return f"{base} qkv"


def load(path, hidden):
    launches = collections.OrderedDict()
    with open(path) as f:
        for row in csv.DictReader(f):
            grid = int(row["grid"])
            rec = launches.setdefault(grid, {"name": launch_name(int(row["kind"]), int(row["aux0"]),
                                                                  int(row["aux1"]), hidden),
                                             "blocks": 0, "start": [], "waited": [], "end": [],
                                             "marks": []})
            rec["blocks"] += 1
            rec["start"].append(int(row["start_ns"]))
            if int(row["waited_ns"]) > 0:
                rec["waited"].append(int(row["waited_ns"]))
            rec["end"].append(int(row["end_ns"]))
            if int(row["kind"]) == 4 and int(row["waited_ns"]) > 0:
                # (kernel_trace.cuh: 4 marks of 16 bits in units of 8 ns, aux0 = marks 0-1)
                packed = [int(row["aux0"]) & 0xFFFFFFFF, int(row["aux1"]) & 0xFFFFFFFF]
                marks = [(packed[i // 2] >> (16 * (i % 2)) & 0xFFFF) * 0.008 for i in range(4)]
                exit_us = (int(row["end_ns"]) - int(row["waited_ns"])) / 1000.0
                rec["marks"].append(marks + [exit_us])
    return sorted(launches.values(), key=lambda r: min(r["start"]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trace")
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--all", action="store_true", help="print every launch, not only the first layers")
    parser.add_argument("--marks", action="store_true", help="the decode attention's marks (see above)")
    args = parser.parse_args()
    launches = load(args.trace, args.hidden)
    if not launches:
        raise SystemExit("no records")
    t0 = min(min(r["start"]) for r in launches)
    us = lambda ns: (ns - t0) / 1000.0
    print(f"{'launch':<18}{'blocks':>7}{'start':>9}{'release':>9}{'first':>9}{'end':>9}{'dep':>7}{'after':>7}")
    per_name = collections.defaultdict(lambda: collections.defaultdict(list))
    prev_end = None
    for i, r in enumerate(launches):
        start, first, end = min(r["start"]), min(r["end"]), max(r["end"])
        release = min(r["waited"]) if r["waited"] else start
        dep = (release - prev_end) / 1000.0 if prev_end is not None else 0.0
        after = (end - release) / 1000.0
        stats = per_name[r["name"]]
        stats["dep"].append(dep)
        stats["after"].append(after)
        stats["early"].append((release - start) / 1000.0)
        stats["spread"].append((end - first) / 1000.0)
        if args.all or i < 14 or i >= len(launches) - 6:
            print(f"{r['name']:<18}{r['blocks']:>7}{us(start):>9.2f}{us(release):>9.2f}{us(first):>9.2f}{us(end):>9.2f}"
                  f"{dep:>7.2f}{after:>7.2f}")
        elif i == 14:
            print("  ...")
        prev_end = end
    total = (max(max(r["end"]) for r in launches) - t0) / 1000.0
    print(f"\nstep: {total:.1f} us from the first block to the last exit, {len(launches)} launches")
    print(f"\n{'per launch (median)':<18}{'count':>7}{'dep':>8}{'after':>8}{'early':>8}{'spread':>8}{'dep+after':>10}")
    for name, s in per_name.items():
        dep, after = statistics.median(s["dep"]), statistics.median(s["after"])
        print(f"{name:<18}{len(s['dep']):>7}{dep:>8.2f}{after:>8.2f}{statistics.median(s['early']):>8.2f}"
              f"{statistics.median(s['spread']):>8.2f}{dep + after:>10.2f}")
    print("\n(dep: release minus the previous launch's last exit; after: last exit minus release;")
    print(" early: release minus the launch's first start; spread: last exit minus first exit)")
    if args.marks:
        print_marks(launches)


def print_marks(launches):
    # Blocks with their last mark set (blocks without work exit before any mark).
    rows = [m for r in launches if r["name"] == "attention" for m in r["marks"] if m[3] > 0]
    if not rows:
        print("\nno attention marks (a trace build with the columns kernel: batches >= 13 of the 8B model)")
        return
    labels = ["RoPE done", "first item done", "last item's copies", "items done", "exit (merged)"]
    print(f"\nattention blocks with marks: {len(rows)}; us after the block's wait")
    print(f"{'mark':<20}{'p10':>8}{'p50':>8}{'p90':>8}{'max':>8}")
    for i, label in enumerate(labels):
        v = sorted(m[i] for m in rows)
        q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
        print(f"{label:<20}{q(0.1):>8.2f}{q(0.5):>8.2f}{q(0.9):>8.2f}{v[-1]:>8.2f}")


if __name__ == "__main__":
    main()
