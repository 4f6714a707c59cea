"""T2PO step cost against the baseline, alternating the two trainers' steps in one process (issue #17 item 4).

``bench/t2po_step_cost.py`` trains the variants one after the other, so on a shared machine a change in load
between the runs lands in the ratio. Here every variant gets its own run folder and session (same seed, same
warm start), and the steps alternate: step 1 of each variant, then step 2 of each, ... So noisy neighbours
hit all variants alike. Per step it records the wall time (``timing_s/step``) and the process CPU time of
the step (``time.process_time``: what this process burnt, insensitive to other processes' load), and TDS's
resample rate. Ratios are medians over steps 2.. (step 1 is warm-up) against the first variant.

Usage:
    python bench/t2po_step_interleaved.py --env alfworld --steps 4 \
        --variant "off=t2po=off" --variant "auto=t2po=on t2po.tds.eta=auto" \
        --common "trainer.tasks_per_step=2 trainer.warmstart.episodes=32 trainer.warmstart.steps=20"
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, table, write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="alfworld")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--variant", action="append", required=True, help="name=OVERRIDES (first = baseline)")
    ap.add_argument("--common", default="", help="overrides added to every variant")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from t2po_cli.config.compose import compose_config
    from t2po_cli.run_folder import create_run_folder
    from t2po_cli.trainer import loop

    torch.set_num_threads(1)
    variants = [(v.split("=", 1)[0], v.split("=", 1)[1].split() + args.common.split()) for v in args.variant]
    steps: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory(prefix="t2po_interleaved_") as tmp:
        sessions = {}
        for name, extra in variants:
            composed = compose_config([f"env={args.env}", f"trainer.seed={args.seed}", "trainer.val_every=0",
                                       "tracking.mlflow=false", f"runs_root={tmp}", *extra])
            folder = create_run_folder(runs_root=Path(tmp), experiment="bench", run_name=name,
                                       resolved_yaml=composed.yaml, overrides=composed.overrides,
                                       command=["bench"], pin=False)
            sessions[name] = loop.build_session(folder.path)
        for step in range(1, args.steps + 1):
            order = list(sessions) if step % 2 else list(reversed(sessions))  # alternate who goes first
            for name in order:
                cpu0 = time.process_time()
                m = loop.train_step(sessions[name], step)
                steps[name].append({"step": step, "wall_s": m["timing_s/step"], "cpu_s": time.process_time() - cpu0,
                                    "rollout_s": m["timing_s/rollout"],
                                    "resample_rate": m.get("t2po/tds/resample_rate"), "eta": m.get("t2po/tds/eta"),
                                    "generated_tokens": m.get("perf/generated_tokens")})
                print(f"step {step} {name}: {m['timing_s/step']:.1f} s", file=sys.stderr)

    def med(name: str, key: str) -> float:
        vals = [s[key] for s in steps[name][1:]] or [s[key] for s in steps[name]]
        return float(statistics.median(vals))

    base = variants[0][0]
    summary = [{"variant": name, "median wall s": med(name, "wall_s"), "median cpu s": med(name, "cpu_s"),
                "wall ratio": med(name, "wall_s") / med(base, "wall_s"),
                "cpu ratio": med(name, "cpu_s") / med(base, "cpu_s"),
                "tokens ratio": med(name, "generated_tokens") / med(base, "generated_tokens"),
                "resample rates": " ".join(f"{s['resample_rate']:.2f}" for s in steps[name]
                                           if s["resample_rate"] is not None) or "-"}
               for name, _ in variants]
    path = write(args.out or f"t2po_step_interleaved_{args.env}",
                 {"args": vars(args), "machine": machine(), "summary": summary, "steps": steps})
    print(table(summary, list(summary[0])))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
