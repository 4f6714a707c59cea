"""The learning frontier of the WebShop reader recipe (issue 18): validation success at the warm start and after K
RL steps, on several seeds, with standard errors, wall time per phase and tokens/s.

For each seed it builds the default recipe's session (``experiment=webshop_gigpo_t2po_reader`` unless ``--recipe``
says otherwise, plus any KEY=VALUE overrides) exactly as ``t2po train`` does, then times each phase apart:

* ``warmstart``: building the cached warm-start checkpoint (0 s when it is cached already);
* ``val_start``: validation of the warm-started policy on the first ``--val-tasks`` fixed val goals;
* ``train``: K RL steps (rollout + update), with generated tokens per second of rollout;
* ``val_end``: validation of the trained policy on the same goals.

Success is a per-episode 0/1, so its standard error over N val tasks is ``sqrt(p (1 - p) / N)``; the gain's
SE is the two SEs combined (the two validations use independent samples). The JSON also gives the mean over
seeds with the SE across seeds. ``fresh_run_minutes`` = warm start + both validations + K steps, the wall
time of a first ``t2po train`` with ``trainer.val_every=K``.

Usage: python bench/learning.py --steps 5 --seeds 0 1 --val-tasks 64 [--tag NAME] [KEY=VALUE ...]
Writes bench/results/learning_<tag>.json. Tests never run this (benchmarks are not tests).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine, table, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def success_se(p: float, n: int) -> float:
    """Standard error of a success rate ``p`` measured on ``n`` independent 0/1 episodes."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n > 0 else math.nan


def gain_z(p0: float, p1: float, n: int) -> float:
    """(p1 - p0) in units of the combined SE of two independent rates on ``n`` episodes each."""
    se = math.hypot(success_se(p0, n), success_se(p1, n))
    return (p1 - p0) / se if se > 0 else (math.inf if p1 > p0 else 0.0)


def _val(s: Any, step: int) -> tuple[dict[str, float], float]:
    from t2po_cli.trainer.loop import validate

    t0 = time.perf_counter()
    m = validate(s, step)
    return m, time.perf_counter() - t0


def run_seed(overrides: list[str], seed: int, steps: int, val_tasks: int, root: Path,
             flush: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """One seed: warm start (timed), validation, K train steps, validation. Returns the phase record;
    ``flush`` receives the partial record after every phase (a run cut short still leaves its numbers)."""
    from t2po_cli.config.compose import compose_config
    from t2po_cli.run_folder import create_run_folder
    from t2po_cli.tracking import keys as K
    from t2po_cli.trainer.loop import build_session, train_step
    from t2po_cli.trainer.warmstart import ensure_warmstart

    composed = compose_config([*overrides, f"trainer.seed={seed}", f"trainer.steps={steps}",
                               f"trainer.val_tasks={val_tasks}", "tracking.mlflow=false", f"runs_root={root}"])
    cfg = composed.config
    folder = create_run_folder(runs_root=root, experiment="learning", run_name=f"s{seed}",
                               resolved_yaml=composed.yaml, overrides=composed.overrides,
                               command=["bench/learning.py"], pin=False)
    rec: dict[str, Any] = {"seed": seed, "steps_done": 0, "seconds": {}}
    t0 = time.perf_counter()
    ensure_warmstart(cfg)
    t_warm = rec["seconds"]["warmstart"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = build_session(folder.path)
    t_load = rec["seconds"]["load"] = time.perf_counter() - t0
    val0, t_val0 = _val(s, 0)
    p0 = val0[K.val(K.SUCCESS_RATE)]
    rec.update(success_start=p0, se_start=success_se(p0, val_tasks), val_start={k: val0[k] for k in sorted(val0)})
    rec["seconds"]["val_start"] = t_val0
    flush(rec)
    t_train, gen_tokens, gen_s, train_success = 0.0, 0.0, 0.0, []
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        m = train_step(s, step)
        t_train += time.perf_counter() - t0
        gen_tokens += m.get(K.GENERATED_TOKENS, 0.0)
        gen_s += m.get(K.ROLLOUT_TIME, 0.0)
        train_success.append(m.get(K.SUCCESS_RATE, math.nan))
        print(f"  seed {seed} step {step}: train success {train_success[-1]:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        rec.update(steps_done=step, train_success=train_success)
        rec["seconds"]["train"] = t_train
        flush(rec)
    val1, t_val1 = _val(s, steps)
    p1 = val1[K.val(K.SUCCESS_RATE)]
    return {
        "seed": seed, "steps": steps, "val_tasks": val_tasks,
        "success_start": p0, "se_start": success_se(p0, val_tasks),
        "success_end": p1, "se_end": success_se(p1, val_tasks), "gain_z": gain_z(p0, p1, val_tasks),
        "valid_start": val0.get(K.val(K.VALID_ACTION_RATIO), math.nan),
        "valid_end": val1.get(K.val(K.VALID_ACTION_RATIO), math.nan),
        "score_start": val0.get(K.val(K.SCORE_MEAN), math.nan),
        "score_end": val1.get(K.val(K.SCORE_MEAN), math.nan),
        "turns_start": val0.get(K.val(K.EPISODE_LENGTH), math.nan),
        "turns_end": val1.get(K.val(K.EPISODE_LENGTH), math.nan),
        "train_success": train_success,
        "seconds": {"warmstart": t_warm, "load": t_load, "val_start": t_val0, "train": t_train, "val_end": t_val1},
        "train_tokens_per_s_rollout": gen_tokens / gen_s if gen_s else math.nan,
        "val_tokens_per_s": {"start": val0.get(K.val(K.TOKENS_PER_S), math.nan),
                             "end": val1.get(K.val(K.TOKENS_PER_S), math.nan)},
        "fresh_run_minutes": (t_warm + t_load + t_val0 + t_train + t_val1) / 60.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="RL steps K per seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--val-tasks", type=int, default=64)
    ap.add_argument("--recipe", default="webshop_gigpo_t2po_reader", help="experiment recipe")
    ap.add_argument("--tag", default="default", help="result file: bench/results/learning_<tag>.json")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides on top of the recipe")
    args = ap.parse_args()
    overrides = [f"experiment={args.recipe}", *args.overrides]
    rows: list[dict[str, Any]] = []
    started = time.time()
    command = "python bench/learning.py " + " ".join(sys.argv[1:])

    def flush(partial: dict[str, Any]) -> None:
        write(f"learning_{args.tag}", {"command": command, "overrides": overrides, "machine": machine(),
                                       "complete": False, "wall_minutes": (time.time() - started) / 60,
                                       "seeds": [*rows, partial]})

    with tempfile.TemporaryDirectory(prefix="t2po-learning-") as tmp:
        for seed in args.seeds:
            rows.append(run_seed(overrides, seed, args.steps, args.val_tasks, Path(tmp), flush))
            print(table([rows[-1]], ["seed", "success_start", "se_start", "success_end", "se_end", "gain_z",
                                     "fresh_run_minutes"]), flush=True)
    gains = [r["success_end"] - r["success_start"] for r in rows]
    summary = {
        "mean_success_start": statistics.mean(r["success_start"] for r in rows),
        "mean_success_end": statistics.mean(r["success_end"] for r in rows),
        "mean_gain": statistics.mean(gains),
        "gain_se_across_seeds": statistics.stdev(gains) / math.sqrt(len(gains)) if len(gains) > 1 else math.nan,
        "done_when_met": all(r["gain_z"] > 2 for r in rows)
        and all(r["fresh_run_minutes"] <= 15 for r in rows),
    }
    payload = {"command": command, "overrides": overrides, "complete": True,
               "machine": machine(), "wall_minutes": (time.time() - started) / 60, "summary": summary,
               "seeds": rows}
    path = write(f"learning_{args.tag}", payload)
    print(table(rows, ["seed", "success_start", "success_end", "gain_z", "fresh_run_minutes"]))
    print(f"summary {summary}\nwrote {path}")


if __name__ == "__main__":
    main()
