"""TTI step rule, turn score and released emulation, driven through begin/step/observe/end (t2po.md §3, §4)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
import torch

from t2po_cli.errors import ConfigError
from t2po_cli.hooks.factory import build_hooks
from t2po_cli.hooks.settings import T2POConfig
from t2po_cli.hooks.signal import token_signal
from t2po_cli.hooks.tti import (
    BUDGET,
    STAGNATION,
    ThinkHookFactory,
    ThinkingIntervention,
    TTIParams,
    resolve_think_ids,
)

OPEN, CLOSE, WORD = 5, 6, 9  # <think>, </think>, any other token


def params(**kw) -> TTIParams:
    base = {"think_ids": (OPEN, CLOSE), "max_response_tokens": 500, "patience": 20, "max_think_tokens": None}
    base.update(kw)
    return TTIParams(**base)


def drive(
    hook: ThinkingIntervention,
    signals: Sequence[Sequence[float]],
    tokens: Sequence[Sequence[int]] | None = None,
    *,
    start_in_think: Sequence[bool] | None = None,
    active: Sequence[Sequence[bool]] | None = None,
) -> tuple[list[list[int]], list[dict]]:
    """Run one generate call. ``signals[t][b]`` is M_t of row b; ``tokens[t][b]`` the token it would sample.

    Returns the emitted tokens per step (forced ones replace the sampled ones) and the reports.
    """
    batch = len(signals[0])
    hook.begin(batch, torch.tensor(start_in_think or [False] * batch))
    emitted = []
    for t, row_signals in enumerate(signals):
        mask = torch.tensor(active[t] if active else [True] * batch)
        force = hook.step(torch.tensor(row_signals, dtype=torch.float32), mask)
        assert force.dtype == torch.long and force.shape == (batch,)
        sampled = torch.tensor(tokens[t] if tokens else [WORD] * batch)
        chosen = torch.where(force >= 0, force, sampled)
        hook.observe(chosen, mask)
        emitted.append(chosen.tolist())
    return emitted, hook.end()


def column(rows: list[list[int]], b: int = 0) -> list[int]:
    return [r[b] for r in rows]


# ---------------------------------------------------------------- stagnation counter (§11 item 2)
def test_stagnation_fires_on_the_21st_equal_score_and_resets() -> None:
    hook = ThinkingIntervention(params())
    emitted, reports = drive(hook, [[0.3]] * 21, start_in_think=[True])
    assert column(emitted)[:20] == [WORD] * 20
    assert column(emitted)[20] == CLOSE
    assert reports[0]["interventions"] == [(20, STAGNATION, 20)]
    assert reports[0]["forced"] == {BUDGET: 0, STAGNATION: 1}
    assert hook._count.tolist() == [0]


def test_twenty_scores_do_not_fire() -> None:
    _, reports = drive(ThinkingIntervention(params()), [[0.3]] * 20, start_in_think=[True])
    assert reports[0]["interventions"] == []


def test_a_change_of_exactly_tau_is_no_change() -> None:
    eps = 2.0**-14  # exact in float32, so the difference is exactly ε
    seq = [[0.25 + (t % 2) * eps] for t in range(21)]
    emitted, _ = drive(ThinkingIntervention(params(tau=eps)), seq, start_in_think=[True])
    assert column(emitted)[20] == CLOSE
    # Just above ε resets the counter at every step: never fires.
    seq = [[0.25 + (t % 2) * 2 * eps] for t in range(40)]
    emitted, _ = drive(ThinkingIntervention(params(tau=eps)), seq, start_in_think=[True])
    assert CLOSE not in column(emitted)


def test_default_tau_boundary_in_float32() -> None:
    seq = [[(t % 2) * 1e-4] for t in range(21)]  # |Δ| = float32(1e-4) = ε in the signal's dtype
    emitted, _ = drive(ThinkingIntervention(params()), seq, start_in_think=[True])
    assert column(emitted)[20] == CLOSE


def test_a_single_jump_restarts_the_run() -> None:
    seq = [[0.3]] * 10 + [[0.5]] + [[0.5]] * 20
    emitted, reports = drive(ThinkingIntervention(params()), seq, start_in_think=[True])
    assert reports[0]["interventions"] == [(30, STAGNATION, 30)]
    assert column(emitted).index(CLOSE) == 30


# ---------------------------------------------------------------- budget (§11 item 3)
def test_budget_forces_think_position_n_and_keeps_the_counter() -> None:
    n = 5
    # Step 0 samples <think>; think positions 0..4 follow; the token at think position 5 must be </think>.
    # Distinct signals for steps 0-2, then constant: count is 3 (= patience) exactly at the budget step.
    signals = [[0.0], [0.1], [0.2]] + [[0.3]] * 6
    tokens = [[OPEN]] + [[WORD]] * 8
    hook = ThinkingIntervention(params(max_think_tokens=n, patience=3))
    hook.begin(1, torch.tensor([False]))
    emitted = []
    for t in range(7):
        force = hook.step(torch.tensor(signals[t]), torch.tensor([True]))
        tok = force if force[0] >= 0 else torch.tensor(tokens[t])
        hook.observe(tok, torch.tensor([True]))
        emitted.append(int(tok[0]))
        if t == 6:  # the budget step: forced, and count was not reset (skips step 4)
            assert hook._count.tolist() == [3]
    assert emitted == [OPEN] + [WORD] * n + [CLOSE]
    # One more constant step outside <think>: count 4 >= 3 resets without forcing.
    force = hook.step(torch.tensor([0.3]), torch.tensor([True]))
    assert force.tolist() == [-1] and hook._count.tolist() == [0]
    hook.observe(torch.tensor([WORD]), torch.tensor([True]))
    report = hook.end()[0]
    assert report["interventions"] == [(6, BUDGET, n)]
    assert report["think_tokens"] == n and not report["unclosed_think"]
    assert report["tokens_saved_upper"] == 0  # budget events do not count (§9: stagnation only)


def test_budget_zero_and_prefilled_think() -> None:
    emitted, reports = drive(ThinkingIntervention(params(max_think_tokens=0)), [[0.1], [0.2]], start_in_think=[True])
    assert column(emitted) == [CLOSE, WORD]
    assert reports[0]["interventions"] == [(0, BUDGET, 0)]


def test_budget_counts_from_the_last_open_tag() -> None:
    tokens = [[OPEN], [WORD], [WORD], [OPEN], [WORD], [WORD], [WORD], [WORD]]
    sig = [[0.1 * t] for t in range(8)]
    emitted, reports = drive(ThinkingIntervention(params(max_think_tokens=3)), sig, tokens)
    assert column(emitted) == [OPEN, WORD, WORD, OPEN, WORD, WORD, WORD, CLOSE]
    assert reports[0]["interventions"] == [(7, BUDGET, 3)]


# ---------------------------------------------------------------- outside <think> (§11 item 4)
def test_outside_think_stagnation_forces_nothing_and_resets() -> None:
    hook = ThinkingIntervention(params())
    emitted, reports = drive(hook, [[0.3]] * 21)
    assert CLOSE not in column(emitted)
    assert reports[0]["interventions"] == []
    assert hook._count.tolist() == [0]  # reset at step 20 (count 20 >= P)
    hook2 = ThinkingIntervention(params())
    drive(hook2, [[0.3]] * 25)
    assert hook2._count.tolist() == [4]  # reset at 20, then 21..24


def test_after_close_tag_no_more_forcing() -> None:
    tokens = [[OPEN]] + [[WORD]] * 3 + [[CLOSE]] + [[WORD]] * 40
    emitted, reports = drive(ThinkingIntervention(params()), [[0.3]] * 45, tokens)
    assert column(emitted).count(CLOSE) == 1
    assert reports[0]["think_tokens"] == 3 and not reports[0]["unclosed_think"]


def test_disabled_triggers() -> None:
    hook = ThinkingIntervention(params(patience=None, max_think_tokens=None))
    emitted, reports = drive(hook, [[0.3]] * 60, start_in_think=[True])
    assert CLOSE not in column(emitted)
    assert reports[0]["unclosed_think"] and reports[0]["think_tokens"] == 60


def test_score_only_mode_never_forces() -> None:
    hook = ThinkingIntervention(params(tti_enabled=False, max_think_tokens=2))
    emitted, reports = drive(hook, [[0.3]] * 40, start_in_think=[True])
    assert CLOSE not in column(emitted)
    assert reports[0]["turn_score"] == pytest.approx(0.3)
    assert reports[0]["interventions"] == []
    # TDS alone needs no think ids.
    ThinkingIntervention(params(tti_enabled=False, think_ids=None))
    with pytest.raises(ConfigError):
        params(think_ids=None)


# ---------------------------------------------------------------- batch semantics (intended)
def test_rows_are_independent_and_inactive_rows_are_frozen() -> None:
    # Row 0 constant (fires at 20); row 1 alternating by 0.1 (never); row 2 constant but inactive
    # on steps 5-9, so its run only reaches 20 equal differences at step 25.
    signals = [[0.3, 0.1 * (t % 2), 0.2] for t in range(26)]
    active = [[True, True, not 5 <= t <= 9] for t in range(26)]
    hook = ThinkingIntervention(params())
    _emitted, reports = drive(hook, signals, start_in_think=[True, True, True], active=active)
    assert [e[0] for e in reports[0]["interventions"]] == [20]
    assert reports[1]["interventions"] == []
    # Row 2 generated on 21 of its steps by step 25: its position then is 20.
    assert reports[2]["interventions"] == [(20, STAGNATION, 20)]
    assert [r["generated_len"] for r in reports] == [26, 26, 21]


# ---------------------------------------------------------------- turn score (§11 item 5)
@pytest.mark.parametrize("length", [0, 1, 33])
def test_turn_score_missing_up_to_k_tokens(length: int) -> None:
    hook = ThinkingIntervention(params(tti_enabled=False))
    if length == 0:
        hook.begin(1, torch.tensor([False]))
        assert hook.end()[0]["turn_score"] is None
        return
    _, reports = drive(hook, [[0.2]] * length)
    assert reports[0]["turn_score"] is None


def test_turn_score_ignores_the_first_k_positions() -> None:
    # Positions 0..32 carry an outlier; 33..36 carry 0.1, 0.2, 0.3, 0.4 (forced and post-</think> steps count).
    signals = [[100.0]] * 33 + [[0.1], [0.2], [0.3], [0.4]]
    _, reports = drive(ThinkingIntervention(params()), signals)
    assert reports[0]["turn_score"] == pytest.approx(0.25, abs=1e-7)
    _, reports = drive(ThinkingIntervention(params()), signals[:34])
    assert reports[0]["turn_score"] == pytest.approx(0.1, abs=1e-7)
    _, reports = drive(ThinkingIntervention(params(skip_tokens=0)), [[0.1], [0.3]])
    assert reports[0]["turn_score"] == pytest.approx(0.2, abs=1e-7)


def test_report_fields_and_tokens_saved_upper() -> None:
    # <think> at 0, stagnation fires at step 21 (scores 1..21 equal) with think_len 20:
    # saved = min(max_think 100 − 20, max_response 30 − 21) = 9.
    hook = ThinkingIntervention(params(max_think_tokens=100, max_response_tokens=30))
    tokens = [[OPEN]] + [[WORD]] * 24
    signals = [[0.0]] + [[0.3]] * 24
    emitted, reports = drive(hook, signals, tokens)
    r = reports[0]
    assert column(emitted)[21] == CLOSE
    assert r["interventions"] == [(21, STAGNATION, 20)]
    assert r["tokens_saved_upper"] == 9
    assert r["think_tokens"] == 20 and r["has_think"] and not r["unclosed_think"]
    assert r["generated_len"] == 25


# ---------------------------------------------------------------- released mode (§3.7, §4.2)
def released_factory(**kw) -> ThinkHookFactory:
    return ThinkHookFactory(params(compat="released", **kw))


def test_released_slot_is_shared_across_rows() -> None:
    # Two rows with identical constant scores: the slot counts 2 per step (count = 2s + row), so row 0
    # fires at step 10 and row 1 never does before the window ends; per-row state would fire both at 20.
    factory = released_factory()
    _emitted, reports = drive(factory(), [[0.3, 0.3]] * 12, start_in_think=[True, True])
    assert [e[0] for e in reports[0]["interventions"]] == [10]
    assert reports[1]["interventions"] == []
    # Different constant scores per row: consecutive slot updates always differ, never fires.
    _, reports = drive(released_factory()(), [[0.1, 0.3]] * 40, start_in_think=[True, True])
    assert reports[0]["interventions"] == reports[1]["interventions"] == []
    _, reports = drive(ThinkingIntervention(params()), [[0.1, 0.3]] * 21, start_in_think=[True, True])
    assert [len(r["interventions"]) for r in reports] == [1, 1]


def test_released_slot_is_carried_across_calls() -> None:
    factory = released_factory()
    drive(factory(), [[0.2]] * 15)  # leaves count = 14 (outside think, no reset below P)
    assert factory.released_state.count == 14
    _emitted, reports = drive(factory(), [[0.2]] * 8, start_in_think=[True])
    assert reports[0]["interventions"] == [(5, STAGNATION, 5)]  # 14 + 6 = 20 at step 5
    # Intended: a fresh hook per call.
    intended = ThinkHookFactory(params())
    drive(intended(), [[0.2]] * 15)
    _, reports = drive(intended(), [[0.2]] * 8, start_in_think=[True])
    assert reports[0]["interventions"] == []


def test_released_budget_skips_the_slot_reset() -> None:
    factory = released_factory(max_think_tokens=2, patience=2)
    emitted, reports = drive(factory(), [[0.3]] * 3, start_in_think=[True])
    assert column(emitted) == [WORD, WORD, CLOSE]
    assert reports[0]["interventions"] == [(2, BUDGET, 2)]
    assert factory.released_state.count == 2


def test_released_bf16_stagnation_follows_the_release_timing() -> None:
    # Issue #14: `<think>`, then 44 steps of a 64-wide bf16 row, zeros but logits[9] = 7 + 0.005·t, through
    # the real signal and hook (patience 20, ε 1e-4). The release mixes c_t and H_t in double, so its M moves
    # by more than ε whenever the bf16 logit moves and never stalls for 20 steps; a bf16 mix made M flat for
    # 20 steps and forced `</think>` at step 42.
    hook = released_factory(tau=1e-4, patience=20)()
    active = torch.tensor([True])
    hook.begin(1, torch.tensor([False]))

    def row(peak: float) -> torch.Tensor:
        logits = torch.zeros(1, 64, dtype=torch.bfloat16)
        logits[0, 9] = peak
        return logits

    signals = []
    for t in range(-1, 44):  # t = -1 is the step that samples <think>
        m = token_signal(row(7.0 + 0.005 * max(t, 0)), 0.6, released=True).m
        signals.append(m.item())
        force = hook.step(m, active)
        hook.observe(force if t >= 0 and int(force) >= 0 else torch.tensor([OPEN if t < 0 else WORD]), active)
    report = hook.end()[0]
    assert report["interventions"] == []
    assert report["think_tokens"] == 44
    # M moves by more than ε whenever the bf16 logit moves (every 6-7 steps), so no run reaches P = 20.
    steps = [abs(b - a) for a, b in itertools.pairwise(signals[1:])]
    assert min(d for d in steps if d > 0) > 1e-4
    run, longest = 0, 0
    for d in steps:
        run = run + 1 if d <= 1e-4 else 0
        longest = max(longest, run)
    assert longest < 20


def test_vllm_bridge_hands_the_released_hook_unrounded_m() -> None:
    # The vLLM bridge scatters the scheduled rows' M into a [B] tensor for the hook: under released it must
    # keep float64 (a float32 buffer would round the release's double M before the ε test).
    from t2po_cli.rollout.vllm_engine import _CallBridge

    hook = released_factory()()
    hook.begin(3, torch.tensor([True, True, True]))
    seen: list[torch.Tensor] = []
    step = hook.step
    hook.step = lambda signal, active: seen.append(signal) or step(signal, active)  # type: ignore[method-assign]
    bridge = _CallBridge(3, hook, 0.6, released=True)
    bridge.outputs = [[], [], []]
    logits = torch.zeros(2, 64, dtype=torch.bfloat16)
    logits[:, 9] = 7.2
    bridge.step([0, 2], logits)
    assert seen[0].dtype == torch.float64
    assert seen[0][[0, 2]].tolist() == [token_signal(logits[:1], 0.6, released=True).m.item()] * 2
    assert bridge.signals[0] == [pytest.approx(0.3362057, abs=5e-8)]


def tokens_for(prefix_id: int, length: int) -> list[int]:
    return [prefix_id] * 32 + [WORD] * (length - 32)


def run_released_call(factory, rows: list[tuple[int, int, float]]) -> list[dict]:
    """rows: (prefix id, length, constant M after position 32)."""
    length = max(r[1] for r in rows)
    signals = [[(9.0 if t < 33 else m) for _, _, m in rows] for t in range(length)]
    tokens = [[tokens_for(pid, length)[t] for pid, _, _ in rows] for t in range(length)]
    active = [[t < n for _, n, _ in rows] for t in range(length)]
    hook = factory()
    _, reports = drive(hook, signals, tokens, active=active)
    return reports


def test_released_recorder_second_call_scores_zero() -> None:
    factory = released_factory(tti_enabled=False)
    first = run_released_call(factory, [(100, 40, 0.2), (101, 40, 0.3)])
    assert [r["turn_score"] for r in first] == pytest.approx([0.2, 0.3])
    second = run_released_call(factory, [(102, 40, 0.25), (103, 40, 0.35)])
    assert [r["turn_score"] for r in second] == [0.0, 0.0]
    assert list(factory.released_state.recorder) == [(100,) * 32, (101,) * 32, (102,) * 32, (103,) * 32]


def test_released_recorder_prefix_collision_pools_and_short_rows_score_zero() -> None:
    factory = released_factory(tti_enabled=False)
    run_released_call(factory, [(100, 40, 0.2), (101, 40, 0.3)])  # 7 records each (positions 33..39)
    # Row 0 collides with the first call's key 100 (pooled mean over 7 + 3 records); row 1 is 33 tokens.
    second = run_released_call(factory, [(100, 36, 0.4), (104, 33, 0.9)])
    assert second[0]["turn_score"] == pytest.approx((7 * 0.2 + 3 * 0.4) / 10)
    assert second[1]["turn_score"] == 0.0
    # A first call with a 33-token row: no record, no key, score 0 (never None in released mode).
    fresh = released_factory(tti_enabled=False)
    scores = [r["turn_score"] for r in run_released_call(fresh, [(1, 33, 0.5), (2, 34, 0.5)])]
    assert scores == [0.0, pytest.approx(0.5)]


# ---------------------------------------------------------------- think ids and factory
class _Tokenizer:
    def __init__(self, vocab: dict[str, list[int]], wrap: bool = False) -> None:
        self.vocab, self.wrap = vocab, wrap

    def encode(self, text: str, add_special_tokens: bool = True):
        assert add_special_tokens is False
        ids = self.vocab[text]
        return type("Enc", (), {"ids": ids})() if self.wrap else ids


def test_resolve_think_ids() -> None:
    ok = {"<think>": [151667], "</think>": [151668]}
    assert resolve_think_ids(_Tokenizer(ok)) == (151667, 151668)
    assert resolve_think_ids(_Tokenizer(ok, wrap=True)) == (151667, 151668)
    with pytest.raises(ConfigError, match=r"</think> to be a single token.*t2po.tti.enabled=false"):
        resolve_think_ids(_Tokenizer({"<think>": [1], "</think>": [2, 3, 4]}))


def cfg_with(tti: bool, tds: bool, **kw) -> T2POConfig:
    cfg = T2POConfig()
    cfg.tti.enabled, cfg.tds.enabled = tti, tds
    for key, value in kw.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_build_hooks_switches() -> None:
    ids = (OPEN, CLOSE)
    assert build_hooks(cfg_with(False, False), ids, "train", 300) == (None, None)
    assert build_hooks(cfg_with(False, True), ids, "val", 300) == (None, None)
    assert build_hooks(cfg_with(True, False, tti__in_validation=False), ids, "val", 300) == (None, None)
    factory, sampler = build_hooks(cfg_with(False, True), None, "train", 300)
    assert factory is not None and not factory.params.tti_enabled and sampler is not None
    factory, sampler = build_hooks(cfg_with(True, True), ids, "val", 300)
    assert factory is not None and factory.params.tti_enabled and sampler is None
    factory, sampler = build_hooks(cfg_with(True, True, tds__eta=0.2, tds__max_resamples=3), ids, "train", 300)
    assert sampler is not None and (sampler.eta, sampler.max_resamples) == (0.2, 3)
    assert factory is not None and factory.params.max_response_tokens == 300


def test_effective_think_budget_and_released_state_sharing() -> None:
    cfg = cfg_with(True, False)
    factory, _ = build_hooks(cfg, (OPEN, CLOSE), "train", 300, env_max_think_tokens=450)
    assert factory is not None and factory.params.max_think_tokens == 450  # the env default
    cfg.tti.max_think_tokens = 100
    factory, _ = build_hooks(cfg, (OPEN, CLOSE), "train", 300, env_max_think_tokens=450)
    assert factory is not None and factory.params.max_think_tokens == 100  # t2po.tti wins
    cfg.compat = "released"
    train, _ = build_hooks(cfg, (OPEN, CLOSE), "train", 300)
    val, _ = build_hooks(cfg, (OPEN, CLOSE), "val", 300, released_state=train.released_state)
    assert train.params.released and val.released_state is train.released_state
    assert train().released_state is train().released_state
