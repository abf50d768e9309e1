#!/usr/bin/env python3
"""Summarises the last criterion run of each benchmark: the time criterion prints, its median
per-iteration time, and the fastest of its samples.

On a shared VM the machine's speed can change by half from one minute to the next, so a mean
carries the slow moments; the fastest sample (a few thousand iterations in a row) is what the
code costs when nothing else runs. Report both.

    cargo bench -p cognitude-benches --bench router
    python3 benches/criterion_summary.py [FILTER]

FILTER keeps the benchmarks whose name contains it (`classify`, `select`).
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "target" / "criterion"


def order(row):
    """Sizes (`200B`, `10KiB`) in order of size, other names by name."""
    name = row[0]
    size = re.search(r"/(\d+)(B|KiB)$", name)
    if not size:
        return (name, 0)
    scale = 1024 if size.group(2) == "KiB" else 1
    return (name[: size.start()], int(size.group(1)) * scale)


def per_iteration(sample):
    return sorted(t / n for t, n in zip(sample["times"], sample["iters"]))


def show(ns):
    return f"{ns / 1000:.3f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def main():
    wanted = sys.argv[1] if len(sys.argv) > 1 else ""
    rows = []
    for bench in ROOT.glob("**/new/benchmark.json"):
        new = bench.parent
        name = json.loads(bench.read_text())["full_id"]
        if wanted not in name:
            continue
        estimates = json.loads((new / "estimates.json").read_text())
        # criterion prints the slope for linear sampling and the mean otherwise.
        printed = (estimates.get("slope") or estimates["mean"])["point_estimate"]
        times = per_iteration(json.loads((new / "sample.json").read_text()))
        rows.append((name, printed, times[len(times) // 2], times[0]))
    if not rows:
        raise SystemExit(f"no criterion results under {ROOT}; run the benchmarks first")
    rows.sort(key=order)
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'criterion':>10}  {'median':>10}  {'fastest':>10}")
    for name, printed, median, fastest in rows:
        print(f"{name:<{width}}  {show(printed):>10}  {show(median):>10}  {show(fastest):>10}")


if __name__ == "__main__":
    main()
