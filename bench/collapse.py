"""The collapse testbed benchmark (issue #17): baseline vs T2PO vs rollback on ``experiment=collapse_testbed``.

For every variant and seed, trains the testbed recipe in a fresh run folder (one after the other, or
``--jobs`` at a time), then judges the run's ``metrics.jsonl`` with the report's collapse detectors
(``report.detectors.judge_run``) and, when the DIAG work is present, the early-warning rules
(``tracking.early_warning.first_warnings``). Per variant it reports:

* collapse rate: runs where a collapse detector fired;
* steps to collapse: the first collapse detection's step (collapsed runs only);
* warning lead time: collapse step minus the first warning at or before it (collapsed runs with a warning;
  per seed, ``late`` when the run collapsed before any warning);
* first warnings: each seed's first warning (rule@step) as it fired live (``status.json``; a rollback truncates
  ``metrics.jsonl``, so the rows lose the warning that caused it);
* rollbacks: per seed, how many times ``trainer.on_collapse=rollback`` restored a checkpoint;
* false alarms: of the runs that ran to the end without a collapse detection, those with a warning;
* steps run: train steps logged per seed, ``s`` when the run stopped itself (``on_collapse`` stop, or rollback
  past ``trainer.max_rollbacks``): its detectors judged fewer steps;
* final reward / final success: the mean train reward / success rate over the last three steps.

A variant whose overrides the config rejects (e.g. ``trainer.on_collapse`` before the DIAG work is merged) is
recorded as unavailable, not silently dropped. Numbers go to ``bench/results/collapse.json`` and a table.

Usage:
    python bench/collapse.py --seeds 0,1,2 --jobs 2 --keep /tmp/collapse_runs     # bench/README.md row h
    python bench/collapse.py --seeds 0,1,2 --variant "baseline=--t2po off" --variant "t2po=--t2po on"
    python bench/collapse.py --recipe my_candidate --seeds 0 --common "trainer.steps=2"   # smoke
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import machine, table, write

DEFAULT_VARIANTS = ("baseline=--t2po off",
                    # T2PO with the self-calibrating thresholds (the fixed CPU η regenerates nearly every turn)
                    "t2po=--t2po on t2po.tds.eta=auto t2po.tti.tau=auto",
                    "rollback=--t2po off trainer.on_collapse=rollback")
SUCCESS = "episode/success_rate"
REWARD = "episode/reward/mean"


def judge(run: Path) -> dict[str, Any]:
    """Detector verdict, first warnings and final success of one finished run folder."""
    from t2po_cli.report.detectors import judge_run
    from t2po_cli.report.load import series_from_rows

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    verdict = judge_run(series_from_rows(rows))
    train = [r for r in rows if r["split"] == "train"]
    status = json.loads((run / "status.json").read_text()) if (run / "status.json").is_file() else {}
    success = [float(r["metrics"][SUCCESS]) for r in train if SUCCESS in r["metrics"]]
    reward = [float(r["metrics"][REWARD]) for r in train if REWARD in r["metrics"]]
    out: dict[str, Any] = {
        "collapsed": verdict.collapsed, "collapse_step": verdict.collapse_step,
        "detections": [d.to_dict() for d in verdict.detections],
        "final_success": statistics.fmean(success[-3:]) if success else float("nan"),
        "final_reward": statistics.fmean(reward[-3:]) if reward else float("nan"),
        "peak_reward": max(reward) if reward else float("nan"),
        "success": success, "reward": reward, "steps_run": len(train), "state": status.get("state"),
        # the warnings as they fired live (status.json), rollbacks included: a rollback truncates metrics.jsonl
        # to the restored step, so the rows no longer show the warning that caused it
        "live_warnings": [{"rule": w.get("rule"), "step": w.get("step"), "action": w.get("action")}
                          for w in status.get("warnings", [])],
    }
    try:
        from t2po_cli.tracking.early_warning import first_warnings  # DIAG's rules (issue #17 items 1-2)
    except ImportError:
        out["warnings"] = None
        out["lead_time"] = None
        return out
    warnings = first_warnings(rows)
    out["warnings"] = [{"rule": w.rule, "step": w.step, "metric": w.metric, "value": w.value} for w in warnings]
    before = [w.step for w in warnings if verdict.collapse_step is not None and w.step <= verdict.collapse_step]
    out["lead_time"] = verdict.collapse_step - min(before) if before else None
    return out


def _train(recipe: str, name: str, extra: list[str], seed: int, root: Path) -> dict[str, Any]:
    run = root / f"{name}_s{seed}"
    cmd = [sys.executable, "-m", "t2po_cli", "train", f"experiment={recipe}", "--run-dir", str(run),
           "--seed", str(seed), "tracking.mlflow=false", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    base: dict[str, Any] = {"variant": name, "seed": seed, "overrides": extra, "wall_s": time.perf_counter() - t0}
    if done.returncode == 2 and not (run / "metrics.jsonl").exists():
        return {**base, "unavailable": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "rc 2"}
    if not (run / "metrics.jsonl").exists():
        raise SystemExit(f"{' '.join(cmd)} failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
    # A run that stops itself (on_collapse=stop) or fails late still has rows to judge.
    return {**base, "rc": done.returncode, **judge(run)}


def _first_warning(run: dict[str, Any]) -> str:
    """The run's first warning as rule@step: the first live one (it may have caused a rollback), else offline."""
    ws = run.get("live_warnings") or run.get("warnings") or []
    return f"{ws[0]['rule']}@{ws[0]['step']}" if ws else "-"


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: collapse rate, mean steps to collapse, median lead time, mean final success."""
    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        if any("unavailable" in r for r in mine):
            rows.append({"variant": name, "runs": len(mine), "collapse rate": "unavailable",
                         "note": mine[0].get("unavailable", "")[:80]})
            continue
        collapsed = [r for r in mine if r["collapsed"]]
        # ran to the end without collapsing (a run that stopped itself is neither a collapse nor a false alarm)
        survived = [r for r in mine if not r["collapsed"] and r.get("state") != "stopped"]
        leads = [r["lead_time"] for r in collapsed if r.get("lead_time") is not None]
        rows.append({
            "variant": name, "runs": len(mine),
            "collapse rate": f"{len(collapsed)}/{len(mine)}",
            "steps to collapse": statistics.fmean(r["collapse_step"] for r in collapsed) if collapsed else "-",
            "collapse steps": " ".join(str(r["collapse_step"]) for r in mine),
            "lead time (median)": statistics.median(leads) if leads else "-",
            # per seed: steps from the first warning to the collapse; "late" = collapsed before any warning
            "lead times": " ".join("-" if not r["collapsed"] else str(r["lead_time"]) if r.get("lead_time")
                                   is not None else "late" for r in mine),
            "first warnings": " ".join(_first_warning(r) for r in mine),
            # warned, yet ran to the end without a collapse detection
            "false alarms": f"{sum(bool(r.get('warnings')) for r in survived)}/{len(survived)}" if survived else "-",
            "steps run": " ".join(f"{r['steps_run']}{'s' if r.get('state') == 'stopped' else ''}" for r in mine),
            "rollbacks": " ".join(str(sum(w["action"] == "rollback" for w in r.get("live_warnings", [])))
                                  for r in mine),
            "final reward": statistics.fmean(r["final_reward"] for r in mine),
            "final success": statistics.fmean(r["final_success"] for r in mine),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="collapse_testbed", help="experiment recipe to train")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variant", action="append", default=None, help="name=OVERRIDES (default: baseline, t2po, "
                    "rollback)")
    ap.add_argument("--common", default="", help="overrides added to every variant (e.g. trainer.steps=12)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--keep", type=Path, default=None, help="keep run folders here (default: a temp dir)")
    ap.add_argument("--out", default="collapse")
    ap.add_argument("--rejudge", type=Path, default=None, help="re-judge the runs of a results JSON whose run "
                    "folders were kept (--keep), without training")
    args = ap.parse_args()
    variants = [(v.split("=", 1)[0], v.split("=", 1)[1].split() + args.common.split())
                for v in (args.variant or DEFAULT_VARIANTS)]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.rejudge is not None:
        saved = json.loads(args.rejudge.read_text())
        root = Path(saved["args"]["keep"])
        runs = [{**{k: r[k] for k in ("variant", "seed", "overrides", "wall_s")}, "rc": r.get("rc"),
                 **judge(root / f"{r['variant']}_s{r['seed']}")} for r in saved["runs"]]
        _report(args.out, {**saved["args"], "rejudged_from": str(args.rejudge)}, runs, saved.get("machine", {}))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="t2po_collapse_") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        jobs = [(name, extra, seed) for name, extra in variants for seed in seeds]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            runs = list(pool.map(lambda j: _train(args.recipe, j[0], j[1], j[2], root), jobs))
    _report(args.out, {k: str(v) for k, v in vars(args).items()}, runs, machine())


def _report(out: str, args: dict[str, Any], runs: list[dict[str, Any]], machine_info: dict[str, Any]) -> None:
    summary = summarise(runs)
    path = write(out, {"args": args, "machine": machine_info, "summary": summary, "runs": runs})
    print(table(summary, ["variant", "runs", "collapse rate", "steps to collapse", "collapse steps",
                          "lead time (median)", "lead times", "first warnings", "false alarms", "steps run",
                          "rollbacks", "final reward", "final success"]))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
