"""``t2po report`` end to end: load runs → detectors → tables → plots → report folder.

``build_report`` is what the CLI calls; it returns the folder and the summary dict (``--json``).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from t2po_cli.report import plots
from t2po_cli.report.detectors import DETECTOR_DOCS, RunVerdict, Thresholds, judge_run
from t2po_cli.report.load import (
    ETA_KEY,
    SEED_KEY,
    TAU_KEY,
    RunData,
    check_keys,
    group_runs,
    shared_context,
)
from t2po_cli.report.render import Image, Section, Table, out_dir_for, write_report
from t2po_cli.report.tables import (
    RunSummary,
    jsonable,
    sensitivity,
    stability_rows,
    summarise_run,
    transfer,
    variant_rows,
)
from t2po_cli.tracking import keys as K
from t2po_cli.tracking.early_warning import (
    ANY_RULE,
    RULE_DOCS,
    RunWarnings,
    WarningThresholds,
    pooled_leads,
    warnings_from_points,
)


@dataclass
class Analysis:
    """Everything the report shows, computed once and rendered into markdown, HTML and JSON."""

    runs: Sequence[RunData]
    groups: dict[str, list[RunData]]
    ordered: list[RunSummary]
    verdicts: dict[str, RunVerdict]
    vrows: list[dict[str, Any]]
    srows: list[dict[str, Any]]
    sens: dict[str, dict[str, list[dict[str, Any]]]]
    xfer: dict[str, dict[str, Any]]
    keys: Sequence[str]
    inputs: Sequence[str]
    notes: Sequence[str]
    th: Thresholds
    warned: list[RunWarnings] = field(default_factory=list)
    leads: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, Image] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportResult:
    out: Path
    summary: dict[str, Any]
    variant_rows: list[dict[str, Any]]


def build_report(
    runs: Sequence[RunData],
    *,
    group_keys: Sequence[str],
    inputs: Sequence[str],
    out: Path | None,
    default_parent: Path,
    notes: Sequence[str] = (),
    thresholds: Thresholds | None = None,
) -> ReportResult:
    """Analyse the runs and write the report folder.

    Args:
        runs: loaded runs (at least one).
        group_keys: config keys that define a variant; seeds (``trainer.seed``) are pooled.
        inputs: what the user passed (paths or ``mlflow:<experiment>``), recorded in the report.
        out: ``--out`` folder, or None for ``<default_parent>/report``.
        default_parent: where the default report folder goes.
        notes: loader notes (skipped runs) to show in the report.
        thresholds: detector thresholds (defaults when None).

    Raises:
        UserError: a ``--by`` key is unknown, or the output folder is unusable.
    """
    th = thresholds or Thresholds()
    check_keys(runs, group_keys)
    target = out_dir_for(out, default_parent)
    groups = group_runs(runs, group_keys)
    variant_of = {r.source: label for label, rs in groups.items() for r in rs}
    verdicts = {r.source: judge_run(r.series, th) for r in runs}
    summaries = {r.source: summarise_run(r, variant_of[r.source], verdicts[r.source]) for r in runs}
    ordered = [summaries[r.source] for rs in groups.values() for r in rs]
    vrows = variant_rows(ordered)
    srows = stability_rows(ordered)
    sens = {
        "tau": sensitivity(runs, summaries, TAU_KEY, "t2po.tti.enabled"),
        "eta": sensitivity(runs, summaries, ETA_KEY, "t2po.tds.enabled"),
    }
    xfer = {name: transfer(s) for name, s in sens.items()}
    warned = [RunWarnings(s.name, s.variant, s.collapse_step, tuple(run_warnings(r))) for r, s in
              ((r, summaries[r.source]) for rs in groups.values() for r in rs)]
    by_source = {r.source: w.warnings for r, w in zip((r for rs in groups.values() for r in rs), warned, strict=True)}

    figures: dict[str, Any] = {
        "learning_curves": plots.plot_learning_curves(groups, verdicts),
        "stability": plots.plot_stability(groups),
        "t2po": plots.plot_t2po(groups),
        "sensitivity": plots.plot_sensitivity(sens),
        "efficiency": plots.plot_efficiency(groups, summaries),
        "diagnostics": plots.plot_diagnostics(groups, by_source),
        "thresholds": plots.plot_thresholds(groups),
    }
    a = Analysis(runs, groups, ordered, verdicts, vrows, srows, sens, xfer, group_keys, inputs, notes, th,
                 warned, pooled_leads(warned))
    with tempfile.TemporaryDirectory(prefix="t2po-report-") as scratch:
        pngs: dict[str, Path] = {}
        for name, fig in figures.items():
            title = name.replace("_", " ")
            if isinstance(fig, str):
                a.images[name] = Image(title, None, fig)
                continue
            pngs[f"{name}.png"] = plots.save_png(fig, Path(scratch) / f"{name}.png")
            a.images[name] = Image(title, f"{name}.png")
        summary = _summary(a)
        final = write_report(target, "t2po report", _sections(a), summary, pngs)
    summary["out"] = str(final)
    return ReportResult(final, summary, vrows)


def run_warnings(run: RunData) -> list[Any]:
    """The early warnings of one run, from its train series (``tracking/early_warning.py``)."""
    points = {k: {int(st): float(v) for st, v in zip(s.steps, s.values, strict=True)}
              for k, s in run.series.items() if not k.startswith(K.VAL_PREFIX)}
    return warnings_from_points(points, run_warning_thresholds(run))


def run_warning_thresholds(run: RunData) -> WarningThresholds:
    """The run's own ``diagnostics.warnings.*`` from its logged config (defaults for keys it did not log)."""
    prefix = "diagnostics.warnings."
    base = WarningThresholds()
    out: dict[str, Any] = {}
    for key, default in base.to_dict().items():
        raw = run.params.get(prefix + key)
        if raw is None:
            continue
        try:
            out[key] = type(default)(float(raw)) if isinstance(default, float) else int(float(raw))
        except (TypeError, ValueError):
            continue
    return replace(base, **out)


def _summary(a: Analysis) -> dict[str, Any]:
    return jsonable({
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": list(a.inputs),
        "group_by": list(a.keys),
        "runs_total": len(a.ordered),
        "runs_collapsed": sum(s.collapsed for s in a.ordered),
        "thresholds": a.th.to_dict(),
        "variants": a.vrows,
        "stability_vs_capability": a.srows,
        "runs": [
            {
                "name": s.name, "source": s.source, "variant": s.variant, "seed": s.seed,
                "curve": s.curve, "final_success": s.final, "best_success": s.best, "auc": s.auc,
                "peak_before_collapse": s.peak_before_collapse, "tokens_per_episode": s.tokens,
                "turns_per_episode": s.turns, "last_step": s.steps, **a.verdicts[s.source].to_dict(),
                "warnings": [{**w.to_dict(), "lead": rw.lead(w)} for w in rw.warnings],
            }
            for s, rw in zip(a.ordered, a.warned, strict=True)
        ],
        "early_warnings": {"thresholds": WarningThresholds().to_dict(), "pooled": a.leads},
        "sensitivity": a.sens,
        "transfer": a.xfer,
        "plots": {name: img.file for name, img in a.images.items()},
        "skipped_plots": {name: img.skipped for name, img in a.images.items() if img.file is None},
        "notes": list(a.notes),
    })


def _num(x: float | None, digits: int = 3) -> str:
    if isinstance(x, int):
        return str(x)
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.0%}"


def _sections(a: Analysis) -> list[Section]:
    images = a.images
    secs = [_overview(a), _variants_section(a.vrows, images)]
    secs.append(_collapse_section(a.ordered, a.verdicts, a.th))
    secs.append(_warnings_section(a, images))
    secs.append(_stability_section(a.srows, images))
    secs.append(Section("T2PO activity", [
        "TTI intervention rate (forced `</think>` per turn), TDS resample rate, and tokens per episode.",
        images["t2po"],
    ]))
    secs.append(_threshold_section(a.sens, a.xfer, images))
    secs.append(Section("Threshold trajectories", [
        "The TDS threshold η (`t2po/tds/eta`) and TTI tolerance τ (`t2po/tti/tau`) in use at each step, as "
        "chosen by `t2po.tds.eta=auto` / `t2po.tti.tau=auto` (a fixed value is a flat line).",
        images["thresholds"],
    ]))
    secs.append(Section("Efficiency", [
        "Final success against tokens per episode (mean over training): dots are runs, diamonds are "
        "variant means with ± sd bars. Up and to the left is better.",
        images["efficiency"],
    ]))
    secs.append(_notes_section(a.ordered, images, a.notes))
    return secs


def _notes_section(ordered: list[RunSummary], images: dict[str, Image], notes: Sequence[str]) -> Section:
    seeds: dict[str, list[str]] = {}
    for s in ordered:
        seeds.setdefault(s.variant, []).append(str(s.seed))
    items = [f"plot {img.title} skipped: {img.skipped}" for img in images.values() if img.file is None]
    items += [f"variant {v} has repeated seeds ({', '.join(ss)}); each run counts as one sample"
              for v, ss in seeds.items() if len(ss) != len(set(ss))]
    items += list(notes)
    return Section("Notes", [items or ["nothing skipped"]])


def _overview(a: Analysis) -> Section:
    ctx = shared_context(a.runs, a.keys)
    collapsed = sum(s.collapsed for s in a.ordered)
    sec = Section("Overview")
    sec.p(f"Inputs: {', '.join(f'`{i}`' for i in a.inputs)}.")
    sec.p(f"**{len(a.ordered)} runs** in **{len(a.groups)} variants** (grouped by "
          f"{', '.join(f'`{k}`' for k in a.keys)}; seeds `{SEED_KEY}` pooled); "
          f"**{collapsed} collapsed**.")
    if ctx:
        sec.p("Shared by all runs: " + ", ".join(f"{k}={v}" for k, v in ctx.items()) + ".")
    return sec


def _variants_section(vrows: list[dict[str, Any]], images: dict[str, Image]) -> Section:
    sec = Section("Variants")
    sec.p("Mean ± sd over seeds. **final** = last validation success rate (last train success when no "
          "validation was logged; column *curve*), **best** = maximum of that curve, **AUC** = area under "
          "it divided by the step span (mean success over training), **collapse rate** = fraction of "
          "seeds any collapse detector flagged, **steps to collapse** over the collapsed seeds only.")
    sec.blocks.append(Table(
        ["variant", "seeds", "curve", "final success", "best success", "collapse rate", "steps to collapse",
         "tokens/episode", "turns/episode", "AUC"],
        [[r["variant"], str(r["seeds"]), r["curve"], r["final_success"].text(pct=True),
          r["best_success"].text(pct=True), _pct(r["collapse_rate"]), r["steps_to_collapse"].text(),
          r["tokens_per_episode"].text(), r["turns_per_episode"].text(), r["auc"].text(pct=True)]
         for r in vrows],
    ))
    sec.p("Learning curves: mean ± sd across seeds per variant; × marks the step where a seed collapsed.")
    sec.blocks.append(images["learning_curves"])
    return sec


def _collapse_section(ordered: list[RunSummary], verdicts: dict[str, RunVerdict], th: Thresholds) -> Section:
    sec = Section("Collapse detection")
    sec.p("A run is **collapsed** when any *collapse* detector fires; *warning* detectors are listed but do "
          "not count. The collapse step is the earliest collapse detection.")
    sec.blocks.append(Table(
        ["run", "variant", "seed", "collapsed", "collapse step", "detectors fired (step)"],
        [[s.name, s.variant, str(s.seed), "yes" if s.collapsed else "no", _num(s.collapse_step),
          "; ".join(f"{d.name}@{d.step} ({d.severity})" for d in verdicts[s.source].detections) or "none"]
         for s in ordered],
    ))
    sec.p("Detectors and thresholds (`report/detectors.py::Thresholds`):")
    sec.blocks.append([f"`{name}`: {doc}" for name, doc in DETECTOR_DOCS.items()])
    sec.blocks.append(Table(["threshold", "value"], [[k, str(v)] for k, v in th.to_dict().items()]))
    return sec


def _warnings_section(a: Analysis, images: dict[str, Image]) -> Section:
    sec = Section("Early warnings")
    sec.p("Rules on the `diag/*` signals that may precede a collapse (`tracking/early_warning.py`; the trainer "
          "runs the same rules live and acts on them as `trainer.on_collapse` says). **lead** = collapse step "
          "− warning step: positive when the warning came first.")
    sec.blocks.append(Table(
        ["run", "variant", "collapse step", "warnings (step, lead)"],
        [[w.name, w.variant, _num(w.collapse_step),
          "; ".join(f"{x.rule}@{x.step}" + ("" if w.lead(x) is None else f" (lead {w.lead(x)})")
                    for x in w.warnings) or "none"]
         for w in a.warned],
    ))
    sec.p("Pooled over runs: collapsed runs where the rule fired at least one step before the collapse, the "
          "median lead time, late warnings (at or after the collapse), and *false alarms* (the rule fired in "
          "a run that did not collapse).")
    sec.blocks.append(Table(
        ["rule", "warned before collapse", "median lead", "leads", "late", "false alarms"],
        [[r["rule"], f"{r['warned_before']}/{r['collapsed']}", _num(r["median_lead"]),
          ", ".join(map(str, r["leads"])) or "—", str(r["late"]), f"{r['false_alarms']}/{r['quiet']}"]
         for r in a.leads],
    ))
    sec.blocks.append([f"`{name}`: {doc}" for name, doc in RULE_DOCS.items()]
                      + [f"`{ANY_RULE}`: the earliest warning of any rule"])
    sec.p("Signals (mean ± sd across seeds per variant); ▼ marks a run's first warning.")
    sec.blocks.append(images["diagnostics"])
    return sec


def _stability_section(srows: list[dict[str, Any]], images: dict[str, Image]) -> Section:
    sec = Section("Stability versus capability")
    sec.p("Two questions, kept apart. **Capability**: how good does the variant get? Measured by the "
          "*peak before collapse* (best success up to the first collapse step, or over the whole run when "
          "it did not collapse). **Stability**: does it keep it? Measured by the *collapse cost* (peak "
          "before collapse − final success) and by comparing the final success of non-collapsed seeds "
          "with all seeds. Diagnosis: *unstable* = some seeds collapsed and the mean cost is ≥ 0.1; "
          "*limited* = no costly collapse but the peak trails the best peak in the same environment by "
          "≥ 0.1; "
          "*stable* otherwise.")
    sec.blocks.append(Table(
        ["variant", "collapsed/seeds", "peak before collapse", "final (all)", "final (non-collapsed)",
         "final (collapsed)", "collapse cost", "diagnosis"],
        [[r["variant"], f"{r['collapsed']}/{r['seeds']}", r["peak_before_collapse"].text(pct=True),
          r["final_all"].text(pct=True), r["final_non_collapsed"].text(pct=True),
          r["final_collapsed"].text(pct=True), r["collapse_cost"].text(pct=True), r["diagnosis"]]
         for r in srows],
    ))
    sec.p("Stability panel: gradient norm, entropy, KL and response length (mean ± sd across seeds).")
    sec.blocks.append(images["stability"])
    return sec


def _threshold_section(
    sens: dict[str, dict[str, list[dict[str, Any]]]], xfer: dict[str, dict[str, Any]], images: dict[str, Image]
) -> Section:
    sec = Section("Threshold sensitivity and transfer")
    sec.p("tau = `t2po.tti.tau` (runs with TTI on) and eta = `t2po.tds.eta` (runs with TDS on): final "
          "success (mean ± sd over all runs at that value, other settings pooled) and collapse rate.")
    sec.blocks.append(images["sensitivity"])
    for name, by_env in sens.items():
        if not by_env:
            sec.p(f"{name}: fewer than two values per environment; no sensitivity to show.")
            continue
        sec.blocks.append(Table(
            ["env", name, "runs", "final success", "collapse rate"],
            [[env, f"{r['value']:g}", str(r["runs"]), r["final_success"].text(pct=True), _pct(r["collapse_rate"])]
             for env, rows in by_env.items() for r in rows],
        ))
        best, cost = xfer[name]["best"], xfer[name]["cost"]
        sec.p(f"Transfer of {name}: best value per environment, and what using another environment's best "
              f"value costs in final success (percentage points; — = that value was not run there).")
        envs = sorted(best)
        sec.blocks.append(Table(
            ["target env", f"best {name}", "final at best"] + [f"cost with {e}'s {name}" for e in envs],
            [[t, f"{best[t]['value']:g}", _pct(best[t]["final_success"])]
             + [_num(None if cost[t][s] is None else 100 * cost[t][s], 3) for s in envs] for t in envs],
        ))
    return sec


__all__ = ["Analysis", "ReportResult", "build_report"]
