#!/usr/bin/env python3
"""Instructions the proxy executes per request, counted by callgrind: a figure that repeats on a
shared VM, where throughput moves by about 10% from one run to the next.

    benches/load/instructions.py [--requests 2000] [--top 15] [--out FILE]

Builds release binaries, starts bins/mock-llm and the proxy with the load bench's configuration
(authentication, rate limits, the memory cache, the ledger on PostgreSQL, metrics) with the proxy
under `valgrind --tool=callgrind`. For a cache miss (`cache-control: no-cache`) and then a cache
hit it sends 200 warm-up requests, zeroes the counters, sends `--requests` requests with oha at
concurrency 4 and dumps the counters; it prints the instructions per request and the proxy's own
functions that take the most of them (inclusive). User-space instructions only: the kernel's
socket work is not counted. Compare builds on an idle machine (two runs agree within 1% there);
under other load the ledger's batching and the runtime's wake-ups change the totals by a few
percent, while single functions' counts stay put. See benches/load/README.md.
"""

import argparse
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from run import say, services

WARMUP = 200
CONCURRENCY = 4


def oha_n(url, body, headers, n):
    cmd = ["oha", "--no-tui", "--output-format", "json", "-n", str(n), "-c", str(CONCURRENCY),
           "-m", "POST", "-d", body, "-H", "content-type: application/json"]
    for h in headers:
        cmd += ["-H", h]
    out = json.loads(subprocess.run(cmd + [url], check=True, capture_output=True,
                                    text=True).stdout)
    ok = out.get("statusCodeDistribution", {}).get("200", 0)
    if ok != n:
        raise SystemExit(f"expected {n} answers of 200, got {out.get('statusCodeDistribution')}")


def newest_dump(directory, before):
    dumps = [p for p in directory.glob("cg.*") if p not in before]
    if not dumps:
        raise SystemExit("callgrind wrote no dump")
    return max(dumps, key=lambda p: p.stat().st_mtime)


def total_instructions(dump):
    m = re.search(r"^summary: (\d+)$", dump.read_text(errors="replace"), re.M)
    if not m:
        raise SystemExit(f"no summary line in {dump}")
    return int(m.group(1))


def heaviest(dump, top):
    """The proxy's own functions by inclusive instructions, one line per function."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(dump)], check=True,
                          capture_output=True, text=True).stdout
    rows, seen = [], set()
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S+?:(cognitude_\S+?(?:::\{\{closure\}\})?)"
                     r"(?: \[|$)", line)
        if not m or m.group(2) in seen:
            continue
        seen.add(m.group(2))
        rows.append((int(m.group(1).replace(",", "")), m.group(2)))
    rows.sort(reverse=True)
    return rows[:top]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000, help="requests counted per path")
    ap.add_argument("--top", type=int, default=15, help="functions listed per path")
    ap.add_argument("--out", help="also write the figures as JSON to this file")
    args = ap.parse_args()
    for tool in ("oha", "valgrind", "callgrind_control", "callgrind_annotate"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (oha: cargo install oha; the others: "
                             "Debian's valgrind)")

    with services("instructions", wrapper=["valgrind", "--tool=callgrind",
                                           "--callgrind-out-file={tmp}/cg.%p"],
                  health_timeout=180) as sv:
        proxy, key, proxy_port, tmp = sv.proxy, sv.key, sv.proxy_port, sv.tmp
        url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        auth = f"authorization: Bearer {key}"
        paths = [
            ("miss", json.dumps({"model": "gpt-4o-mini", "messages": [
                {"role": "user", "content": "What is the answer?"}]}),
             [auth, "cache-control: no-cache"]),
            ("hit", json.dumps({"model": "gpt-4o-mini", "messages": [
                {"role": "user", "content": "A cached question."}]}), [auth]),
        ]
        results = {"requests": args.requests, "concurrency": CONCURRENCY, "paths": {}}
        for label, body, headers in paths:
            oha_n(url, body, headers, WARMUP)
            subprocess.run(["callgrind_control", "-z", str(proxy.pid)], check=True,
                           capture_output=True)
            oha_n(url, body, headers, args.requests)
            # Let the ledger write this run's records, so their cost is counted with it.
            time.sleep(1.5)
            before = set(tmp.glob("cg.*"))
            subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True,
                           capture_output=True)
            time.sleep(1)
            dump = newest_dump(tmp, before)
            per_request = total_instructions(dump) / args.requests
            top = heaviest(dump, args.top)
            results["paths"][label] = {
                "instructions_per_request": round(per_request),
                "functions": [{"name": n, "instructions_per_request": round(i / args.requests)}
                              for i, n in top],
            }
            print(f"{label}: {per_request:,.0f} instructions per request")
            for i, n in top:
                print(f"  {i / args.requests:>9,.0f}  {n}")
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
            say(f"figures in {args.out}")


if __name__ == "__main__":
    main()
