"""A²TGPO math against hand-computed numbers (a2tgpo.md §11 tests 2-7; test 1 is in test_ig_probe.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from t2po_cli.algo import a2tgpo as X
from t2po_cli.algo import turn_clip as TC
from t2po_cli.algo.advantages import RowBatch
from t2po_cli.algo.estimators.a2tgpo import A2TGPOParams
from t2po_cli.errors import ConfigError
from t2po_cli.tracking import keys

P = A2TGPOParams().resolved()


def _rows(traj_turns: list[tuple[int, int, float]]) -> RowBatch:
    """Rows from (group, n_turns, outcome) per trajectory, trajectories in env order."""
    g, t, tr, r = [], [], [], []
    for tid, (group, n, outcome) in enumerate(traj_turns):
        for k in range(n):
            g.append(group), t.append(k), tr.append(tid), r.append(outcome)
    n = len(g)
    return RowBatch(torch.tensor(r), torch.zeros(n), torch.tensor(g), torch.tensor(tr), torch.tensor(t),
                    torch.zeros(n, dtype=torch.bool), [""] * n)


# §11.2 -------------------------------------------------------------------------------------------------


def test_ig_forms_on_hand_built_logps():
    ell = torch.tensor([-2.0, -1.0, -1.5])
    # logprob: [−1 − (−2), −1.5 − (−1)] = [1, −0.5]
    assert torch.allclose(X.ig_from_points(ell, "log"), torch.tensor([1.0, -0.5]))
    # prob: [e^−1 − e^−2, e^−1.5 − e^−1] = [0.367879 − 0.135335, 0.223130 − 0.367879] = [0.232544, −0.144749]
    assert torch.allclose(X.ig_from_points(ell, "linear"), torch.tensor([0.232544, -0.144749]), atol=1e-6)


def test_information_gain_row_layout_baselines_and_drop_zero():
    rows = _rows([(0, 3, 1.0), (0, 1, 0.0)])
    ell = torch.tensor([-2.0, -1.0, -1.5, -0.3])
    ig, has = X.information_gain(ell, rows.traj_id, rows.turn, P)
    # row k gets ℓ[k+1] − ℓ[k]; the answer row and the zero-call trajectory have none
    assert torch.allclose(ig, torch.tensor([1.0, -0.5, 0.0, 0.0]))
    assert has.tolist() == [True, True, False, False]
    _, has_ft = X.information_gain(ell, rows.traj_id, rows.turn, replace(P, ig_baseline="first_turn"))
    assert has_ft.tolist() == [False, True, False, False]  # the first point only seeds the baseline
    _, has_dz = X.information_gain(torch.tensor([-1.0, -1.0, -2.0, 0.0]), rows.traj_id, rows.turn,
                                   replace(P, ig_drop_zero=True))
    assert has_dz.tolist() == [False, True, False, False]  # an IG of exactly 0 is dropped


def test_information_gain_failure_raises():
    rows = _rows([(0, 2, 1.0)])
    with pytest.raises(X.InformationGainError):
        X.information_gain(torch.tensor([float("nan"), -1.0]), rows.traj_id, rows.turn, P)
    with pytest.raises(X.InformationGainError):
        X.compute_a2tgpo_advantages(rows, torch.zeros(3), P)


# §11.3 -------------------------------------------------------------------------------------------------


def test_population_zscore_singleton_and_eps():
    vals = torch.tensor([1.0, 3.0, 5.0, 2.0, 2.0, 1e-4, -1e-4])
    key = torch.tensor([0, 0, 1, 2, 2, 3, 3])
    z, std, n = X.population_zscore(vals, key, 1e-8, 1e-6)
    # group 0: μ = 2, population var = 1 (not 2 as with N−1), σ = √(1 + 1e-8) → ±1/(σ + 1e-6) ≈ ±0.999999
    s0 = math.sqrt(1 + 1e-8)
    assert z[0].item() == pytest.approx(-1 / (s0 + 1e-6)) and z[1].item() == pytest.approx(1 / (s0 + 1e-6))
    # group 1 is a singleton → 0
    assert z[2].item() == 0.0 and n[2].item() == 1
    # group 2: equal values → var 0, σ = √1e-8 = 1e-4 (the floor) → z = 0; the returned raw std is 0
    assert std[3].item() == 0.0 and z[3].item() == 0.0
    assert std[0].item() == pytest.approx(1.0)  # raw population std of [1, 3]
    # group 3: ±1e-4: var = 1e-8, σ = √(1e-8 + 1e-8) = 1.414214e-4; z = 1e-4/(1.414214e-4 + 1e-6) = 0.702141
    assert z[5].item() == pytest.approx(1e-4 / (math.sqrt(2e-8) + 1e-6), rel=1e-5)
    assert z[5].item() == pytest.approx(0.702141, abs=1e-5)


def test_turn_group_normalize_groups_by_prompt_and_turn():
    # prompt 0: three trajectories with 3, 3, 2 turns → process turns: t1 ×3, t2 ×2; prompt 1: one 2-turn traj
    rows = _rows([(0, 3, 1.0), (0, 3, 0.0), (0, 2, 0.0), (1, 2, 1.0)])
    ig = torch.tensor([1.0, 0.5, 0.0, 3.0, -0.5, 0.0, 2.0, 0.0, 7.0, 0.0])
    has = torch.tensor([True, True, False, True, True, False, True, False, True, False])
    ordinal = X.ig_ordinal(has, rows.traj_id, rows.turn)
    z, _, size = X.turn_group_normalize(ig, has, rows.group_id, ordinal, P)
    # (q0, t1) = [1, 3, 2]: μ = 2, pop σ = √(2/3) = 0.816497 → [−1.224744, 1.224744, 0]
    # (q0, t2) = [0.5, −0.5]: μ = 0, σ = 0.5 → [1, −1]; (q1, t1) = [7] singleton → 0
    s1 = math.sqrt(2 / 3 + 1e-8) + 1e-6
    s2 = math.sqrt(0.25 + 1e-8) + 1e-6
    expect = [-1 / s1, 0.5 / s2, 0, 1 / s1, -0.5 / s2, 0, 0, 0, 0, 0]
    assert torch.allclose(z, torch.tensor(expect), atol=1e-6)
    assert size[8].item() == 1


def test_outcome_normalize_per_prompt():
    rows = _rows([(0, 2, 1.0), (0, 1, 0.0), (1, 3, 1.0)])
    r = X.outcome_normalize(rows, P)
    # prompt 0: R = [1, 0]: μ = 0.5, σ = √(0.25 + 1e-8) → ±0.5/(0.5 + 1e-6) ≈ ±0.999998; prompt 1 singleton → 0
    z = 0.5 / (math.sqrt(0.25 + 1e-8) + 1e-6)
    assert torch.allclose(r, torch.tensor([z, z, -z, 0, 0, 0]), atol=1e-6)


# §11.4 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("gamma", "turn1"), [(1.0, 0.0), (0.5, 0.5 / math.sqrt(2))])
def test_worked_example(gamma, turn1):
    # T = 3, îg_1 = +1, îg_2 = −1, λ = 1, R̂ = 0.25
    # γ = 1:   D_1 = 1 − 1 = 0, n = 2 → R̂;          γ = 0.5: D_1 = 1 − 0.5 = 0.5 → R̂ + 0.5/√2 = R̂ + 0.353553
    #          D_2 = −1, n = 1 → R̂ − 1;  answer turn → R̂
    rows = _rows([(0, 3, 1.0)])
    p = replace(P, gamma=gamma, ig_weight=1.0)
    adv = X.accumulate_advantages(torch.tensor([1.0, -1.0, 0.0]), torch.tensor([True, True, False]),
                                  torch.full((3,), 0.25), rows.traj_id, rows.turn, p)
    assert torch.allclose(adv, torch.tensor([0.25 + turn1, 0.25 - 1.0, 0.25]), atol=1e-6)
    # without √n: D_1 unscaled (γ = 0.5: 0.5)
    flat = X.accumulate_advantages(torch.tensor([1.0, -1.0, 0.0]), torch.tensor([True, True, False]),
                                   torch.full((3,), 0.25), rows.traj_id, rows.turn,
                                   replace(p, variance_rescale=False))
    assert flat[0].item() == pytest.approx(0.25 + (1 - gamma))


def test_compute_a2tgpo_end_to_end_and_stats():
    # one prompt, two 2-turn trajectories; ℓ = [−2, −1] and [−2, −3] → IG +1 and −1
    rows = _rows([(0, 2, 1.0), (0, 2, 0.0)])
    res = X.compute_a2tgpo_advantages(rows, torch.tensor([-2.0, -1.0, -2.0, -3.0]), P)
    z = 1 / (math.sqrt(1 + 1e-8) + 1e-6)  # îg = ±z; R̂ = ±0.5/(0.5 + 1e-6) ≈ ±z too
    r = 0.5 / (math.sqrt(0.25 + 1e-8) + 1e-6)
    # Â(process) = 0.3·îg/√1 + R̂; answer = R̂
    assert torch.allclose(res.advantages, torch.tensor([0.3 * z + r, r, -0.3 * z - r, -r]), atol=1e-6)
    assert res.clip_scale[1].item() == 1.0
    known = {v for k, v in vars(keys).items() if k.startswith("A2TGPO_") or k in ("ADVANTAGE_MEAN",)}
    for k in res.stats:
        # a full key, or a documented prefix with /mean, /std, /min, /max or /by_turn/{t}
        assert k in known or any(k.startswith(v + "/") for v in known), k
    assert res.stats["a2tgpo/ig_raw/std"] == pytest.approx(1.0)  # true values, not halved (errata 20)
    assert res.stats["a2tgpo/zero_call_rate"] == 0.0 and res.warning is None
    # prob form on tiny probabilities: IG ~ 1e-9, σ floors at 1e-4 → warning (§2.2)
    tiny = X.compute_a2tgpo_advantages(rows, torch.tensor([-20.0, -19.9, -20.0, -20.1]), replace(P, ig_form="linear"))
    assert tiny.warning is not None and abs(tiny.ig_norm).max() < 1e-3


def test_row_layout_rejects_token_layout_settings():
    rows = _rows([(0, 2, 1.0)])
    with pytest.raises(ValueError, match="token layout"):
        X.compute_a2tgpo_advantages(rows, torch.zeros(2), A2TGPOParams(preset="released").resolved())


# §11.5 -------------------------------------------------------------------------------------------------


def test_clip_scale_values():
    c = X.clip_scale(torch.tensor([0.0, 1.0, -2.0, 5.0]), torch.tensor([True, True, True, False]), P)
    # c(1) = 1 + 0.3·(2·0.7310586 − 1) = 1.138635;  c(−2) = 1 + 0.3·(2·0.1192029 − 1) = 0.771522; answer → 1
    assert torch.allclose(c, torch.tensor([1.0, 1.138635, 0.771522, 1.0]), atol=1e-6)
    off = X.clip_scale(torch.tensor([1.0]), torch.tensor([True]), replace(P, clip_adaptive=False))
    assert off.item() == 1.0


# §11.6 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_straight_through_equals_direct_ratio(agg):
    torch.manual_seed(0)
    b, t = 4, 7
    base = torch.randn(b, t) * 0.01
    old = torch.randn(b, t)
    mask = torch.rand(b, t) > 0.3
    mask[:, 0] = True
    adv = torch.randn(b, 1).expand(b, t)
    c = 1 + 0.3 * torch.rand(b, 1).expand(b, t)
    p = replace(P, loss_agg=agg)
    traj = torch.tensor([0, 0, 1, 1])
    grads, values = [], []
    for st in (True, False):
        logps = (old + base).clone().requires_grad_(True)
        loss, _ = TC.turn_clip_loss(logps, old, adv, c, mask, p, traj_ids=traj, straight_through=st)
        loss.backward()
        grads.append(logps.grad)
        values.append(loss.item())
    assert values[0] == pytest.approx(values[1], abs=1e-7)
    assert torch.allclose(grads[0], grads[1], atol=1e-7)


def test_turn_clip_hand_computed_bounds_and_segments():
    # one row, two turns (segments 0 and 1) of two tokens; log-ratios [0.01, 0.03] and [−0.02, −0.02]
    old = torch.zeros(1, 4)
    logps = torch.tensor([[0.01, 0.03, -0.02, -0.02]])
    seg = torch.tensor([[0, 0, 1, 1]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    c = torch.tensor([[1.0, 1.0, 2.0, 2.0]])
    loss, st = TC.turn_clip_loss(logps, old, adv, c, mask, P, segment_ids=seg)
    # turn 0: r = e^0.02 = 1.020201 > upper 1.004 → −1.004 per token (clipped, A > 0)
    # turn 1: r = e^−0.02 = 0.980199 < lower 1 − 2·0.003 = 0.994 → A < 0 → max(0.980199, 0.994) = 0.994
    # token-mean: (2·−1.004 + 2·0.994)/4 = −0.005
    assert loss.item() == pytest.approx(-0.005, abs=1e-6)
    assert st["a2tgpo/pg_clipfrac_upper"] == 0.5 and st["a2tgpo/pg_clipfrac_lower"] == 0.5
    # the log-ratio clamp (max 10) caps r at e^10
    big, _ = TC.turn_clip_loss(torch.full((1, 2), 50.0), torch.zeros(1, 2), -torch.ones(1, 2),
                               torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), P)
    assert big.item() == pytest.approx(math.exp(10), rel=1e-5)


# §11.7 -------------------------------------------------------------------------------------------------


RELEASED = A2TGPOParams(preset="released").resolved()


def _released(opens, closes, ells, ig_norm, length=30, r_hat=0.5):
    points = TC.released_measure_points(opens, closes)
    pos, ig = TC.released_ig_points(points, torch.tensor(ells), RELEASED)
    adv, c = TC.released_token_advantages(pos, torch.tensor(ig_norm[: len(pos)]), r_hat, length, RELEASED)
    seg = TC.segments_from_advantage_runs(adv.unsqueeze(0), torch.ones(1, length, dtype=torch.bool))[0]
    return points, pos, ig, adv, c, seg


def test_released_layout_one_search_call_gives_no_ig():
    points, pos, ig, adv, c, seg = _released([2], [5], [-3.0], [])
    assert points == [5] and pos == [] and ig.numel() == 0
    assert torch.all(adv == 0.5) and torch.all(c == 1.0) and torch.all(seg == 0)
    # the row layout agrees: one search call = 2 turns → first_turn leaves no IG
    rows = _rows([(0, 2, 1.0)])
    _, has = X.information_gain(torch.tensor([-3.0, -2.0]), rows.traj_id, rows.turn, RELEASED)
    assert not has.any()


def test_released_layout_two_search_calls():
    # points: before the 2nd <search> (10 − 1 = 9) and the end of the 2nd </search> (13)
    points, pos, ig, adv, c, seg = _released([2, 10], [5, 13], [-3.0, -2.0], [1.0])
    assert points == [9, 13] and pos == [13] and ig.tolist() == [1.0]
    # tokens 0..13: λ·îg/√1 + R̂ = 0.3 + 0.5 = 0.8, c(1) = 1.138635; tail 14..29: R̂ = 0.5, c = 1
    assert torch.allclose(adv[:14], torch.full((14,), 0.8)) and torch.all(adv[14:] == 0.5)
    assert c[0].item() == pytest.approx(1.138635, abs=1e-6) and torch.all(c[14:] == 1.0)
    assert seg.tolist() == [0] * 14 + [1] * 16


def test_released_layout_three_search_calls():
    points, pos, ig, adv, c, seg = _released([2, 10, 18], [5, 13, 21], [-3.0, -2.0, -2.5], [1.0, -1.0])
    assert points == [9, 17, 21] and pos == [17, 21]
    assert torch.allclose(ig, torch.tensor([1.0, -0.5]))
    # segment 0 = tokens 0..17 (the first two search calls share it): D = 1 + (−1) = 0, n = 2 → R̂ = 0.5
    # segment 1 = tokens 18..21: D = −1, n = 1 → 0.3·(−1) + 0.5 = 0.2; tail 22..29 → 0.5
    assert torch.all(adv[:18] == 0.5) and torch.allclose(adv[18:22], torch.full((4,), 0.2))
    assert torch.all(adv[22:] == 0.5)
    assert c[18].item() == pytest.approx(0.861365, abs=1e-6) and torch.all(c[22:] == 1.0)
    assert seg.tolist() == [0] * 18 + [1] * 4 + [2] * 8
    # a zero IG disappears and its span merges into the next one (row 8)
    _, pos_z, _, _, _, _ = _released([2, 10, 18], [5, 13, 21], [-3.0, -3.0, -2.5], [1.0])
    assert pos_z == [21]


def test_segments_from_advantage_runs_merge_equal_neighbours():
    adv = torch.tensor([[0.5, 0.5, 0.5, 0.2, 0.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    assert TC.segments_from_advantage_runs(adv, mask).tolist() == [[0, 0, 0, 1, -1]]


# presets and config --------------------------------------------------------------------------------------


def test_presets_and_overrides():
    assert P.ig_form == "log" and P.ig_weight == 0.3 and P.ig_baseline == "query" and P.norm_var_eps == 1e-8
    paper = A2TGPOParams(preset="paper", ig_form="linear").resolved()
    assert (paper.ig_form, paper.ig_weight, paper.loss_agg, paper.norm_var_eps) == (
        "linear", 1.0, "seq-mean-token-mean", 0.0)
    assert (RELEASED.ig_baseline, RELEASED.turn_spans, RELEASED.ig_drop_zero) == ("first_turn", "advantage_runs", True)
    # explicit keys win over the preset; null keys take it (a2tgpo.md §8)
    p = A2TGPOParams(preset="paper", ig_weight=0.5).resolved()
    assert p.ig_weight == 0.5 and p.ig_baseline == "query" and p.loss_agg == "seq-mean-token-mean"
    # ig_form is never taken from the preset
    assert A2TGPOParams(preset="paper").resolved().ig_form == "log"
    with pytest.raises(ConfigError, match="preset"):
        A2TGPOParams(preset="intended").resolved()


def test_params_validate_names_the_key_and_fix():
    with pytest.raises(ConfigError, match=r"algo\.a2tgpo\.ig_form='prob' is not one of log, linear"):
        A2TGPOParams(ig_form="prob").validate("algo.a2tgpo")
    with pytest.raises(ConfigError, match="trajectory layout"):
        A2TGPOParams(preset="released").validate("algo.a2tgpo")
    A2TGPOParams(preset="released", ig_context="trajectory").validate("algo.a2tgpo")
