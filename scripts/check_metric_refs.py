#!/usr/bin/env python3
"""Checks that every flute_* metric referenced by the Grafana dashboard and the Prometheus
rules is one the server exports.

The exported set comes from a live scrape (--metrics-url http://HOST:PORT/metrics, reading
the `# TYPE` lines) or, by default, from the registrations in server/metrics.cc. Histograms
export NAME_bucket, NAME_sum and NAME_count; those are what queries use.

Exit status: 0 when every reference resolves, 1 when some do not (each is listed with the
file that uses it), 2 on a usage or input error.
"""
import argparse
import json
import pathlib
import re
import sys
import urllib.request

NAME = re.compile(r"\bflute_[a-zA-Z0-9_]*[a-zA-Z0-9]\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported_from_scrape(url):
    """{series name: type} from the # TYPE lines of a /metrics page."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    types = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"] and parts[2].startswith("flute_"):
            types[parts[2]] = parts[3]
    return types


def exported_from_source(path):
    """{name: type} from server/metrics.cc: each metric name literal, typed by the builder
    (AddHistogram / BuildHistogram, AddCounter / BuildCounter, AddGauge / BuildGauge) that
    registers it."""
    text = path.read_text()
    types = {}
    pattern = re.compile(
        r'(AddHistogram|AddCounter|AddGauge|BuildHistogram|BuildCounter|BuildGauge)'
        r'\s*\([^"]*?"(flute_[a-z0-9_]+)"', re.S)
    for builder, name in pattern.findall(text):
        types[name] = ("histogram" if "Histogram" in builder else
                       "counter" if "Counter" in builder else "gauge")
    return types


def series_names(types):
    names = set()
    for name, kind in types.items():
        if kind == "histogram":
            names.update(name + s for s in HISTOGRAM_SUFFIXES)
        else:
            names.add(name)
    return names


def dashboard_exprs(path):
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and isinstance(value, str):
                    yield value
                elif isinstance(value, dict) and key == "query" and "query" in value:
                    yield value["query"]
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
    return list(walk(json.loads(path.read_text())))


def rule_exprs(path):
    # Rules files are YAML; the expressions are the `expr:` values (plain or block scalars).
    # Scanning the whole text for flute_* names covers both without a YAML dependency.
    return [path.read_text()]


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics-url", help="scrape this /metrics page for the exported set")
    parser.add_argument("--metrics-source", default=str(root / "server" / "metrics.cc"))
    parser.add_argument("--dashboard", action="append",
                        help="Grafana dashboard JSON (default: deploy/grafana/dashboards/*.json)")
    parser.add_argument("--rules", action="append",
                        help="Prometheus rules file (default: deploy/prometheus/alerts.yml)")
    args = parser.parse_args()

    try:
        if args.metrics_url:
            types = exported_from_scrape(args.metrics_url)
            origin = args.metrics_url
        else:
            types = exported_from_source(pathlib.Path(args.metrics_source))
            origin = args.metrics_source
    except (OSError, ValueError) as e:
        print(f"error: cannot read the exported metrics from {args.metrics_url or args.metrics_source}: {e}",
              file=sys.stderr)
        return 2
    if not types:
        print(f"error: no flute_* metrics found in {origin}", file=sys.stderr)
        return 2
    exported = series_names(types)

    dashboards = args.dashboard or sorted(str(p) for p in (root / "deploy" / "grafana" / "dashboards").glob("*.json"))
    rules = args.rules or [str(root / "deploy" / "prometheus" / "alerts.yml")]
    references = {}  # name -> set of files
    try:
        for f in dashboards:
            for expr in dashboard_exprs(pathlib.Path(f)):
                for name in NAME.findall(expr):
                    references.setdefault(name, set()).add(f)
        for f in rules:
            for expr in rule_exprs(pathlib.Path(f)):
                for name in NAME.findall(expr):
                    references.setdefault(name, set()).add(f)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not references:
        print("error: the dashboards and rules reference no flute_* metric at all", file=sys.stderr)
        return 2

    missing = sorted(n for n in references if n not in exported)
    for name in missing:
        print(f"unknown metric {name} (used in {', '.join(sorted(references[name]))}); "
              f"not exported according to {origin}", file=sys.stderr)
    if missing:
        return 1
    print(f"ok: {len(references)} metric names referenced by {len(dashboards)} dashboard(s) and "
          f"{len(rules)} rules file(s), all exported ({len(types)} metrics in {origin})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
