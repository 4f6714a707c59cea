"""T2PO on vs off: tokens and turns per episode and success, same seeds, short trainer=ci-like runs.

Each seed trains both variants back to back (alternating which goes first), each in a fresh run folder
under a temp dir; the numbers are the last validation row and the mean over training rows.

Usage: python bench/t2po_efficiency.py [--seeds 0] [--steps 2]
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
from typing import Any

from _common import machine, table, write

KEYS = {"tokens/episode": "episode/tokens/mean", "turns/episode": "episode/length/mean",
        "success": "episode/success_rate"}


def _run(variant: str, seed: int, steps: int, root: Path) -> dict[str, Any]:
    run = root / f"{variant}_s{seed}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "t2po_cli", "train", "--run-dir", str(run), "--t2po", variant,
                    "--seed", str(seed), "trainer=ci", f"trainer.steps={steps}", f"trainer.val_every={steps}",
                    "tracking.mlflow=false"], cwd=root, check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r["metrics"] for r in rows if r["split"] == "train"]
    val = [r["metrics"] for r in rows if r["split"] == "val" and r["step"] == steps][-1]
    out: dict[str, Any] = {"variant": variant, "seed": seed, "wall_s": wall}
    for name, key in KEYS.items():
        vals = [m[key] for m in train if isinstance(m.get(key), int | float)]
        out[f"train {name}"] = statistics.fmean(vals) if vals else float("nan")
        out[f"val {name}"] = val.get(f"val/{key}", float("nan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
            order = ["on", "off"] if i % 2 == 0 else ["off", "on"]
            rows += [_run(v, seed, args.steps, Path(tmp)) for v in order]
    summary = []
    for variant in ("on", "off"):
        mine = [r for r in rows if r["variant"] == variant]
        summary.append({"variant": f"t2po={variant}", **{k: statistics.fmean(r[k] for r in mine)
                                                          for k in mine[0] if k not in ("variant", "seed")}})
    on, off = summary
    ratio = {"variant": "on/off", **{k: (on[k] / off[k] if off[k] else float("nan"))
                                     for k in on if k != "variant"}}
    cols = ["variant", "train tokens/episode", "train turns/episode", "train success", "val tokens/episode",
            "val turns/episode", "val success", "wall_s"]
    print(table([*summary, ratio], cols))
    print(write("t2po_efficiency", {"summary": [*summary, ratio], "runs": rows, "steps": args.steps,
                                    "note": "tiny model, trainer=ci: a smoke-scale comparison, not the paper's",
                                    "machine": machine()}))


if __name__ == "__main__":
    main()
