"""T2PO on vs off after the same training: tokens per episode and success, paired by seed.

For every seed, both variants train from the same warm start with the same seed (alternating which goes
first), each in a fresh run folder under a temp dir; then ``t2po eval --run RUN --episodes N --json``
evaluates each final checkpoint on the same validation tasks (the seed fixes them). Successes are pooled
over seeds; the success difference gets a 95 % normal-approximation interval (two proportions), and the
tokens-per-episode ratio is the ratio of episode-weighted means.

This is the measurement behind issue #5's "fewer generated tokens per episode at equal or better success".
Validation during training is switched off (``trainer.val_every=0``): the held-out eval is the number.

Usage:
    python bench/t2po_efficiency.py --env alfworld --seeds 0,1,2,3 --steps 6 --eval-episodes 256
    python bench/t2po_efficiency.py --env searchqa --trainer ci --steps 2 --eval-episodes 32   # smoke scale
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, table, write

TRAIN_KEYS = {"train tokens/episode": "episode/tokens/mean", "train success": "episode/success_rate",
              "tti interventions/turn": "t2po/tti/interventions_per_turn",
              "tds resample rate": "t2po/tds/resample_rate"}


def _t2po(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "t2po_cli", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"t2po {' '.join(args)} failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def _train_and_eval(env: str, trainer: str, variant: str, seed: int, steps: int, episodes: int,
                    root: Path) -> dict[str, Any]:
    run = root / f"{env}_{variant}_s{seed}"
    t0 = time.perf_counter()
    _t2po("train", "--env", env, "--run-dir", str(run), "--t2po", variant, "--seed", str(seed),
          f"trainer={trainer}", f"trainer.steps={steps}", "trainer.val_every=0", "tracking.mlflow=false",
          cwd=root)
    train_s = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r["metrics"] for r in rows if r["split"] == "train"]
    t0 = time.perf_counter()
    ev = json.loads(_t2po("eval", "--run", str(run), "--episodes", str(episodes), "--json", cwd=root))
    out: dict[str, Any] = {"variant": variant, "seed": seed, "train_s": train_s,
                           "eval_s": time.perf_counter() - t0, "eval": ev,
                           "successes": round(ev["success_rate"] * ev["episodes"])}
    for name, key in TRAIN_KEYS.items():
        vals = [m[key] for m in train if isinstance(m.get(key), int | float)]
        out[name] = statistics.fmean(vals) if vals else float("nan")
    return out


def _pool(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = sum(r["eval"]["episodes"] for r in rows)
    wins = sum(r["successes"] for r in rows)
    tokens = sum(r["eval"]["tokens_per_episode"] * r["eval"]["episodes"] for r in rows) / n
    return {"episodes": n, "successes": wins, "success": wins / n, "tokens/episode": tokens,
            "turns/episode": sum(r["eval"]["mean_turns"] * r["eval"]["episodes"] for r in rows) / n,
            "valid": sum(r["eval"]["valid_action_ratio"] * r["eval"]["episodes"] for r in rows) / n,
            **{k: statistics.fmean(r[k] for r in rows) for k in (*TRAIN_KEYS, "train_s", "eval_s")}}


def success_difference(on: dict[str, Any], off: dict[str, Any]) -> dict[str, float]:
    """on − off success with a 95 % normal-approximation interval for two independent proportions."""
    p1, n1, p2, n2 = on["success"], on["episodes"], off["success"], off["episodes"]
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    d = p1 - p2
    return {"diff": d, "se": se, "ci95_low": d - 1.96 * se, "ci95_high": d + 1.96 * se}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="alfworld")
    ap.add_argument("--trainer", default="cpu", help="trainer recipe (cpu = the CPU default)")
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--eval-episodes", type=int, default=256)
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the run folders here (e.g. for t2po eval --run RUN --tti off); default: a temp dir")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
            order = ["on", "off"] if i % 2 == 0 else ["off", "on"]
            for variant in order:
                rows.append(_train_and_eval(args.env, args.trainer, variant, seed, args.steps,
                                            args.eval_episodes, tmp))
                r = rows[-1]
                print(f"seed {seed} t2po={variant}: success {r['successes']}/{r['eval']['episodes']}, "
                      f"{r['eval']['tokens_per_episode']:.1f} tokens/episode "
                      f"(train {r['train_s']:.0f} s, eval {r['eval_s']:.0f} s)", file=sys.stderr, flush=True)
    on = {"variant": "t2po=on", **_pool([r for r in rows if r["variant"] == "on"])}
    off = {"variant": "t2po=off", **_pool([r for r in rows if r["variant"] == "off"])}
    ratio = {"variant": "on/off", **{k: (on[k] / off[k] if off[k] else float("nan"))
                                     for k in ("tokens/episode", "turns/episode", "success", "train_s")}}
    diff = success_difference(on, off)
    cols = ["variant", "episodes", "successes", "success", "tokens/episode", "turns/episode", "valid",
            "train tokens/episode", "tti interventions/turn", "tds resample rate", "train_s", "eval_s"]
    print(table([on, off, ratio], cols))
    print(f"success on - off = {diff['diff']:+.4f} (95% CI {diff['ci95_low']:+.4f} .. {diff['ci95_high']:+.4f})")
    print(write(f"t2po_efficiency_{args.env}", {
        "args": {**vars(args), "keep": str(args.keep) if args.keep else None},
        "summary": [on, off, ratio], "success_difference": diff, "runs": rows,
        "note": "tiny model on CPU: paired short trainings, held-out eval of each final checkpoint",
        "machine": machine()}))


if __name__ == "__main__":
    main()
