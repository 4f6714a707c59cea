"""TDS predicate, procedure, missing scores and metrics (t2po.md §5, §9, §11 item 6)."""

from __future__ import annotations

import pytest
import torch

from t2po_cli.envs.base import Projection, Task
from t2po_cli.hooks.tds import DynamicalSampler, delta_stats
from t2po_cli.rollout.collector import collect
from t2po_cli.rollout.streams import seeded_streams
from t2po_cli.rollout.types import Generation, SamplingParams
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
    """Through the real collector: TDS regenerations reuse the turn's observation and happen before any env
    of that turn is stepped; each env is then stepped once per turn with the accepted (last) sample."""
    events: list[tuple] = []
    messages: list[str] = []

    class Family:
        def build_prompt(self, task: Task, history, obs: str, info, *, turn: int, history_length: int) -> str:
            return f"env {task.index} turn {turn} obs {obs}"

        def project(self, text: str, admissible) -> Projection:
            return Projection(action=text, valid=True, format_valid=True)

    class Env:
        def reset(self, task: Task) -> tuple[str, dict]:
            self.index, self.steps = task.index, 0
            return "o0", {}

        def step(self, action: str) -> tuple[str, float, bool, dict]:
            self.steps += 1
            events.append(("step", self.index, action))
            return f"o{self.steps}", 0.0, False, {}

        def close(self) -> None:
            pass

    def encode(message: str) -> list[int]:
        messages.append(message)
        return [len(messages) - 1]

    def generate(prompts: list[list[int]], params, hook_factory, admissible, streams) -> Generation:
        call = sum(e[0] == "gen" for e in events)
        texts = [f"call{call}-{messages[p[0]].split()[1]}" for p in prompts]
        events.append(("gen", [messages[p[0]] for p in prompts], texts))
        n = len(prompts)
        # Scores move by 0.01 per call: always inside (0, η), so TDS spends its whole budget from turn 1 on.
        return Generation(
            prompt_ids=[list(p) for p in prompts], response_ids=[torch.tensor([7, 8]) for _ in range(n)],
            logps=[torch.zeros(2) for _ in range(n)], entropies=[torch.zeros(2) for _ in range(n)],
            signals=[torch.zeros(2) for _ in range(n)], forced_mask=[torch.zeros(2, dtype=torch.bool)] * n,
            texts=texts, finish_reasons=["eos"] * n, hook_reports=[{"turn_score": 0.2 + 0.01 * call}] * n)

    tasks = [Task(env="fake", split="train", index=i, seed=i, instruction="x") for i in range(2)]
    ro = collect(family=Family(), make_env=Env, tasks=tasks, group_size=1, encode_prompt=encode,
                 generate=generate, params=SamplingParams(max_new_tokens=2), max_turns=3, history_length=0,
                 turn_hook=DynamicalSampler(eta=0.3, max_resamples=2), streams=seeded_streams(0, 2))

    steps = [e for e in events if e[0] == "step"]
    assert [e[1] for e in steps] == [0, 1] * 3  # each env once per turn, in env order
    # Per turn: the base generation, then (turns 1, 2) two regenerations of the same prompts, then the steps.
    per_turn = [events[0:3], events[3:8], events[8:13]]
    assert [[e[0] for e in chunk] for chunk in per_turn] == [
        ["gen", "step", "step"], ["gen", "gen", "gen", "step", "step"], ["gen", "gen", "gen", "step", "step"]]
    for turn, chunk in enumerate(per_turn):
        gens = [e for e in chunk if e[0] == "gen"]
        assert all(g[1] == gens[0][1] for g in gens)  # a resample reuses the observation (same prompt)
        assert all(f"turn {turn} obs o{turn}" in m for m in gens[0][1])
        assert [e[2] for e in chunk if e[0] == "step"] == gens[-1][2]  # the accepted sample is the last
    assert [(r.traj_id, r.turn) for r in ro.rows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert ro.extra_gen_tokens == 2 * 2 * 2 * 2  # turns 1-2 × 2 discarded samples × 2 envs × 2 tokens


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
