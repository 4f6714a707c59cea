"""Data-parallel scaling: episodes per second and step time of 1 rank vs 2 ranks (1 CPU thread each).

Both contenders are the same ddp run of the tiny model launched by ``t2po train --nproc N``; each
repetition runs them in rotating order (``_common.alternate``) in fresh run folders. Step times come from
the runs' own ``timing_s/step`` rows (the slowest rank's time), the first step dropped as warm-up, so
process start, model load and the warm start are not counted; wall time per run is reported too.

Target (issue #16): 2 ranks >= 1.6x one rank's episodes per second on this 2-core machine. The numbers are
only meaningful with the machine's load next to them (``loadavg_1m`` in the JSON; report ``uptime``).

Usage: python bench/scale.py [--reps 3] [--steps 4] [--tasks 8] [--group 4] [--env webshop]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, median, table, write


def _run(nproc: int, args: argparse.Namespace, root: Path, rep: int) -> dict[str, float]:
    run = root / f"n{nproc}_r{rep}"
    cmd = [sys.executable, "-m", "t2po_cli", "train", "--run-dir", str(run), "--nproc", str(nproc),
           "trainer=ci", f"env={args.env}", "tracking.mlflow=false", "trainer.distributed.strategy=ddp",
           f"trainer.steps={args.steps}", f"trainer.tasks_per_step={args.tasks}", f"trainer.group_size={args.group}",
           "trainer.val_every=0", "trainer.save_every=0", f"trainer.seed={rep}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"nproc={nproc} failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r["metrics"] for r in rows if r["split"] == "train"][1:]  # step 1: warm-up
    step_s = statistics.mean(m["timing_s/step"] for m in train)
    return {"step_s": step_s, "episodes_per_s": args.tasks * args.group / step_s, "wall_s": wall,
            "rollout_s": statistics.mean(m["timing_s/rollout"] for m in train),
            "update_s": statistics.mean(m["timing_s/update"] for m in train)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--env", default="webshop")
    args = ap.parse_args()
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="t2po-scale-") as tmp:
        for rep in range(args.reps):
            for nproc in ((1, 2) if rep % 2 == 0 else (2, 1)):  # rotating order, as _common.alternate
                results[nproc].append(_run(nproc, args, Path(tmp), rep))
    rows = []
    for nproc, runs in results.items():
        rows.append({"ranks": nproc, **{k: median([r[k] for r in runs])
                                        for k in ("episodes_per_s", "step_s", "rollout_s", "update_s", "wall_s")}})
    ratio = rows[1]["episodes_per_s"] / rows[0]["episodes_per_s"]
    payload = {"machine": machine(), "args": vars(args), "runs": {str(k): v for k, v in results.items()},
               "median": rows, "speedup_2_over_1": ratio, "target": 1.6}
    path = write("scale", payload)
    print(table(rows, ["ranks", "episodes_per_s", "step_s", "rollout_s", "update_s", "wall_s"]))
    print(f"2 ranks / 1 rank episodes per second: {ratio:.2f} (target >= 1.6); load {os.getloadavg()[0]:.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
