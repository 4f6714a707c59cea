"""Early warnings in ``t2po report``: lead times on synthetic runs, the pooled table, the plots, and the
HTML polish (emphasis rendered, plots at page width)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from synthetic_runs import BASE_SPECS, Spec, make_run

from t2po_cli.cli.app import main
from t2po_cli.report.build import run_warnings
from t2po_cli.report.detectors import judge_run
from t2po_cli.report.load import load_folder_run
from t2po_cli.report.render import _inline
from t2po_cli.tracking.early_warning import ANY_RULE, RunWarnings, Warning, pooled_leads


def _w(rule: str, step: int) -> Warning:
    return Warning(rule, step, "diag/x", 0.0, "m")


def test_pooled_leads_by_hand() -> None:
    runs = [
        RunWarnings("a", "v", 30, (_w("reward_spread_drop", 25), _w("grad_norm_z", 31))),
        RunWarnings("b", "v", 40, (_w("reward_spread_drop", 33),)),
        RunWarnings("c", "v", None, (_w("grad_norm_z", 10),)),
        RunWarnings("d", "v", None, ()),
    ]
    rows = {r["rule"]: r for r in pooled_leads(runs)}
    spread = rows["reward_spread_drop"]
    assert (spread["warned_before"], spread["collapsed"], spread["leads"], spread["median_lead"]) == (2, 2, [5, 7], 6)
    assert (spread["late"], spread["false_alarms"], spread["quiet"]) == (0, 0, 2)
    grad = rows["grad_norm_z"]
    assert (grad["warned_before"], grad["late"], grad["false_alarms"]) == (0, 1, 1)
    anyr = rows[ANY_RULE]
    assert (anyr["leads"], anyr["false_alarms"]) == ([5, 7], 1)


@pytest.mark.parametrize("spec", [s for s in BASE_SPECS if s.collapse_at is not None], ids=lambda s: s.name)
def test_synthetic_collapse_is_warned_at_least_three_steps_ahead(tmp_path: Path, spec: Spec) -> None:
    run = load_folder_run(make_run(tmp_path, spec))
    assert run is not None
    verdict = judge_run(run.series)
    assert verdict.collapsed and verdict.collapse_step is not None
    warnings = run_warnings(run)
    spread = next(w for w in warnings if w.rule == "reward_spread_drop")
    assert verdict.collapse_step - spread.step >= 3, (spread, verdict.collapse_step)
    assert "of its peak" in spread.message


@pytest.mark.parametrize("spec", [s for s in BASE_SPECS if s.collapse_at is None], ids=lambda s: s.name)
def test_healthy_synthetic_runs_raise_no_warning(tmp_path: Path, spec: Spec) -> None:
    run = load_folder_run(make_run(tmp_path, spec))
    assert run is not None
    assert run_warnings(run) == []


def test_report_has_early_warning_section_and_polish(experiment_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["report", str(experiment_dir), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    summary = json.loads(out.out)
    runs = {r["name"]: r for r in summary["runs"]}
    for spec in BASE_SPECS:
        ws = runs[spec.name]["warnings"]
        if spec.collapse_at is None:
            assert ws == [], spec.name
        else:
            first = min(ws, key=lambda w: w["step"])
            assert first["lead"] >= 3 and first["rule"] == "reward_spread_drop"
    pooled = {r["rule"]: r for r in summary["early_warnings"]["pooled"]}
    assert pooled["reward_spread_drop"]["warned_before"] == 2 and pooled[ANY_RULE]["false_alarms"] == 0
    assert summary["plots"]["diagnostics"] == "diagnostics.png"
    assert summary["plots"]["thresholds"] == "thresholds.png"

    folder = experiment_dir / "report"
    md = (folder / "report.md").read_text()
    assert "## Early warnings" in md and "## Threshold trajectories" in md and "(lead " in md
    html = (folder / "report.html").read_text()
    assert "<em>peak before collapse</em>" in html and "<em>unstable</em>" in html
    assert not re.search(r"(?<!\*)\*[a-z][a-z ]+\*(?!\*)", re.sub(r"<[^>]+>", "", html)), "literal *emphasis*"
    assert "figure img{width:100%}" in html


def test_inline_markup() -> None:
    assert _inline("*a b* and **c**") == "<em>a b</em> and <b>c</b>"
    assert _inline("2*3*4 and a * b") == "2*3*4 and a * b"
    assert _inline("`x*y*z` *k*") == "<code>x*y*z</code> <em>k</em>"
    assert _inline("<*x*>") == "&lt;<em>x</em>&gt;"
