#!/usr/bin/env python3
"""Instructions one call of the router's classifier takes on the criterion bench's material, counted
by callgrind: a figure that repeats from run to run and from machine to machine, where criterion's
times on a shared VM can move by half between runs minutes apart.

    benches/router_instructions.py                      # the criterion bench's sizes
    benches/router_instructions.py --sizes 1024,4096

Builds benches/examples/classify_calls.rs with the release profile (the one criterion's bench
profile inherits) and runs it under `valgrind --tool=callgrind`, counting only inside
`Classifier::classify`, once with 1 call and once with 11 calls per size: the difference over
10 is one call's steady-state count (the first call also builds a searcher that is made once).
"""

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "target" / "release" / "examples" / "classify_calls"
SIZES = [100, 200, 1024, 2048, 4096, 10240, 102400]


def counted(size, calls, out):
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         "--toggle-collect=*Classifier*classify*", str(EXAMPLE), str(size), str(calls)],
        check=True, capture_output=True)
    text = Path(out).read_text()
    match = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    if not match:
        raise SystemExit(f"no instruction total in {out}")
    return int(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="comma-separated message sizes in bytes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "cognitude-benches",
                    "--example", "classify_calls"], cwd=ROOT, check=True)
    print(f"{'size':>8}  {'instructions a call':>20}  {'a byte':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            one = counted(size, 1, f"{tmp}/one")
            eleven = counted(size, 11, f"{tmp}/eleven")
            per_call = (eleven - one) / 10
            print(f"{size:>8}  {per_call:>20,.0f}  {per_call / size:>7.1f}")


if __name__ == "__main__":
    main()
