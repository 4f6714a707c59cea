"""Rollout-level t2po/tti/* and t2po/turn_score/* metrics from token-hook reports (t2po.md §9)."""

from __future__ import annotations

import pytest
import torch

from t2po_cli.hooks.metrics import tti_metrics
from t2po_cli.hooks.tti import BUDGET, STAGNATION, ThinkingIntervention, TTIParams
from t2po_cli.tracking import keys


def report(score, events=(), think=0, has_think=True, unclosed=False, saved=0, length=50, tau=0.01) -> dict:
    forced = {BUDGET: 0, STAGNATION: 0}
    for _, kind, _ in events:
        forced[kind] += 1
    return {
        "turn_score": score,
        "interventions": list(events),
        "forced": forced,
        "think_tokens": think,
        "has_think": has_think,
        "unclosed_think": unclosed,
        "generated_len": length,
        "tokens_saved_upper": saved,
        "tau": tau,
    }


def test_hand_computed_rollout() -> None:
    reports = [
        report(0.2, [(21, STAGNATION, 20)], think=20, saved=9),
        report(0.4, [(10, STAGNATION, 8), (40, BUDGET, 30)], think=30, saved=5),
        report(None, think=0, has_think=False),
        report(0.3, think=12, unclosed=True),
    ]
    m = tti_metrics(reports, turns=[0, 0, 1, 1])
    assert m[keys.TTI_TAU] == pytest.approx(0.01)
    assert m[keys.TTI_INTERVENTIONS_PER_TURN] == pytest.approx(3 / 4)
    assert m[keys.TTI_INTERVENTION_RATE] == pytest.approx(2 / 4)
    assert m[keys.TTI_BUDGET_RATE] == pytest.approx(1 / 4)
    assert m[keys.TTI_STAGNATION_RATE] == pytest.approx(2 / 4)
    assert m[keys.TTI_THINK_TOKENS_MEAN] == pytest.approx((20 + 30 + 12) / 3)  # turns with a think block
    assert m[keys.TTI_THINK_LEN_AT_INTERVENTION] == pytest.approx((20 + 8) / 2)  # stagnation events only
    assert m[keys.TTI_TOKENS_SAVED_UPPER] == 14
    assert m[keys.TTI_UNCLOSED_THINK_RATE] == pytest.approx(1 / 4)
    assert m[keys.TURN_SCORE_MEAN] == pytest.approx(0.3)
    assert m[keys.TURN_SCORE_STD] == pytest.approx((0.02 / 3) ** 0.5)  # population std of 0.2, 0.4, 0.3
    assert m[keys.TURN_SCORE_MISSING_RATE] == pytest.approx(1 / 4)
    assert m[f"{keys.TURN_SCORE_BY_TURN}/0"] == pytest.approx(0.3)
    assert m[f"{keys.TURN_SCORE_BY_TURN}/1"] == pytest.approx(0.3)


def test_undefined_keys_are_left_out() -> None:
    m = tti_metrics([report(None, has_think=False)])
    assert m[keys.TURN_SCORE_MISSING_RATE] == 1.0
    for key in (
        keys.TURN_SCORE_MEAN,
        keys.TURN_SCORE_STD,
        keys.TTI_THINK_TOKENS_MEAN,
        keys.TTI_THINK_LEN_AT_INTERVENTION,
    ):
        assert key not in m
    assert tti_metrics([]) == {}


def test_score_only_mode_and_turn_length_check() -> None:
    m = tti_metrics([report(0.1), report(0.3)], include_tti=False)
    assert set(m) == {keys.TURN_SCORE_MEAN, keys.TURN_SCORE_STD, keys.TURN_SCORE_MISSING_RATE}
    with pytest.raises(ValueError):
        tti_metrics([report(0.1)], turns=[0, 1])


def test_from_real_hook_reports() -> None:
    # One row stalls inside <think> at step 20 and then writes 20 more tokens; K = 33.
    hook = ThinkingIntervention(TTIParams(think_ids=(5, 6), max_response_tokens=64, max_think_tokens=100))
    hook.begin(1, torch.tensor([True]))
    for _ in range(41):
        force = hook.step(torch.tensor([0.25]), torch.tensor([True]))
        hook.observe(torch.where(force >= 0, force, torch.tensor([9])), torch.tensor([True]))
    m = tti_metrics(hook.end(), turns=[3])
    assert m[keys.TTI_INTERVENTIONS_PER_TURN] == 1.0
    assert m[keys.TTI_STAGNATION_RATE] == 1.0 and m[keys.TTI_BUDGET_RATE] == 0.0
    assert m[keys.TTI_THINK_TOKENS_MEAN] == 20
    assert m[keys.TTI_THINK_LEN_AT_INTERVENTION] == 20
    assert m[keys.TTI_TOKENS_SAVED_UPPER] == min(100 - 20, 64 - 20)
    assert m[keys.TTI_UNCLOSED_THINK_RATE] == 0.0
    assert m[keys.TURN_SCORE_MEAN] == pytest.approx(0.25)
    assert m[f"{keys.TURN_SCORE_BY_TURN}/3"] == pytest.approx(0.25)
