"""Collapse detectors on synthetic series: planted collapses are found at the right step, noise is not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t2po_cli.report import detectors as D
from t2po_cli.report.detectors import COLLAPSE, WARNING, Series, Thresholds, judge_run
from t2po_cli.tracking import keys as K

TH = Thresholds()
N = 80


def _noisy(level: float, amp: float, seed: int, n: int = N) -> np.ndarray:
    return level + np.random.default_rng(seed).uniform(-amp, amp, n)


def _steps(n: int = N) -> np.ndarray:
    return np.arange(n)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("at", [15, 40, 70])
def test_reward_collapse_found_at_planted_step(seed: int, at: int) -> None:
    rising = 0.8 * (1 - np.exp(-_steps() / 8))
    values = rising + np.random.default_rng(seed).uniform(-0.04, 0.04, N)
    values[at:] = 0.05 + np.random.default_rng(seed + 1).uniform(-0.03, 0.03, N - at)
    hit = D.detect_drop_collapse(_steps(), values, TH)
    assert hit is not None and hit.severity == COLLAPSE
    assert abs(hit.step - at) <= TH.recover_window


def test_reward_dip_that_recovers_is_not_collapse() -> None:
    values = _noisy(0.7, 0.03, 0)
    values[30:35] = 0.1  # five bad steps, back within the recovery window
    assert D.detect_drop_collapse(_steps(), values, TH) is None


def test_single_outlier_is_smoothed_away() -> None:
    values = _noisy(0.7, 0.03, 1)
    values[50] = 0.0
    assert D.detect_drop_collapse(_steps(), values, TH) is None


def test_collapse_on_sparse_steps_uses_step_window() -> None:
    steps = np.arange(0, 200, 5)  # validation every 5 steps
    values = np.full(steps.size, 0.6)
    values[steps >= 120] = 0.0
    hit = D.detect_drop_collapse(steps, values, TH, "success_collapse")
    assert hit is not None and hit.step == 120 and hit.name == "success_collapse"


def test_short_series_is_not_judged() -> None:
    assert D.detect_drop_collapse(np.arange(3), np.array([0.9, 0.0, 0.0]), TH) is None


@settings(max_examples=150, deadline=None)
@given(
    level=st.floats(0.05, 10.0),
    rel_noise=st.lists(st.floats(-0.3, 0.3), min_size=4, max_size=120),
)
def test_property_bounded_noise_never_fires_reward_collapse(level: float, rel_noise: list[float]) -> None:
    """Any noise sequence (even adversarial steps) within ±30% of a positive level never fires: the
    smoothed series stays in [0.7, 1.3]·level, so a drop is at most 0.6·level < 0.5·best (best ≥ 0.7·level
    ... and ≤ 1.3·level); see Thresholds.reward_rel_drop."""
    values = level * (1.0 + np.array(rel_noise))
    assert D.detect_drop_collapse(np.arange(values.size), values, TH) is None


@pytest.mark.parametrize("seed", range(3))
def test_stable_noisy_run_raises_no_alarm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    series = {
        K.REWARD_MEAN: Series(_steps(), 0.6 + rng.normal(0, 0.05, N)),
        K.SUCCESS_RATE: Series(_steps(), np.clip(0.5 + rng.normal(0, 0.05, N), 0, 1)),
        K.ENTROPY: Series(_steps(), 1.0 + rng.normal(0, 0.05, N)),
        K.GRAD_NORM: Series(_steps(), np.abs(1.0 + rng.normal(0, 0.1, N))),
        K.PPO_KL: Series(_steps(), np.abs(0.01 + rng.normal(0, 0.002, N))),
        K.KL_LOSS: Series(_steps(), np.abs(0.05 + rng.normal(0, 0.01, N))),
        K.RESPONSE_LENGTH_MEAN: Series(_steps(), 50 + rng.normal(0, 3, N)),
        K.ZERO_VARIANCE_GROUPS: Series(_steps(), np.clip(0.3 + rng.normal(0, 0.05, N), 0, 1)),
    }
    verdict = judge_run(series)
    assert verdict.detections == ()
    assert not verdict.collapsed and verdict.collapse_step is None


def _planted(level: float, after: float, at: int, seed: int = 0, amp: float = 0.02) -> np.ndarray:
    v = _noisy(level, amp * level, seed)
    v[at:] = _noisy(after, amp * after, seed + 1)[at:]
    return v


@pytest.mark.parametrize(
    ("fn", "values", "at"),
    [
        (D.detect_entropy_collapse, _planted(1.0, 0.02, 33), 33),
        (D.detect_entropy_explosion, _planted(1.0, 5.0, 47), 47),
        (D.detect_length_collapse, _planted(60.0, 5.0, 21), 21),
        (D.detect_length_explosion, _planted(60.0, 400.0, 58), 58),
        (D.detect_kl_blowup, _planted(0.01, 3.0, 25), 25),
        (D.detect_zero_variance, _planted(0.2, 0.97, 64), 64),
    ],
)
def test_level_detectors_find_planted_step(fn, values: np.ndarray, at: int) -> None:
    hit = fn(_steps(), values, TH)
    assert hit is not None
    assert abs(hit.step - at) <= TH.persist


def test_kl_relative_blowup_needs_the_floor() -> None:
    tiny = _planted(1e-4, 5e-3, 30)  # 50x, but far below kl_min: a tiny KL, not a blow-up
    assert D.detect_kl_blowup(_steps(), tiny, TH) is None
    rel = _planted(0.01, 0.5, 30)  # 50x and above kl_min, below kl_max
    hit = D.detect_kl_blowup(_steps(), rel, TH)
    assert hit is not None and hit.step == 30


def test_grad_spikes_are_counted_warnings() -> None:
    values = _noisy(1.0, 0.1, 3)
    values[[20, 55]] = [40.0, 25.0]
    hit = D.detect_grad_spikes(_steps(), values, TH)
    assert hit is not None and hit.step == 20 and hit.severity == WARNING
    assert hit.detail.startswith("2 spike")


def test_grad_spike_on_flat_series() -> None:
    values = np.ones(N)
    values[40] = 10.0
    hit = D.detect_grad_spikes(_steps(), values, TH)
    assert hit is not None and hit.step == 40


def test_grad_spikes_ignore_steps_without_an_update() -> None:
    """A collapsed run: 30 ordinary steps, then 50 with no reward spread, hence no gradient (norm 0).

    With the zeros in, the median is 0 and all 30 real steps would be spikes; without them nothing spikes.
    """
    values = np.concatenate([_noisy(0.4, 0.1, 4, 30), np.zeros(N - 30)])
    assert D.detect_grad_spikes(_steps(), values, TH) is None
    values[10] = 8.0  # a real spike among the real steps is still found
    hit = D.detect_grad_spikes(_steps(), values, TH)
    assert hit is not None and hit.step == 10 and hit.detail.startswith("1 spike")


def test_entropy_collapse_at_the_very_end_needs_two_points() -> None:
    v = np.full(N, 1.0)
    v[-1] = 0.01
    assert D.detect_entropy_collapse(_steps(), v, TH) is None
    v[-2] = 0.01
    hit = D.detect_entropy_collapse(_steps(), v, TH)
    assert hit is not None and hit.step == N - 2


def test_nonfinite_severity_depends_on_count() -> None:
    v = np.ones(N)
    v[10] = np.nan
    one = D.detect_nonfinite({K.PG_LOSS: Series(_steps(), v)}, TH)
    assert one is not None and one.step == 10 and one.severity == WARNING
    v[[11, 12]] = np.inf
    many = D.detect_nonfinite({K.PG_LOSS: Series(_steps(), v)}, TH)
    assert many is not None and many.severity == COLLAPSE


def test_judge_run_first_collapse_step_and_warning_only_runs() -> None:
    reward = _planted(0.7, 0.05, 50, amp=0.02)
    entropy = _planted(1.0, 0.01, 42)
    grad = _noisy(1.0, 0.1, 4)
    grad[10] = 50.0
    verdict = judge_run({
        K.REWARD_MEAN: Series(_steps(), reward),
        K.ENTROPY: Series(_steps(), entropy),
        K.GRAD_NORM: Series(_steps(), grad),
    })
    names = [d.name for d in verdict.detections]
    assert names == ["grad_norm_spike", "entropy_collapse", "reward_collapse"]
    assert verdict.collapsed and verdict.collapse_step == 42

    warn_only = judge_run({K.GRAD_NORM: Series(_steps(), grad)})
    assert not warn_only.collapsed and warn_only.collapse_step is None and len(warn_only.detections) == 1


def test_success_falls_back_to_validation_rows() -> None:
    steps = np.arange(0, 100, 5)
    val = np.where(steps >= 60, 0.0, 0.6)
    verdict = judge_run({K.val(K.SUCCESS_RATE): Series(steps, val)})
    assert verdict.collapse_step == 60


def test_rolling_median_and_noise_helpers() -> None:
    np.testing.assert_allclose(D.rolling_median(np.array([1.0, 9.0, 1.0, 1.0]), 3), [5.0, 1.0, 1.0, 1.0])
    assert D.robust_noise(np.ones(10)) == 0.0
    assert D.first_persistent(np.array([0, 1, 1, 0, 1, 1, 1], bool), 3) == 4
    assert D.first_persistent(np.array([0, 0, 0, 1, 1], bool), 3) == 3
    assert D.first_persistent(np.array([0, 0, 0, 0, 1], bool), 3) is None
