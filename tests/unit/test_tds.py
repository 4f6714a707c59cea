"""TDS predicate, procedure, missing scores and metrics (t2po.md §5, §9, §11 item 6)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from t2po_cli.hooks.tds import DynamicalSampler, delta_stats
from t2po_cli.tracking import keys


class Regen:
    """A scripted ``Regenerate``: each call pops the next score for every requested row."""

    def __init__(self, scripts: dict[int, list[float | None]]) -> None:
        self.scripts = {pos: iter(s) for pos, s in scripts.items()}
        self.calls: list[list[int]] = []

    def __call__(self, positions: list[int]) -> list[float | None]:
        self.calls.append(list(positions))
        return [next(self.scripts[p]) for p in positions]


def never(positions: list[int]) -> list[float | None]:
    raise AssertionError(f"regenerate must not be called (asked for {positions})")


def primed(prev: list[float | None], eta: float = 0.3, max_resamples: int = 2, compat: str = "intended"):
    """A sampler whose turn-0 accepted scores are ``prev`` for envs 0..n-1."""
    sampler = DynamicalSampler(eta, max_resamples, compat)
    sampler.start_episode_batch(len(prev))
    sampler.refine(0, list(range(len(prev))), prev, never)
    return sampler


# ---------------------------------------------------------------- predicate edges
def test_band_edges() -> None:
    eta = 0.25  # exact in binary so Δ = η is exact
    sampler = primed([0.5, 0.5, 0.5, 0.5], eta=eta)
    regen = Regen({2: [0.5]})
    # Δ = 0, Δ = η, Δ just below η, Δ above η
    out = sampler.refine(1, [0, 1, 2, 3], [0.5, 0.75, 0.75 - 2**-20, 0.9], regen)
    assert regen.calls == [[2]]
    assert out == [0.5, 0.75, 0.5, 0.9]


def test_default_eta_boundary() -> None:
    sampler = primed([0.0, 0.0])
    regen = Regen({1: [0.0]})
    sampler.refine(1, [0, 1], [0.3, 0.29999], regen)  # Δ = 0.3 = η exactly is outside the band
    assert regen.calls == [[1]]


def test_turn_zero_is_never_resampled() -> None:
    sampler = DynamicalSampler()
    sampler.start_episode_batch(2)
    assert sampler.refine(0, [0, 1], [0.1, 0.2], never) == [0.1, 0.2]
    assert sampler.metrics()[keys.TDS_ELIGIBLE] == 0.0


# ---------------------------------------------------------------- procedure
def test_accept_last_sample_after_max_resamples() -> None:
    sampler = primed([0.2], max_resamples=2)
    regen = Regen({0: [0.21, 0.22, 0.9]})  # stays in the band; the third value must never be drawn
    assert sampler.refine(1, [0], [0.25], regen) == [0.22]
    assert regen.calls == [[0], [0]]
    m = sampler.metrics()
    assert m[keys.TDS_EXHAUSTED_RATE] == 1.0
    assert m[f"{keys.TDS_ACCEPT_ATTEMPT_HIST}/2"] == 1.0


def test_only_in_band_rows_are_regenerated_and_delta_uses_the_same_previous() -> None:
    # prev: 0.2 for every env. Base Δ: env0 0.1 (band), env1 0.5 (out), env2 0.05 (band), env3 0 (out).
    sampler = primed([0.2, 0.2, 0.2, 0.2])
    # Attempt 1: env0 -> 0.6 (Δ 0.4 leaves), env2 -> 0.3 (Δ 0.1 stays). Attempt 2: env2 -> 0.2 (Δ 0 leaves).
    regen = Regen({0: [0.6], 2: [0.3, 0.2]})
    out = sampler.refine(1, [10, 11, 12, 13], [0.3, 0.7, 0.25, 0.2], regen)
    # rows are env ids 10..13, unknown to the primed sampler -> all ineligible (missing previous)
    assert regen.calls == [] and out == [0.3, 0.7, 0.25, 0.2]
    out = sampler.refine(1, [0, 1, 2, 3], [0.3, 0.7, 0.25, 0.2], regen)
    assert regen.calls == [[0, 2], [2]]
    assert out == [0.6, 0.7, 0.2, 0.2]


def test_accepted_scores_become_the_next_previous() -> None:
    sampler = primed([0.2])
    sampler.refine(1, [0], [0.25], Regen({0: [0.9]}))  # accepted 0.9, not the base 0.25
    regen = Regen({0: [0.0]})
    sampler.refine(2, [0], [0.95], regen)  # Δ against 0.9 = 0.05 -> band
    assert regen.calls == [[0]]
    sampler.start_episode_batch(1)
    sampler.refine(1, [0], [0.95], never)  # forgotten: no previous, ineligible


def test_env_is_stepped_exactly_once_per_turn() -> None:
    """A minimal collector: generate, refine (regenerations reuse the observation), then step each env once."""
    steps = {0: 0, 1: 0}
    sampler = DynamicalSampler(max_resamples=2)
    sampler.start_episode_batch(2)
    base: Iterator[float] = iter([0.1, 0.1, 0.15, 0.12, 0.13, 0.14])
    total_regens = 0
    for turn in range(3):
        scores = [next(base), next(base)]

        def regenerate(pos: list[int], turn=turn) -> list[float | None]:
            nonlocal total_regens
            total_regens += 1
            # Every regeneration happens before any env of this turn is stepped.
            assert all(steps[e] == turn for e in steps)
            return [0.1 + 0.01 * total_regens] * len(pos)

        accepted = sampler.refine(turn, [0, 1], scores, regenerate)
        assert len(accepted) == 2
        for env in (0, 1):
            steps[env] += 1
    assert steps == {0: 3, 1: 3}
    assert total_regens == 4  # turns 1 and 2 each spend the full budget of 2 (scores stay in the band)


def test_regenerate_must_return_one_score_per_row() -> None:
    sampler = primed([0.2])
    with pytest.raises(ValueError, match="1 rows"):
        sampler.refine(1, [0], [0.25], lambda pos: [])


# ---------------------------------------------------------------- missing scores (§5.2)
def test_intended_missing_scores_are_ineligible() -> None:
    sampler = primed([None, 0.2, 0.2])
    regen = Regen({2: [None]})
    out = sampler.refine(1, [0, 1, 2], [0.25, None, 0.25], regen)
    assert regen.calls == [[2]]  # env0: previous missing; env1: current missing; env2: in band
    assert out == [0.25, None, None]  # env2's new score is missing: it leaves the band
    m = sampler.metrics()
    assert m[keys.TDS_ELIGIBLE] == 1.0
    assert m[f"{keys.TDS_ACCEPT_ATTEMPT_HIST}/1"] == 1.0
    # A missing accepted score leaves the next turn ineligible.
    sampler.refine(2, [2], [0.3], never)


def test_released_missing_scores_are_zero() -> None:
    sampler = primed([None, 0.0], compat="released")
    regen = Regen({0: [0.1, 0.05]})
    out = sampler.refine(1, [0, 1], [0.2, None], regen)  # Δ = |0.2 − 0| in band; |0 − 0| = 0 is not
    assert regen.calls == [[0], [0]]  # 0.1 vs a missing (0) previous stays in the band
    assert out == [0.05, None]
    assert sampler.metrics()[keys.TDS_ELIGIBLE] == 2.0


def test_finished_envs() -> None:
    # Intended: a finished env is skipped. Released: regenerated too, but not counted in the metrics.
    for compat, calls, eligible in (("intended", [[1]], 1.0), ("released", [[0, 1]], 1.0)):
        sampler = primed([0.2, 0.2], max_resamples=1, compat=compat)
        regen = Regen({0: [0.9], 1: [0.9]})
        sampler.refine(1, [0, 1], [0.25, 0.25], regen, finished=[True, False])
        assert regen.calls == calls
        m = sampler.metrics()
        assert m[keys.TDS_ELIGIBLE] == eligible
        assert m[keys.TDS_RESAMPLES_PER_TURN] == 1.0


# ---------------------------------------------------------------- metrics (§9)
def test_metrics_hand_computed() -> None:
    sampler = primed([0.5, 0.5, 0.5, 0.5, 0.5], eta=0.25, max_resamples=2)
    # Base Δ: 0 (zero), 0.125 (band), 0.0625 (band), 0.25 (above, = η), 0.375 (above).
    # env1: 1st resample Δ 0.5 -> leaves at attempt 1. env2: stays in band twice -> exhausted (attempt 2).
    regen = Regen({1: [1.0], 2: [0.625, 0.5625]})
    lengths = {1: 10, 2: 7}
    seen = []

    def discarded(pos: list[int]) -> int:
        seen.append(list(pos))
        return sum(lengths[p] for p in pos)

    sampler.refine(1, list(range(5)), [0.5, 0.625, 0.5625, 0.75, 0.875], regen, discarded_tokens=discarded)
    assert seen == [[1, 2], [2]]
    m = sampler.metrics()
    assert m[keys.TDS_ELIGIBLE] == 5.0
    assert m[keys.TDS_RESAMPLE_RATE] == pytest.approx(2 / 5)
    assert m[keys.TDS_RESAMPLES_PER_TURN] == pytest.approx(3 / 5)
    assert m[keys.TDS_EXHAUSTED_RATE] == pytest.approx(1 / 5)
    hist = [m[f"{keys.TDS_ACCEPT_ATTEMPT_HIST}/{k}"] for k in range(3)]
    assert hist == pytest.approx([3 / 5, 1 / 5, 1 / 5])
    assert m[keys.TDS_EXTRA_GEN_TOKENS] == 10 + 7 + 7
    assert m[keys.TDS_DELTA_MEAN] == pytest.approx((0 + 0.125 + 0.0625 + 0.25 + 0.375) / 5)
    # sorted Δ: 0, 0.0625, 0.125, 0.25, 0.375; linear quantiles at 0.4, 2, 3.6 (0-based ranks)
    assert m[keys.TDS_DELTA_P10] == pytest.approx(0.025)
    assert m[keys.TDS_DELTA_P50] == pytest.approx(0.125)
    assert m[keys.TDS_DELTA_P90] == pytest.approx(0.325)
    assert m[keys.TDS_DELTA_ZERO_RATE] == pytest.approx(1 / 5)
    assert m[keys.TDS_DELTA_IN_BAND_RATE] == pytest.approx(2 / 5)
    assert m[keys.TDS_DELTA_ABOVE_ETA_RATE] == pytest.approx(2 / 5)
    assert keys.TDS_TIME not in m  # one writer: the collector times the whole turn hook
    # metrics() resets.
    again = sampler.metrics()
    assert again[keys.TDS_ELIGIBLE] == 0.0 and keys.TDS_RESAMPLE_RATE not in again


def test_extra_tokens_unknown_without_callback() -> None:
    sampler = primed([0.2])
    sampler.refine(1, [0], [0.25], Regen({0: [0.9]}))
    assert keys.TDS_EXTRA_GEN_TOKENS not in sampler.metrics()
    sampler.refine(1, [0], [0.9], never)  # no resample: 0 is exact
    assert sampler.metrics()[keys.TDS_EXTRA_GEN_TOKENS] == 0.0


def test_delta_stats_single_value() -> None:
    stats = delta_stats([0.1], eta=0.3)
    assert stats[keys.TDS_DELTA_P10] == stats[keys.TDS_DELTA_P90] == pytest.approx(0.1)
    assert stats[keys.TDS_DELTA_IN_BAND_RATE] == 1.0
