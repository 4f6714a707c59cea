"""Report tables: per-run numbers, per-variant mean ± sd over seeds, stability vs capability, thresholds.

Definitions (repeated in the report text so a reader never has to open this file):

* **final success**: the run's last validation success rate; the last train success rate when the run
  logged no validation rows.
* **best success**: the maximum of that same curve.
* **AUC**: area under that curve (trapezoid over steps) divided by the span of steps, i.e. the mean
  success over training; comparable between runs of different lengths.
* **peak before collapse**: best success up to and including the first collapse step (the whole run when
  it did not collapse). It measures *capability*: what the variant could reach.
* **collapse cost**: peak before collapse − final success. It measures *stability*: what was lost.

Standard deviations are sample standard deviations over seeds (ddof=1); one seed gives no sd.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from t2po_cli.report.detectors import RunVerdict, Series
from t2po_cli.report.load import ENV_KEY, RunData, fmt_value
from t2po_cli.tracking import keys as K

NAN = float("nan")


@dataclass(frozen=True)
class Stat:
    """Mean ± sample sd over seeds (n values; nan where undefined)."""

    mean: float
    sd: float
    n: int

    def text(self, pct: bool = False, digits: int = 3) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "—"
        scale = 100.0 if pct else 1.0
        unit = "%" if pct else ""
        fmt = "{:.1f}" if pct else f"{{:.{digits}g}}"
        mean = fmt.format(self.mean * scale) + unit
        if self.n < 2 or math.isnan(self.sd):
            return mean
        return f"{mean} ± {fmt.format(self.sd * scale)}{unit}"

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def stat(values: Sequence[float]) -> Stat:
    """Mean and sample sd of the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return Stat(NAN, NAN, 0)
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else NAN, int(v.size))


def success_curve(run: RunData) -> tuple[Series | None, str]:
    """The success curve used for final/best/AUC: validation if logged, else train (and its name)."""
    val = run.get(K.val(K.SUCCESS_RATE))
    if val is not None and np.isfinite(val.values).any():
        return val, "val"
    train = run.get(K.SUCCESS_RATE)
    if train is not None:
        return train, "train"
    return None, "none"


def _finite(s: Series) -> Series:
    ok = np.isfinite(s.values)
    return Series(s.steps[ok], s.values[ok])


def normalised_auc(s: Series) -> float:
    """Trapezoid area under the curve divided by the step span (one point: its value)."""
    f = _finite(s)
    if f.steps.size == 0:
        return NAN
    if f.steps.size == 1 or f.steps[-1] == f.steps[0]:
        return float(f.values[-1])
    x = f.steps.astype(float)
    area = float(np.sum((x[1:] - x[:-1]) * (f.values[1:] + f.values[:-1]) / 2.0))
    return area / float(x[-1] - x[0])


def series_mean(run: RunData, key: str) -> float:
    """Mean of a metric over the run's steps (nan when absent)."""
    s = run.get(key)
    if s is None:
        return NAN
    f = _finite(s)
    return float(f.values.mean()) if f.values.size else NAN


@dataclass(frozen=True)
class RunSummary:
    """Per-run numbers that the variant tables pool over seeds."""

    name: str
    source: str
    variant: str
    env: str
    seed: Any
    curve: str
    final: float
    best: float
    auc: float
    peak_before_collapse: float
    collapsed: bool
    collapse_step: int | None
    tokens: float
    turns: float
    steps: int

    @property
    def collapse_cost(self) -> float:
        return self.peak_before_collapse - self.final


def summarise_run(run: RunData, variant: str, verdict: RunVerdict) -> RunSummary:
    """Final/best/AUC, peak before collapse, tokens and turns per episode for one run."""
    curve, source = success_curve(run)
    if curve is None:
        final = best = auc = peak = NAN
    else:
        f = _finite(curve)
        final = float(f.values[-1]) if f.values.size else NAN
        best = float(f.values.max()) if f.values.size else NAN
        auc = normalised_auc(curve)
        peak = best
        if verdict.collapse_step is not None:
            before = f.values[f.steps <= verdict.collapse_step]
            peak = float(before.max()) if before.size else NAN
    last_steps = [int(s.steps[-1]) for s in run.series.values() if s.steps.size]
    return RunSummary(
        name=run.name, source=run.source, variant=variant, env=fmt_value(run.params.get(ENV_KEY)),
        seed=run.seed, curve=source,
        final=final, best=best, auc=auc, peak_before_collapse=peak,
        collapsed=verdict.collapsed, collapse_step=verdict.collapse_step,
        tokens=series_mean(run, K.TOKENS_PER_EPISODE), turns=series_mean(run, K.EPISODE_LENGTH),
        steps=max(last_steps) if last_steps else 0,
    )


def variant_rows(summaries: Sequence[RunSummary]) -> list[dict[str, Any]]:
    """One row per variant: n seeds, final/best success, collapse rate, steps to collapse, cost, AUC."""
    rows = []
    for variant, group in _by_variant(summaries).items():
        collapsed = [s for s in group if s.collapsed]
        curves = sorted({s.curve for s in group})
        rows.append({
            "variant": variant,
            "seeds": len(group),
            "curve": curves[0] if len(curves) == 1 else "mixed",
            "final_success": stat([s.final for s in group]),
            "best_success": stat([s.best for s in group]),
            "collapse_rate": len(collapsed) / len(group),
            "steps_to_collapse": stat([float(s.collapse_step) for s in collapsed if s.collapse_step is not None]),
            "tokens_per_episode": stat([s.tokens for s in group]),
            "turns_per_episode": stat([s.turns for s in group]),
            "auc": stat([s.auc for s in group]),
        })
    return rows


def stability_rows(summaries: Sequence[RunSummary]) -> list[dict[str, Any]]:
    """Stability versus capability per variant.

    Columns: peak before collapse (capability, all seeds), final (all seeds), final of non-collapsed
    seeds, final of collapsed seeds, collapse cost (peak before collapse − final, all seeds), and a
    one-word diagnosis: ``unstable`` when some seeds collapsed and the cost is at least 0.1,
    ``limited`` when nothing collapsed costly but the peak trails the best variant's peak in the same
    environment by 0.1 or more (comparing peaks across environments would compare task difficulty),
    ``stable`` otherwise.
    """
    rows = []
    groups = _by_variant(summaries)
    peaks = {v: stat([s.peak_before_collapse for s in g]).mean for v, g in groups.items()}
    env_of = {v: g[0].env for v, g in groups.items()}
    for variant, group in groups.items():
        top = max((p for v, p in peaks.items() if env_of[v] == env_of[variant] and not math.isnan(p)),
                  default=NAN)
        ok = [s for s in group if not s.collapsed]
        bad = [s for s in group if s.collapsed]
        cost = stat([s.collapse_cost for s in group])
        peak = peaks[variant]
        if bad and not math.isnan(cost.mean) and cost.mean >= 0.1:
            diagnosis = "unstable"
        elif not math.isnan(peak) and not math.isnan(top) and top - peak >= 0.1:
            diagnosis = "limited"
        else:
            diagnosis = "stable"
        rows.append({
            "variant": variant,
            "seeds": len(group),
            "collapsed": len(bad),
            "peak_before_collapse": stat([s.peak_before_collapse for s in group]),
            "final_all": stat([s.final for s in group]),
            "final_non_collapsed": stat([s.final for s in ok]),
            "final_collapsed": stat([s.final for s in bad]),
            "collapse_cost": cost,
            "diagnosis": diagnosis,
        })
    return rows


def _by_variant(summaries: Sequence[RunSummary]) -> dict[str, list[RunSummary]]:
    out: dict[str, list[RunSummary]] = {}
    for s in summaries:
        out.setdefault(s.variant, []).append(s)
    return out


# --- thresholds ----------------------------------------------------------------------------------------


def sensitivity(
    runs: Sequence[RunData], summaries: Mapping[str, RunSummary], key: str, enabled_key: str
) -> dict[str, list[dict[str, Any]]]:
    """Final success and collapse rate against one threshold, per environment.

    Only runs where the mechanism is on (``enabled_key`` true) count: tau means nothing with TTI off.

    Returns:
        env → rows sorted by threshold value: ``{"value", "final_success": Stat, "collapse_rate", "runs"}``;
        envs with fewer than two distinct values are left out (nothing to compare).
    """
    cells: dict[str, dict[float, list[RunSummary]]] = {}
    for r in runs:
        value = r.params.get(key)
        if not r.params.get(enabled_key) or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        env = fmt_value(r.params.get(ENV_KEY))
        cells.setdefault(env, {}).setdefault(float(value), []).append(summaries[r.source])
    out: dict[str, list[dict[str, Any]]] = {}
    for env, by_value in sorted(cells.items()):
        if len(by_value) < 2:
            continue
        out[env] = [
            {
                "value": value,
                "final_success": stat([s.final for s in group]),
                "collapse_rate": sum(s.collapsed for s in group) / len(group),
                "runs": len(group),
            }
            for value, group in sorted(by_value.items())
        ]
    return out


def transfer(sens: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Threshold transfer across environments.

    For each env the best value is the one with the highest mean final success. Using env A's best
    value in env B costs ``final_B(best_B) − final_B(best_A)`` (0 when they agree; None when B was not
    run at A's value).

    Returns:
        ``{"best": {env: {"value", "final_success"}}, "cost": {target_env: {source_env: float | None}}}``.
    """
    best: dict[str, dict[str, Any]] = {}
    for env, rows in sens.items():
        scored = [r for r in rows if not math.isnan(r["final_success"].mean)]
        if scored:
            top = max(scored, key=lambda r: (r["final_success"].mean, -r["value"]))
            best[env] = {"value": top["value"], "final_success": top["final_success"].mean}
    cost: dict[str, dict[str, float | None]] = {}
    for target, rows in sens.items():
        if target not in best:
            continue
        by_value = {r["value"]: r["final_success"].mean for r in rows}
        cost[target] = {}
        for source, b in best.items():
            got = by_value.get(b["value"])
            cost[target][source] = None if got is None or math.isnan(got) else best[target]["final_success"] - got
    return {"best": best, "cost": cost}


def jsonable(obj: Any) -> Any:
    """Tables → JSON-safe structures (Stat → dict, nan → None)."""
    if isinstance(obj, Stat):
        return obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    return obj
