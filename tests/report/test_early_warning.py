"""Early-warning rules on hand-built metric rows: each rule fires where computed by hand, not before its
minimum history, on sparse series, and causally (a prefix of the rows gives the same first steps)."""

from __future__ import annotations

from typing import Any

import pytest

from t2po_cli.tracking import keys as K
from t2po_cli.tracking.early_warning import (
    RULES,
    Warning,
    WarningThresholds,
    first_warnings,
    new_warnings,
    persistent_index,
)


def rows_of(series: dict[str, list[float | None]], split: str = "train") -> list[dict[str, Any]]:
    """Rows from per-key value lists (None = not logged at that step); steps start at 1."""
    n = max(len(v) for v in series.values())
    out = []
    for i in range(n):
        m = {k: v[i] for k, v in series.items() if i < len(v) and v[i] is not None}
        out.append({"step": i + 1, "split": split, "metrics": m})
    return out


def test_persistent_index() -> None:
    assert persistent_index([True, False, True, True], 2) == 3
    assert persistent_index([True, True, True], 2, start=0) == 1
    assert persistent_index([True, True, False, True], 2, start=2) is None
    assert persistent_index([], 1) is None


def test_reward_spread_drop_fires_at_hand_computed_step() -> None:
    # trailing means (window 3): 0.4, 0.4, 0.4, 0.4, 0.3, 0.1667, 0.0333 → peak 0.4; 0.3·0.4 = 0.12
    # step 7 is the first ≤ 0.12 (0.0333 = 8% of the peak).
    rows = rows_of({K.DIAG_REWARD_SPREAD: [0.4, 0.4, 0.4, 0.4, 0.1, 0.0, 0.0]})
    (w,) = first_warnings(rows)
    assert (w.rule, w.step, w.metric) == ("reward_spread_drop", 7, K.DIAG_REWARD_SPREAD)
    assert w.value == pytest.approx(0.1 / 3)
    assert "8% of its peak" in w.message
    assert w.line().startswith("warning: step 7 diag/reward_spread fell to 0.0333")
    assert w.line().endswith("collapse may follow")


def test_reward_spread_needs_history_and_a_real_peak() -> None:
    # Falls at step 2 already: not judged before min_history (5) points; it fires at step 5.
    assert first_warnings(rows_of({K.DIAG_REWARD_SPREAD: [0.5, 0.0, 0.0, 0.0, 0.0]}))[0].step == 5
    assert first_warnings(rows_of({K.DIAG_REWARD_SPREAD: [0.5, 0.0, 0.0, 0.0]})) == []
    # A spread that never rose above spread_min_peak (0.05) is never a warning.
    assert first_warnings(rows_of({K.DIAG_REWARD_SPREAD: [0.04, 0.04, 0.0, 0.0, 0.0, 0.0, 0.0]})) == []


def test_sparse_series_counts_logged_points_only() -> None:
    # Logged every other step: points at steps 1,3,5,7,9,11,13 → the 7th point (step 13) fires.
    vals = [0.4, 0.4, 0.4, 0.4, 0.1, 0.0, 0.0]
    sparse: list[float | None] = []
    for v in vals:
        sparse += [v, None]
    rows = rows_of({K.DIAG_REWARD_SPREAD: sparse[:-1], K.SUCCESS_RATE: [0.5] * 13})
    (w,) = first_warnings(rows)
    assert w.step == 13


def test_zero_spread_needs_persistence_and_unsaturated_success() -> None:
    z = [0.0, 0.0, 0.0, 0.8, 0.8, 0.8, 0.8]
    rows = rows_of({K.DIAG_ZERO_SPREAD_GROUPS: z, K.SUCCESS_RATE: [0.3] * 7})
    (w,) = first_warnings(rows)
    assert (w.rule, w.step) == ("zero_spread_groups", 6)  # points 4, 5, 6 at ≥ 0.75
    # The same zero spread at 100 % success is saturation, not a warning.
    assert first_warnings(rows_of({K.DIAG_ZERO_SPREAD_GROUPS: z, K.SUCCESS_RATE: [1.0] * 7})) == []
    # Zero spread from the first step (a policy that never solved a task: no signal to lose) is no news.
    assert first_warnings(rows_of({K.DIAG_ZERO_SPREAD_GROUPS: [1.0] * 10, K.SUCCESS_RATE: [0.0] * 10})) == []


def test_entropy_adv_cov_needs_positive_cov_and_falling_entropy() -> None:
    cov = [0.0, 0.0, 0.01, 0.02, 0.02, 0.03, 0.03]
    ent = [1.0, 1.0, 1.0, 0.95, 0.9, 0.85, 0.8]
    (w,) = first_warnings(rows_of({K.DIAG_ENTROPY_ADV_COV: cov, K.ENTROPY: ent}))
    # Window of 4 ending at step 6: cov 0.01..0.03 > 0, entropy 1.0 → 0.85 = 15 % drop ≥ 10 %.
    assert (w.rule, w.step, w.value) == ("entropy_adv_cov", 6, 0.03)
    assert "15%" in w.message
    # Entropy flat: no warning.
    assert first_warnings(rows_of({K.DIAG_ENTROPY_ADV_COV: cov, K.ENTROPY: [1.0] * 7})) == []


def test_entropy_rise_fires_after_two_points_above_one_and_a_half_times_the_baseline() -> None:
    # Baseline = median(1.0, 0.8, 1.2) = 1.0, limit 1.5: steps 5, 7, 8 are at or above it; 5 alone is not
    # persistent, 7-8 are → step 8 (value 1.7, 1.7x).
    ent = [1.0, 0.8, 1.2, 1.3, 1.6, 1.4, 1.5, 1.7]
    (w,) = first_warnings(rows_of({K.ENTROPY: ent}))
    assert (w.rule, w.step, w.value) == ("entropy_rise", 8, 1.7)
    assert "1.7x" in w.message
    # Above the limit from step 4: fires once min_history (5) points exist.
    assert [(w.rule, w.step) for w in first_warnings(rows_of({K.ENTROPY: [1.0, 1.0, 1.0, 2.0, 2.0]}))] == [
        ("entropy_rise", 5)]
    assert first_warnings(rows_of({K.ENTROPY: [1.0] * 10})) == []
    assert first_warnings(rows_of({K.ENTROPY: ent}), WarningThresholds(entropy_rise_factor=1.75)) == []


def test_mult_error_fires_after_two_points_above_threshold() -> None:
    m = [1.0, 1.0, 1.0, 1.0, 1.06, 1.01, 1.07, 1.08]
    (w,) = first_warnings(rows_of({K.DIAG_LOGP_MULT_ERROR: m}))
    assert (w.rule, w.step, w.value) == ("logp_mult_error", 8, 1.08)


def test_mult_error_before_min_history_still_fires_once_history_is_reached() -> None:
    m = [1.2, 1.2, 1.2, 1.2, 1.2]
    (w,) = first_warnings(rows_of({K.DIAG_LOGP_MULT_ERROR: m}))
    assert w.step == 5


def test_grad_norm_z() -> None:
    (w,) = first_warnings(rows_of({K.DIAG_GRAD_NORM_Z: [9.0, 0.1, -0.5, 0.3, 0.2, 4.5]}))
    assert (w.rule, w.step, w.value) == ("grad_norm_z", 6, 4.5)


def test_val_rows_and_non_finite_values_are_ignored() -> None:
    rows = rows_of({K.DIAG_GRAD_NORM_Z: [9.0] * 6}, split="val")
    rows += rows_of({K.DIAG_GRAD_NORM_Z: [float("nan")] * 6})
    assert first_warnings(rows) == []


def test_causal_prefix_and_new_warnings() -> None:
    series = {
        K.DIAG_REWARD_SPREAD: [0.4, 0.4, 0.4, 0.4, 0.1, 0.0, 0.0, 0.0, 0.0],
        K.DIAG_GRAD_NORM_Z: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0],
    }
    rows = rows_of(series)
    full = first_warnings(rows)
    assert [(w.rule, w.step) for w in full] == [("reward_spread_drop", 7), ("grad_norm_z", 8)]
    for n in range(1, len(rows) + 1):
        prefix = first_warnings(rows[:n])
        assert prefix == [w for w in full if w.step <= n]
        assert new_warnings(rows[:n], n) == [w for w in full if w.step == n]


def test_thresholds_are_respected() -> None:
    rows = rows_of({K.DIAG_GRAD_NORM_Z: [0.0] * 5 + [3.0]})
    assert first_warnings(rows) == []
    assert first_warnings(rows, WarningThresholds(grad_z_max=2.5))[0].step == 6


def test_every_rule_reads_a_diag_key_and_the_api_shape() -> None:
    # Every rule reads a diag/* key, except entropy_rise, which reads the trainer's token entropy itself.
    assert {r.metric for r in RULES} <= {*K.DIAG_KEYS, K.ENTROPY}
    w = Warning("r", 1, "m", 0.5, "msg")
    assert w.to_dict() == {"rule": "r", "step": 1, "metric": "m", "value": 0.5, "message": "msg", "since": 1}


def test_since_is_where_the_condition_that_fired_began() -> None:
    # entropy_rise fires at step 8 on the run 7-8 (persist 2) → since 7; entropy_adv_cov fires at 6 on the window
    # 3-6 (4 points) → since 3; grad_norm_z is a single point → since = step; reward_spread_drop fires at 7 on the
    # trailing mean of 5-7 → since 5.
    ent = [1.0, 0.8, 1.2, 1.3, 1.6, 1.4, 1.5, 1.7]
    assert [(w.step, w.since) for w in first_warnings(rows_of({K.ENTROPY: ent}))] == [(8, 7)]
    cov = [0.0, 0.0, 0.01, 0.02, 0.02, 0.03, 0.03]
    ent2 = [1.0, 1.0, 1.0, 0.95, 0.9, 0.85, 0.8]
    (w,) = first_warnings(rows_of({K.DIAG_ENTROPY_ADV_COV: cov, K.ENTROPY: ent2}))
    assert (w.rule, w.step, w.since) == ("entropy_adv_cov", 6, 3)
    (w,) = first_warnings(rows_of({K.DIAG_GRAD_NORM_Z: [9.0, 0.1, -0.5, 0.3, 0.2, 4.5]}))
    assert (w.step, w.since) == (6, 6)
    (w,) = first_warnings(rows_of({K.DIAG_REWARD_SPREAD: [0.4, 0.4, 0.4, 0.4, 0.5, 0.0, 0.0, 0.0]}))
    assert w.rule == "reward_spread_drop" and w.since == w.step - 2
