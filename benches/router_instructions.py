#!/usr/bin/env python3
"""Instructions one call of the router's classifier and of its model selection take on the criterion
bench's material, counted by callgrind: a figure that repeats from run to run and from machine to
machine, where criterion's times on a shared VM can move by half between runs minutes apart.

    benches/router_instructions.py                      # the criterion bench's sizes and modes
    benches/router_instructions.py --sizes 1024,4096

Builds benches/examples/classify_calls.rs and select_calls.rs with the release profile (the one
criterion's bench profile inherits) and runs them under `valgrind --tool=callgrind`, counting only
inside `Classifier::classify` (at each size) or `Selector::select` (over the bench's 50 models, in
each mode), once with 1 call and once with 11: the difference over 10 is one call's steady-state
count (the first call also builds a searcher that is made once).
"""

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "target" / "release" / "examples"
SIZES = [100, 200, 1024, 2048, 4096, 10240, 102400]
MODES = ["cost", "latency", "quality"]


def counted(example, function, arg, calls, out):
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         f"--toggle-collect={function}", str(EXAMPLES / example), arg, str(calls)],
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
                    "--example", "classify_calls", "--example", "select_calls"],
                   cwd=ROOT, check=True)

    def per_call(example, function, arg, tmp):
        one = counted(example, function, arg, 1, f"{tmp}/one")
        eleven = counted(example, function, arg, 11, f"{tmp}/eleven")
        return (eleven - one) / 10

    with tempfile.TemporaryDirectory() as tmp:
        print(f"classify {'size':>8}  {'instructions a call':>20}  {'a byte':>7}")
        for size in sizes:
            n = per_call("classify_calls", "*Classifier*classify*", str(size), tmp)
            print(f"         {size:>8}  {n:>20,.0f}  {n / size:>7.1f}")
        print(f"select   {'mode':>8}  {'instructions a call':>20}")
        for mode in MODES:
            n = per_call("select_calls", "*Selector*select*", mode, tmp)
            print(f"         {mode:>8}  {n:>20,.0f}")


if __name__ == "__main__":
    main()
