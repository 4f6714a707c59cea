"""Report tables on hand-built runs, against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from t2po_cli.report.detectors import RunVerdict, Series
from t2po_cli.report.load import (
    DEFAULT_GROUP_KEYS,
    RunData,
    group_runs,
    parse_param,
    series_from_rows,
    shared_context,
)
from t2po_cli.report.tables import (
    Stat,
    normalised_auc,
    sensitivity,
    stability_rows,
    stat,
    summarise_run,
    transfer,
    variant_rows,
)
from t2po_cli.tracking import keys as K

OK = RunVerdict(False, None, ())


def _run(name: str, params: dict, **series: tuple[list[int], list[float]]) -> RunData:
    keymap = {"val_success": K.val(K.SUCCESS_RATE), "success": K.SUCCESS_RATE, "tokens": K.TOKENS_PER_EPISODE,
              "turns": K.EPISODE_LENGTH}
    return RunData(name, f"/runs/{name}", {"env.name": "webshop", **params},
                   {keymap[k]: Series(np.array(s), np.array(v, float)) for k, (s, v) in series.items()})


def test_stat_mean_and_sample_sd() -> None:
    s = stat([0.4, 0.8])
    assert s.mean == pytest.approx(0.6) and s.sd == pytest.approx(math.sqrt(0.08)) and s.n == 2
    assert s.text(pct=True) == "60.0% ± 28.3%"
    one = stat([0.5, float("nan")])
    assert one.n == 1 and math.isnan(one.sd) and one.text(pct=True) == "50.0%"
    assert stat([]).text() == "—"
    assert Stat(1234.5, 10.0, 3).text() == "1.23e+03 ± 10"


def test_auc_is_mean_success_over_the_step_span() -> None:
    # Trapezoids: 10·(0.2+0.6)/2 + 10·(0.6+0.4)/2 = 9 over a span of 20.
    assert normalised_auc(Series(np.array([0, 10, 20]), np.array([0.2, 0.6, 0.4]))) == pytest.approx(0.45)
    assert normalised_auc(Series(np.array([7]), np.array([0.3]))) == pytest.approx(0.3)


def test_variant_rows_hand_computed() -> None:
    a = _run("a", {"trainer.seed": 0}, val_success=([0, 10, 20], [0.2, 0.6, 0.4]), success=([0, 20], [0.9, 0.9]),
             tokens=([0, 10], [100.0, 200.0]), turns=([0, 10], [4.0, 6.0]))
    b = _run("b", {"trainer.seed": 1}, val_success=([0, 10, 20], [0.0, 0.8, 0.8]),
             tokens=([0, 10], [300.0, 300.0]), turns=([0, 10], [6.0, 6.0]))
    # c logged no validation: final/best come from train success; collapsed at step 10.
    c = _run("c", {"trainer.seed": 2}, success=([0, 5, 10, 15], [0.3, 0.5, 0.1, 0.0]))
    verdicts = {"a": OK, "b": OK, "c": RunVerdict(True, 10, ())}
    sums = [summarise_run(r, "v", verdicts[r.name]) for r in (a, b, c)]
    assert [s.curve for s in sums] == ["val", "val", "train"]
    assert [s.final for s in sums] == pytest.approx([0.4, 0.8, 0.0])
    assert [s.best for s in sums] == pytest.approx([0.6, 0.8, 0.5])
    assert sums[0].auc == pytest.approx(0.45) and sums[1].auc == pytest.approx(0.6)
    assert sums[2].peak_before_collapse == pytest.approx(0.5) and sums[2].collapse_cost == pytest.approx(0.5)

    (row,) = variant_rows(sums)
    assert row["seeds"] == 3 and row["curve"] == "mixed"
    assert row["final_success"].mean == pytest.approx(0.4)
    assert row["final_success"].sd == pytest.approx(0.4)  # values 0.4, 0.8, 0.0: sample sd = 0.4
    assert row["best_success"].mean == pytest.approx((0.6 + 0.8 + 0.5) / 3)
    assert row["collapse_rate"] == pytest.approx(1 / 3)
    assert row["steps_to_collapse"].mean == 10 and row["steps_to_collapse"].n == 1
    assert row["tokens_per_episode"].mean == pytest.approx(225.0)  # runs 150 and 300; c has none
    assert row["tokens_per_episode"].sd == pytest.approx(math.sqrt(2 * 75.0**2))
    assert row["turns_per_episode"].mean == pytest.approx(5.5)


def test_stability_split_and_diagnosis() -> None:
    good = [_run(f"g{i}", {"t2po.variant": "on"}, val_success=([0, 10], [0.5, 0.7 + 0.02 * i])) for i in range(2)]
    bad = [
        _run("b0", {"t2po.variant": "off"}, val_success=([0, 10, 20], [0.2, 0.8, 0.0])),
        _run("b1", {"t2po.variant": "off"}, val_success=([0, 10, 20], [0.2, 0.6, 0.6])),
    ]
    weak = [_run("w0", {"t2po.variant": "tti"}, val_success=([0, 10], [0.1, 0.3]))]
    verdicts = {"b0": RunVerdict(True, 20, ())}
    sums = [summarise_run(r, r.params["t2po.variant"], verdicts.get(r.name, OK)) for r in good + bad + weak]
    rows = {r["variant"]: r for r in stability_rows(sums)}
    off = rows["off"]
    assert off["collapsed"] == 1 and off["seeds"] == 2
    assert off["peak_before_collapse"].mean == pytest.approx(0.7)  # 0.8 and 0.6
    assert off["final_all"].mean == pytest.approx(0.3)
    assert off["final_non_collapsed"].mean == pytest.approx(0.6) and off["final_non_collapsed"].n == 1
    assert off["final_collapsed"].mean == pytest.approx(0.0)
    assert off["collapse_cost"].mean == pytest.approx(0.4)  # (0.8 − 0) and (0.6 − 0.6)
    assert off["diagnosis"] == "unstable"
    assert rows["on"]["diagnosis"] == "stable"
    assert rows["tti"]["diagnosis"] == "limited"  # peak 0.3 vs 0.72 in the same env


def test_sensitivity_and_transfer() -> None:
    runs, sums = [], {}
    finals = {("webshop", 0.1): [0.5, 0.7], ("webshop", 0.3): [0.8], ("alfworld", 0.1): [0.6],
              ("alfworld", 0.3): [0.2], ("searchqa", 0.5): [0.4]}
    for (env, eta), values in finals.items():
        for i, f in enumerate(values):
            r = RunData(f"{env}{eta}{i}", f"{env}{eta}{i}",
                        {"env.name": env, "t2po.tds.eta": eta, "t2po.tds.enabled": True},
                        {K.val(K.SUCCESS_RATE): Series(np.array([0, 1]), np.array([0.0, f]))})
            runs.append(r)
            sums[r.source] = summarise_run(r, "v", OK)
    off = RunData("off", "off", {"env.name": "webshop", "t2po.tds.eta": 0.5, "t2po.tds.enabled": False}, {})
    runs.append(off)
    sens = sensitivity(runs, sums, "t2po.tds.eta", "t2po.tds.enabled")
    assert set(sens) == {"alfworld", "webshop"}  # searchqa has one value; the TDS-off run is ignored
    assert [r["value"] for r in sens["webshop"]] == [0.1, 0.3]
    assert sens["webshop"][0]["final_success"].mean == pytest.approx(0.6)
    xfer = transfer(sens)
    assert xfer["best"]["webshop"]["value"] == 0.3 and xfer["best"]["alfworld"]["value"] == 0.1
    assert xfer["cost"]["webshop"]["alfworld"] == pytest.approx(0.8 - 0.6)
    assert xfer["cost"]["alfworld"]["webshop"] == pytest.approx(0.6 - 0.2)
    assert xfer["cost"]["webshop"]["webshop"] == 0


def test_grouping_labels_name_only_varying_keys() -> None:
    runs = [RunData(str(i), str(i), {"env.name": "webshop", "t2po.variant": v, "trainer.seed": s})
            for i, (v, s) in enumerate([("on", 0), ("on", 1), ("off", 0)])]
    groups = group_runs(runs, ("env.name", "t2po.variant"))
    assert {k: len(v) for k, v in groups.items()} == {"t2po=off": 1, "t2po=on": 2}
    assert list(group_runs(runs, ("env.name",))) == ["all runs"]


def test_default_grouping_tells_rollback_runs_from_baseline_runs() -> None:
    """Both run with t2po off; only trainer.on_collapse differs. A run from before the field groups as `continue`."""
    base = {"env.name": "webshop", "t2po.variant": "off"}
    runs = [RunData("a", "a", {**base, "trainer.on_collapse": "continue"}),
            RunData("b", "b", dict(base)),  # predates trainer.on_collapse
            RunData("c", "c", {**base, "trainer.on_collapse": "rollback"})]
    groups = group_runs(runs, DEFAULT_GROUP_KEYS)
    assert {k: [r.name for r in v] for k, v in groups.items()} == {
        "on_collapse=continue": ["a", "b"], "on_collapse=rollback": ["c"]}
    assert shared_context(runs[:2], DEFAULT_GROUP_KEYS)["on_collapse"] == "continue"


def test_series_from_rows_and_param_parsing() -> None:
    rows = [
        {"step": 1, "split": "train", "metrics": {K.SUCCESS_RATE: 0.5, "note": "x", "flag": True}},
        {"step": 0, "split": "train", "metrics": {K.SUCCESS_RATE: 0.1}},
        {"step": 0, "split": "val", "metrics": {K.SUCCESS_RATE: 0.2}},
        {"step": 1, "split": "train", "metrics": {K.SUCCESS_RATE: 0.6}},  # repeated step: last wins
    ]
    s = series_from_rows(rows)
    assert set(s) == {K.SUCCESS_RATE, K.val(K.SUCCESS_RATE)}
    assert s[K.SUCCESS_RATE].steps.tolist() == [0, 1] and s[K.SUCCESS_RATE].values.tolist() == [0.1, 0.6]
    assert [parse_param(x) for x in ("None", "True", "3", "0.0001", "webshop", "1e-05")] == [
        None, True, 3, 0.0001, "webshop", 1e-05]
