"""Self-calibrating thresholds (issue #17 item 4): running quantile, auto-η, auto-τ, their state and config."""

from __future__ import annotations

import math

import pytest
import torch

from t2po_cli.errors import ConfigError
from t2po_cli.hooks.calibration import RunningWindow, TauCalibrator, eta_for_rate, quantile
from t2po_cli.hooks.factory import TAU_WARMUP, build_hooks
from t2po_cli.hooks.settings import T2POConfig, TDSConfig, TTIConfig
from t2po_cli.hooks.tds import DynamicalSampler
from t2po_cli.hooks.tti import ThinkHookFactory, TTIParams
from t2po_cli.tracking import keys


# ---------------------------------------------------------------- pure functions, hand-computed
def test_quantile_linear_interpolation() -> None:
    # sorted 1,2,3,4: h = 3q; q=0.5 -> h=1.5 -> 2 + 0.5*(3-2); q=0.25 -> h=0.75 -> 1 + 0.75*(2-1)
    assert quantile([3.0, 1.0, 4.0, 2.0], 0.5) == 2.5
    assert quantile([3.0, 1.0, 4.0, 2.0], 0.25) == 1.75
    assert quantile([3.0, 1.0, 4.0, 2.0], 0.0) == 1.0
    assert quantile([3.0, 1.0, 4.0, 2.0], 1.0) == 4.0
    assert quantile([5.0], 0.3) == 5.0
    assert quantile([0.0, 10.0], 0.05) == 0.5
    with pytest.raises(ValueError):
        quantile([], 0.5)


def test_eta_for_rate_puts_k_smallest_positive_in_band() -> None:
    deltas = [0.0, 0.1, 0.2, 0.4, 0.8]
    # n=5, rate 0.4 -> k=2: midpoint of the 2nd and 3rd positive deltas = (0.2+0.4)/2
    eta = eta_for_rate(deltas, 0.4)
    assert eta == pytest.approx(0.3)
    assert sum(1 for d in deltas if 0 < d < eta) == 2
    # k = round(0.05*5) = 0: the smallest positive delta, nothing strictly below it
    assert eta_for_rate(deltas, 0.05) == 0.1
    # k = 3 > 2 positive deltas: just above the largest, every positive delta is in the band (zeros never)
    eta = eta_for_rate([0.0, 0.0, 0.1, 0.2], 0.75)
    assert eta == math.nextafter(0.2, math.inf)
    assert eta_for_rate([0.0, 0.0], 0.5) == 0.0


def test_running_window_keeps_the_most_recent_and_round_trips() -> None:
    w = RunningWindow(3)
    w.extend([1.0, 2.0])
    w.extend([3.0, 4.0])
    assert w.values() == [2.0, 3.0, 4.0]
    other = RunningWindow(3)
    other.load_state_dict(w.state_dict())
    assert other.values() == w.values()


def test_ranks_merge_their_new_values_in_rank_order() -> None:
    """Two ranks start a step with the same window, each adds its own episodes' values; after the merge both
    hold the start plus rank 0's then rank 1's new values (the oldest dropped beyond the bound)."""
    ranks = [RunningWindow(5), RunningWindow(5)]
    for w in ranks:
        w.extend([1.0, 2.0])
    marks = [(w.values(), w.added) for w in ranks]
    ranks[0].extend([10.0, 11.0])
    ranks[1].extend([20.0])
    tails = [w.since(added) for w, (_, added) in zip(ranks, marks, strict=True)]
    assert tails == [[10.0, 11.0], [20.0]]
    for w, (start, _) in zip(ranks, marks, strict=True):
        w.rebuild(start, tails)
    assert ranks[0].values() == ranks[1].values() == [1.0, 2.0, 10.0, 11.0, 20.0]
    # A rank that added more than the bound during the step passes on only what it still holds.
    w = RunningWindow(2)
    mark = w.added
    w.extend([1.0, 2.0, 3.0])
    assert w.since(mark) == [2.0, 3.0] and w.since(w.added) == []
    w.rebuild([7.0], [[8.0], [9.0]])
    assert w.values() == [8.0, 9.0]


def test_tau_calibrator_warmup_then_quantile() -> None:
    cal = TauCalibrator(q=0.5, window=3, warmup_tau=1e-4)
    assert cal.value() == 1e-4
    cal.observe([0.1, 0.2, 0.3, 0.4])  # window keeps 0.2, 0.3, 0.4
    assert cal.value() == pytest.approx(0.3)


# ---------------------------------------------------------------- TDS auto-η
def _never(positions: list[int]) -> list[float | None]:
    raise AssertionError(f"regenerate must not be called (asked for {positions})")


def test_auto_eta_resamples_target_share_and_logs_eta() -> None:
    sampler = DynamicalSampler(None, max_resamples=1, target_rate=0.25, window=64)
    sampler.start_episode_batch(4)
    sampler.refine(0, [0, 1, 2, 3], [0.5, 0.5, 0.5, 0.5], _never)
    calls: list[list[int]] = []

    def regen(positions: list[int]) -> list[float | None]:
        calls.append(list(positions))
        return [0.9 for _ in positions]

    # Δ = 0, 0.1, 0.2, 0.4: n=4, k=1 -> η = (0.1+0.2)/2 = 0.15, only env 1 is in the band
    sampler.refine(1, [0, 1, 2, 3], [0.5, 0.6, 0.7, 0.9], regen)
    assert calls == [[1]]
    m = sampler.metrics()
    assert m[keys.TDS_ETA] == pytest.approx(0.15)
    assert m[keys.TDS_RESAMPLE_RATE] == pytest.approx(0.25)
    # The state round-trips: a restored sampler picks the same η on the same next turn.
    twin = DynamicalSampler(None, max_resamples=1, target_rate=0.25, window=64)
    twin.load_state_dict(sampler.state_dict())
    assert twin.state_dict() == sampler.state_dict() != {}
    for s in (sampler, twin):
        s.start_episode_batch(2)
        s.refine(0, [0, 1], [0.5, 0.5], _never)
        s.refine(1, [0, 1], [0.55, 0.8], lambda p: [0.9 for _ in p])
    assert sampler.metrics()[keys.TDS_ETA] == twin.metrics()[keys.TDS_ETA]


def test_fixed_eta_is_logged_and_has_no_state() -> None:
    sampler = DynamicalSampler(0.3)
    assert sampler.metrics()[keys.TDS_ETA] == 0.3
    assert sampler.state_dict() == {}


# ---------------------------------------------------------------- TTI auto-τ
def test_auto_tau_hook_feeds_calibrator_and_uses_its_value() -> None:
    cal = TauCalibrator(q=0.0, window=100, warmup_tau=1e-4)
    params = TTIParams(think_ids=(1, 2), max_response_tokens=10, tau=1e-4, patience=2)
    factory = ThinkHookFactory(params, calibrator=cal)
    hook = factory()
    assert hook.tau == 1e-4  # warm-up: nothing observed yet
    hook.begin(2, torch.tensor([True, True]))
    for signal, active in (([0.5, 0.5], [True, True]), ([0.52, 0.6], [True, True]), ([0.51, 0.6], [True, False])):
        hook.step(torch.tensor(signal), torch.tensor(active))
        hook.observe(torch.tensor([5, 5]), torch.tensor(active))
    reports = hook.end()
    assert reports[0]["tau"] == 1e-4
    # valid |ΔM|: row 0 steps 2, 3 (0.02, 0.01); row 1 step 2 (0.1); row 1 inactive at step 3
    assert sorted(cal.window.values()) == pytest.approx([0.01, 0.02, 0.1], abs=1e-6)
    assert factory().tau == pytest.approx(0.01, abs=1e-6)  # q = 0: the smallest
    # A validation factory sharing the calibrator reads τ but does not feed it.
    val = ThinkHookFactory(params, calibrator=cal, learn=False)()
    assert val.tau == pytest.approx(0.01, abs=1e-6) and val.calibrator is None


def test_build_hooks_auto_and_fixed() -> None:
    tp = T2POConfig(variant="on", tti=TTIConfig(enabled=True, tau="auto"), tds=TDSConfig(enabled=True, eta="auto"))
    tp.validate()
    factory, sampler = build_hooks(tp, (1, 2), "train", 16)
    assert factory is not None and factory.calibrator is not None and factory.params.tau == TAU_WARMUP
    assert sampler is not None and sampler.auto
    vfactory, vsampler = build_hooks(tp, (1, 2), "val", 16, tau_calibrator=factory.calibrator)
    assert vsampler is None and vfactory is not None and vfactory.calibrator is factory.calibrator
    fixed = T2POConfig(variant="on", tti=TTIConfig(enabled=True), tds=TDSConfig(enabled=True))
    factory, sampler = build_hooks(fixed, (1, 2), "train", 16)
    assert factory is not None and factory.calibrator is None and factory.state_dict() == {}
    assert sampler is not None and not sampler.auto and sampler.eta == 0.3


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        (T2POConfig(compat="released", tds=TDSConfig(eta="auto")), "t2po.tds.eta=auto is not part of the released"),
        (T2POConfig(compat="released", tti=TTIConfig(tau="auto")), "t2po.tti.tau=auto is not part of the released"),
        (T2POConfig(tds=TDSConfig(eta="fast")), "t2po.tds.eta='fast' is neither a number nor 'auto'"),
        (T2POConfig(tds=TDSConfig(eta="auto", target_rate=1.0)), "t2po.tds.target_rate=1.0 is out of range"),
        (T2POConfig(tti=TTIConfig(tau="auto", tau_quantile=1.5)), "t2po.tti.tau_quantile=1.5 is out of range"),
        (T2POConfig(tds=TDSConfig(window=0)), "t2po.tds.window=0 must be > 0"),
    ],
)
def test_config_errors_name_key_and_fix(cfg: T2POConfig, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        cfg.validate()
    assert needle in str(err.value)


def test_released_with_numbers_still_validates() -> None:
    T2POConfig(compat="released", tti=TTIConfig(tau=1e-4), tds=TDSConfig(eta=0.3)).validate()
