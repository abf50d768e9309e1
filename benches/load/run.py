#!/usr/bin/env python3
"""End-to-end load bench: Cognitude with every feature on, against the same load sent straight
to the upstream.

    benches/load/run.py [--duration 10] [--concurrency 1,16,64,256] [--rates 250,500,1000]
                        [--soak 0] [--out benches/load/results.json]

Builds release binaries, starts bins/mock-llm (fixed answer, no artificial latency) and the proxy
with authentication, rate limits (set high), the response cache, the ledger on PostgreSQL and
metrics all on, then drives both with oha (`cargo install oha`). Per setting it prints
throughput, p50/p90/p99/p99.9 latency, the proxy's overhead at each percentile, the proxy's CPU
time per request and its peak RSS; then time to first token of a stream through the proxy and
direct. Every run is bounded in time. See benches/load/README.md.
"""

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG = os.environ.get("PGHOST_URL", "postgres://postgres@127.0.0.1:5432")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg):
    print(f"load: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line (11 and 12 after the command).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu_seconds():
    """CPU time of every PostgreSQL process (the ledger's inserts run in them), counting those
    that have exited (autovacuum workers, say) through the postmaster's children's times."""
    procs = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if stat.split("(", 1)[1].startswith("postgres)"):
            procs[int(d.name)] = stat.rsplit(")", 1)[1].split()
    total = 0.0
    for fields in procs.values():
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        if int(fields[1]) not in procs:  # the postmaster: its parent is not PostgreSQL
            total += (int(fields[13]) + int(fields[14])) / CLK_TCK
    return total


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def machine_seconds():
    """CPU time of the whole machine, all cores: (busy, stolen). Busy is user, system, irq and
    softirq; stolen is time the hypervisor ran something else while this VM wanted to run."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / CLK_TCK, f[7] / CLK_TCK


def proc_status_kb(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def oha(url, body, headers, concurrency, duration, rate=None):
    cmd = [
        "oha", "--no-tui", "--output-format", "json", "-z", f"{duration}s",
        "-c", str(concurrency), "-m", "POST", "-d", body,
        "-H", "content-type: application/json",
    ]
    for h in headers:
        cmd += ["-H", h]
    if rate:
        cmd += ["-q", str(rate)]
    cmd.append(url)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    codes = r.get("statusCodeDistribution", {})
    ok = int(codes.get("200", 0))
    bad = {k: v for k, v in codes.items() if k != "200"}
    p = r["latencyPercentiles"]
    return {
        "requests": ok + sum(int(v) for v in bad.values()),
        "non_200": bad,
        "errors": r.get("errorDistribution", {}),
        "rps": r["summary"]["requestsPerSec"],
        "p50_ms": p["p50"] * 1e3,
        "p90_ms": p["p90"] * 1e3,
        "p99_ms": p["p99"] * 1e3,
        "p99.9_ms": p["p99.9"] * 1e3,
    }


def ttft(url, body, headers, n):
    """Time to the first byte of the body of a stream (the first chunk), sequential requests."""
    samples = []
    for _ in range(n):
        cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{time_starttransfer}", "-X", "POST",
               "-H", "content-type: application/json", "-d", body, url]
        for h in headers:
            cmd[1:1] = ["-H", h]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        samples.append(float(out) * 1e3)
    samples.sort()
    q = lambda f: samples[min(len(samples) - 1, int(f * len(samples)))]
    return {"p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "n": n}


def proxy_config(proxy_port, mock_port, db, tmp, ratelimit=True):
    """The proxy's configuration for the bench: authentication, rate limits set high enough
    never to refuse, the memory cache, the ledger on PostgreSQL and metrics, all on."""
    return f"""
[server]
listen = "127.0.0.1:{proxy_port}"
[log]
level = "warn"
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"
api_key = "sk-bench"
[[models]]
name = "gpt-4o-mini"
provider = "up"
[database]
url = "{PG}/{db}"
[ledger]
spill_path = "{tmp}/ledger.spill"
[cache]
enabled = true
[ratelimit]
enabled = {"true" if ratelimit else "false"}
requests_per_minute = 1000000000
tokens_per_minute = 1000000000000
[alerts]
enabled = false
"""


@contextlib.contextmanager
def services(name, ratelimit=True, wrapper=(), health_timeout=30):
    """Builds the release binaries, then runs mock-llm and the proxy (its command prefixed by
    `wrapper`, valgrind say, where `{tmp}` stands for the run's scratch directory) with `proxy_config` on a database of its own and an organization
    with one key. Yields what it started; stops both and drops the database on the way out."""
    say("building release binaries")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "cognitude",
                    "-p", "cognitude-mock-llm"], check=True, cwd=ROOT)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    tmp = Path(tempfile.mkdtemp(prefix=f"cognitude-{name}-"))
    procs = []
    db = f"cognitude_{name}_{os.getpid()}"
    try:
        subprocess.run(["psql", PG + "/postgres", "-qc", f"CREATE DATABASE {db}"], check=True)
        mock_port, proxy_port = free_port(), free_port()
        mock = subprocess.Popen([target / "mock-llm", "--port", str(mock_port),
                                 "--answer", "The answer is 42."],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(mock)
        cfg = tmp / "cognitude.toml"
        cfg.write_text(proxy_config(proxy_port, mock_port, db, tmp, ratelimit=ratelimit))
        cli = lambda *a: subprocess.run([target / "cognitude", "--config", cfg, *a], check=True,
                                        capture_output=True, text=True).stdout
        cli("orgs", "create", "bench")
        key = cli("keys", "create", "--org", "bench").strip().splitlines()[-1]
        command = [w.format(tmp=tmp) for w in wrapper]
        command += [target / "cognitude", "--config", cfg, "serve"]
        proxy = subprocess.Popen(command,
                                 stdout=subprocess.DEVNULL, stderr=open(tmp / "proxy.log", "w"))
        procs.append(proxy)
        wait_http(f"http://127.0.0.1:{proxy_port}/health", timeout=health_timeout)
        wait_http(f"http://127.0.0.1:{mock_port}/v1/models")
        yield types.SimpleNamespace(mock=mock, proxy=proxy, key=key, db=db, tmp=tmp,
                                    mock_port=mock_port, proxy_port=proxy_port)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["psql", PG + "/postgres", "-qc", f"DROP DATABASE IF EXISTS {db}"])
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10, help="seconds per run")
    ap.add_argument("--concurrency", default="1,16,64,256")
    ap.add_argument("--rates", default="250,500,1000", help="fixed request rates (req/s)")
    ap.add_argument("--soak", type=int, default=0, help="seconds of soak at the first rate")
    ap.add_argument("--out", default=str(ROOT / "benches/load/results.json"))
    ap.add_argument("--no-ratelimit", action="store_true",
                    help="run with rate limiting off, to measure what it costs")
    args = ap.parse_args()
    if not shutil.which("oha"):
        raise SystemExit("oha is not installed: cargo install oha")

    with services("load", ratelimit=not args.no_ratelimit) as sv:
        mock, proxy, key, db = sv.mock, sv.proxy, sv.key, sv.db
        mock_port, proxy_port = sv.mock_port, sv.proxy_port
        time.sleep(1)
        idle_rss_mb = proc_status_kb(proxy.pid, "VmRSS") / 1024
        say(f"proxy idle RSS {idle_rss_mb:.1f} MB")

        direct = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
        through = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        auth = f"authorization: Bearer {key}"
        body = json.dumps({"model": "gpt-4o-mini",
                           "messages": [{"role": "user", "content": "What is the answer?"}]})
        hit_body = json.dumps({"model": "gpt-4o-mini",
                               "messages": [{"role": "user", "content": "A cached question."}]})
        # The load tool sends one body; `no-cache` makes every request a miss (the lookup is
        # skipped, the upstream called and the answer stored), the work a unique prompt causes.
        miss_headers = [auth, "cache-control: no-cache"]
        urllib.request.urlopen(urllib.request.Request(
            through, data=hit_body.encode(), method="POST",
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"}))

        results = {"machine": machine(), "duration_s": args.duration, "idle_rss_mb": idle_rss_mb,
                   "ratelimit": not args.no_ratelimit,
                   "concurrency": [], "rates": []}

        def ledger_count():
            return int(subprocess.run(
                ["psql", f"{PG}/{db}", "-tAc", "SELECT count(*) FROM usage_records"],
                check=True, capture_output=True, text=True).stdout.strip())

        def settle(timeout=120):
            """Waits until the ledger has written what the last run queued, so no run pays
            for the one before it."""
            deadline = time.time() + timeout
            metrics = f"http://127.0.0.1:{proxy_port}/metrics"
            last = -1
            while time.time() < deadline:
                text = urllib.request.urlopen(metrics, timeout=5).read().decode()
                queued = re.search(r"^cognitude_ledger_queued (\S+)$", text, re.M)
                n = ledger_count()
                if (queued is None or float(queued.group(1)) == 0) and n == last:
                    return
                last = n
                time.sleep(0.5)
            say("the ledger did not settle; going on")

        def measured(label, fn):
            settle()
            cpu0 = proc_cpu_seconds(proxy.pid)
            up0, pg0 = proc_cpu_seconds(mock.pid), postgres_cpu_seconds()
            tool0, (all0, steal0) = children_cpu_seconds(), machine_seconds()
            r = fn()
            cpu = proc_cpu_seconds(proxy.pid) - cpu0
            n = max(1, r["requests"])
            r["proxy_cpu_us_per_request"] = cpu * 1e6 / n
            # Where the cores went, per request: the upstream, PostgreSQL (the ledger), the
            # load tool, and the whole machine.
            r["upstream_cpu_us_per_request"] = (proc_cpu_seconds(mock.pid) - up0) * 1e6 / n
            r["postgres_cpu_us_per_request"] = (postgres_cpu_seconds() - pg0) * 1e6 / n
            r["load_tool_cpu_us_per_request"] = (children_cpu_seconds() - tool0) * 1e6 / n
            busy, steal = machine_seconds()
            r["machine_cpu_us_per_request"] = (busy - all0) * 1e6 / n
            r["stolen_cpu_us_per_request"] = (steal - steal0) * 1e6 / n
            r["proxy_peak_rss_mb"] = proc_status_kb(proxy.pid, "VmHWM") / 1024
            say(f"{label}: {r['rps']:.0f} req/s p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms; "
                f"CPU µs/req proxy {r['proxy_cpu_us_per_request']:.1f} "
                f"upstream {r['upstream_cpu_us_per_request']:.1f} "
                f"postgres {r['postgres_cpu_us_per_request']:.1f} "
                f"load tool {r['load_tool_cpu_us_per_request']:.1f} "
                f"machine {r['machine_cpu_us_per_request']:.1f} "
                f"(stolen {r['stolen_cpu_us_per_request']:.1f})")
            return r

        for c in [int(x) for x in args.concurrency.split(",")]:
            row = {"concurrency": c}
            row["direct"] = measured(f"c={c} direct", lambda: oha(direct, body, [], c, args.duration))
            row["miss"] = measured(f"c={c} proxy miss",
                                   lambda: oha(through, body, miss_headers, c, args.duration))
            row["hit"] = measured(f"c={c} proxy hit",
                                  lambda: oha(through, hit_body, [auth], c, args.duration))
            results["concurrency"].append(row)
        for q in [int(x) for x in args.rates.split(",")]:
            row = {"rate": q}
            row["direct"] = measured(f"{q}/s direct",
                                     lambda: oha(direct, body, [], 64, args.duration, q))
            row["miss"] = measured(f"{q}/s proxy miss",
                                   lambda: oha(through, body, miss_headers, 64, args.duration, q))
            row["hit"] = measured(f"{q}/s proxy hit",
                                  lambda: oha(through, hit_body, [auth], 64, args.duration, q))
            results["rates"].append(row)

        stream_body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                                  "messages": [{"role": "user", "content": "Stream it."}]})
        results["ttft"] = {
            "direct": ttft(direct, stream_body, [], 200),
            "proxy": ttft(through, stream_body, miss_headers, 200),
        }
        say(f"ttft direct p50 {results['ttft']['direct']['p50_ms']:.3f} ms, "
            f"proxy p50 {results['ttft']['proxy']['p50_ms']:.3f} ms")

        if args.soak:
            rate = int(args.rates.split(",")[0])
            samples = []
            deadline = time.time() + args.soak
            load = subprocess.Popen(["oha", "--no-tui", "--output-format", "json", "-z",
                                     f"{args.soak}s", "-c", "64", "-q", str(rate), "-m", "POST",
                                     "-d", body, "-H", "content-type: application/json",
                                     "-H", auth, "-H", "cache-control: no-cache", through],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            while time.time() < deadline:
                time.sleep(min(10, max(0.0, deadline - time.time())))
                samples.append(proc_status_kb(proxy.pid, "VmRSS") / 1024)
            load.communicate()
            results["soak"] = {"seconds": args.soak, "rate": rate, "rss_mb": samples}
            say(f"soak RSS {min(samples):.1f}–{max(samples):.1f} MB")

        # Every proxied request is in the ledger: a check that the bench ran with it on.
        settle()
        results["ledger_records"] = ledger_count()
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(table(results))
        say(f"raw results in {args.out}")


def machine():
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": os.uname().release,
            "load_average_at_start": os.getloadavg()}


def table(results):
    cols = ["p50_ms", "p90_ms", "p99_ms", "p99.9_ms"]
    lines = ["| setting | path | req/s | p50 | p90 | p99 | p99.9 | overhead p50 / p99 / p99.9 (ms) | CPU µs/req | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, rows in (("concurrency", results["concurrency"]), ("rate", results["rates"])):
        for row in rows:
            setting = f"c={row[key]}" if key == "concurrency" else f"{row[key]}/s, c=64"
            d = row["direct"]
            for path in ("direct", "miss", "hit"):
                r = row[path]
                over = "" if path == "direct" else " / ".join(
                    f"{r[c] - d[c]:+.3f}" for c in ("p50_ms", "p99_ms", "p99.9_ms"))
                cpu = "" if path == "direct" else f"{r['proxy_cpu_us_per_request']:.0f}"
                rss = "" if path == "direct" else f"{r['proxy_peak_rss_mb']:.0f}"
                lines.append(f"| {setting} | {path} | {r['rps']:.0f} | " +
                             " | ".join(f"{r[c]:.3f}" for c in cols) +
                             f" | {over} | {cpu} | {rss} |")
    t = results["ttft"]
    lines.append("")
    lines.append(f"Time to first token (200 sequential streams): direct p50 {t['direct']['p50_ms']:.3f} ms "
                 f"p99 {t['direct']['p99_ms']:.3f} ms; through the proxy p50 {t['proxy']['p50_ms']:.3f} ms "
                 f"p99 {t['proxy']['p99_ms']:.3f} ms.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
