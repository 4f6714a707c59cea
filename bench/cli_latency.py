"""CLI latency: wall time of ``t2po --help`` and ``t2po train --dry-run`` (median of N subprocess runs).

Usage: python bench/cli_latency.py [--reps 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from _common import machine, median, table, write

COMMANDS = {"t2po --help": ["--help"], "t2po train --dry-run": ["train", "--dry-run", "trainer=ci"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:  # a dry run creates nothing, but never run in the checkout
        for _ in range(args.reps):
            for name, argv in COMMANDS.items():  # alternating, so load changes hit both
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "t2po_cli", *argv], cwd=cwd, capture_output=True, check=True)
                times[name].append(time.perf_counter() - t0)
    rows = [{"command": k, "median_s": median(v), "min_s": min(v), "reps": len(v)} for k, v in times.items()]
    rows.append({"command": "ratio dry-run / --help", "median_s": rows[1]["median_s"] / rows[0]["median_s"]})
    print(table(rows, ["command", "median_s", "min_s", "reps"]))
    print(write("cli_latency", {"rows": rows, "samples_s": times, "machine": machine()}))


if __name__ == "__main__":
    main()
