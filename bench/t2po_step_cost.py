"""Cost of a T2PO training step against a baseline step, and TDS's per-step resample rate (issue #17 item 4).

Trains the same env, seed and steps once per variant, one after the other in fresh run folders under a
temp dir (validation off, MLflow off), then reads ``metrics.jsonl``: the per-step ``timing_s/step``,
``t2po/tds/resample_rate``, ``t2po/tds/eta`` and ``t2po/tti/tau``. The cost ratio is the median T2PO step
time over the median baseline step time; step 1 is left out of the medians (first-call warm-up). A target
rate is held when every step's resample rate lies within ``--tolerance`` of it.

Variants are ``name=OVERRIDES`` with overrides separated by spaces; the first variant is the baseline.

Usage:
    python bench/t2po_step_cost.py --env alfworld --steps 10 \
        --variant "off=--t2po off" --variant "auto=--t2po on t2po.tds.eta=auto" \
        --variant "fixed=--t2po on t2po.tds.eta=0.3"
    # shared overrides of every variant (e.g. a shorter warm start) go in --common

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

STEP_KEYS = {"step_s": "timing_s/step", "rollout_s": "timing_s/rollout", "resample_rate": "t2po/tds/resample_rate",
             "eta": "t2po/tds/eta", "tau": "t2po/tti/tau", "tokens/episode": "episode/tokens/mean",
             "success": "episode/success_rate"}


def _train(env: str, trainer: str, name: str, extra: list[str], seed: int, steps: int, root: Path) -> dict[str, Any]:
    run = root / f"{env}_{name}_s{seed}"
    t0 = time.perf_counter()
    # A variant may set its own trainer.steps (e.g. fewer baseline steps when only the median matters).
    own_steps = any(o.startswith("trainer.steps=") for o in extra)
    cmd = [sys.executable, "-m", "t2po_cli", "train", "--env", env, "--run-dir", str(run), "--seed", str(seed),
           f"trainer={trainer}", *([] if own_steps else [f"trainer.steps={steps}"]), "trainer.val_every=0",
           "tracking.mlflow=false", *extra]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    per_step = [{"step": r["step"], **{n: r["metrics"].get(k) for n, k in STEP_KEYS.items()}}
                for r in rows if r["split"] == "train"]
    return {"variant": name, "overrides": extra, "seed": seed, "wall_s": wall, "steps": per_step}


def _median(run: dict[str, Any], key: str) -> float:
    vals = [s[key] for s in run["steps"][1:] if isinstance(s.get(key), int | float)]
    return float(statistics.median(vals)) if vals else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="alfworld")
    ap.add_argument("--trainer", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variant", action="append", required=True, help="name=OVERRIDES (first = baseline)")
    ap.add_argument("--common", default="", help="overrides added to every variant")
    ap.add_argument("--target-rate", type=float, default=0.2)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--out", default=None, help="results name (default t2po_step_cost_<env>)")
    args = ap.parse_args()
    variants = [(v.split("=", 1)[0], v.split("=", 1)[1].split() + args.common.split()) for v in args.variant]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="t2po_step_cost_") as tmp:
        for name, extra in variants:
            runs.append(_train(args.env, args.trainer, name, extra, args.seed, args.steps, Path(tmp)))
            print(f"{name}: {runs[-1]['wall_s']:.0f} s", file=sys.stderr)
            # Written after every variant, so a long comparison cut short still leaves its finished part.
            summary = _summary(runs, args.target_rate, args.tolerance)
            path = write(args.out or f"t2po_step_cost_{args.env}",
                         {"args": vars(args), "machine": machine(), "summary": summary, "runs": runs})
    print(table(summary, list(summary[0])))
    print(f"wrote {path}", file=sys.stderr)


def _summary(runs: list[dict[str, Any]], target: float, tolerance: float) -> list[dict[str, Any]]:
    base = _median(runs[0], "step_s")
    summary = []
    for run in runs:
        rates = [s["resample_rate"] for s in run["steps"] if isinstance(s.get("resample_rate"), int | float)]
        summary.append({
            "variant": run["variant"], "median step_s": _median(run, "step_s"),
            "cost vs baseline": _median(run, "step_s") / base,
            "resample rates": " ".join(f"{r:.2f}" for r in rates) or "-",
            "rates within tol": all(abs(r - target) <= tolerance for r in rates) if rates else "-",
            "median eta": _median(run, "eta"), "median tau": _median(run, "tau"),
            "tokens/episode": _median(run, "tokens/episode"),
        })
    return summary

if __name__ == "__main__":
    main()
