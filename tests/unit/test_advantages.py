"""Row-level advantages against hand-computed numbers (gigpo.md §2-8, errata 4-7, 10)."""

from __future__ import annotations

import math

import pytest
import torch

from t2po_cli.algo import advantages as A
from t2po_cli.algo.estimators.gigpo import GiGPOParams
from t2po_cli.algo.registry import EstimatorInputs, get_estimator
from t2po_cli.tracking import keys

# Batch used throughout (κ = 0.1, γ = 0.95):
#   group 0: traj 0 (env 0) turns 0,1,2  r = [0, 0, 10]  R_τ = 10, turn 1 invalid, obs s0 s1 s2
#            traj 1 (env 1) turns 0,1    r = [0, 0]      R_τ = 0,                  obs s0 s1
#   group 1: traj 2         turn 0       r = [10]        R_τ = 10                  obs s0   (|g| = 1)


def _rows(perm: list[int] | None = None) -> A.RowBatch:
    data = [
        # (R_τ, r_t, group, traj, turn, invalid, obs)
        (10.0, 0.0, 0, 0, 0, False, "s0"),
        (10.0, 0.0, 0, 0, 1, True, "s1"),
        (10.0, 10.0, 0, 0, 2, False, "s2"),
        (0.0, 0.0, 0, 1, 0, False, "s0"),
        (0.0, 0.0, 0, 1, 1, False, "s1"),
        (10.0, 10.0, 1, 2, 0, False, "s0"),
    ]
    if perm is not None:
        data = [data[i] for i in perm]
    cols = list(zip(*data, strict=True))
    return A.RowBatch(
        episode_reward=torch.tensor(cols[0]),
        step_reward=torch.tensor(cols[1]),
        group_id=torch.tensor(cols[2]),
        traj_id=torch.tensor(cols[3]),
        turn=torch.tensor(cols[4]),
        invalid=torch.tensor(cols[5]),
        anchor_obs=list(cols[6]),
    )


KAPPA = 0.1


def _p(**kw) -> GiGPOParams:
    return GiGPOParams(**kw)


def test_row_scores_subtract_penalty_on_invalid_rows():
    rows = _rows()
    s = A.row_scores(rows.episode_reward, rows.invalid, 0.1)
    # S = R_τ − 0.1·1[invalid]
    assert torch.allclose(s, torch.tensor([10.0, 9.9, 10.0, 0.0, 0.0, 10.0]))
    assert torch.equal(A.row_scores(rows.episode_reward, rows.invalid, 0.0), rows.episode_reward)


def test_step_returns_penalty_after_discount_and_not_propagated():
    rows = _rows()
    g = A.step_returns(rows.step_reward, rows.traj_id, rows.turn, rows.invalid, 0.95, 0.1)
    # traj 0: G2 = 10; G1 = 0.95·10 = 9.5 → 9.5 − 0.1 = 9.4 (penalty after discounting)
    #         G0 = 0.95·9.5 = 9.025 (the penalty of turn 1 is NOT propagated: 0.95·9.4 = 8.93 would be)
    # traj 1: 0, 0;  traj 2: 10
    assert torch.allclose(g, torch.tensor([9.025, 9.4, 10.0, 0.0, 0.0, 10.0]))


def test_step_returns_independent_of_row_order():
    perm = [5, 2, 4, 0, 3, 1]
    rows = _rows(perm)
    g = A.step_returns(rows.step_reward, rows.traj_id, rows.turn, rows.invalid, 0.95, 0.1)
    expect = torch.tensor([9.025, 9.4, 10.0, 0.0, 0.0, 10.0])[perm]
    assert torch.allclose(g, expect)


def test_episode_advantage_cross_step_mean_norm_and_singleton():
    rows = _rows()
    s = A.row_scores(rows.episode_reward, rows.invalid, 0.1)
    a = A.episode_advantage(s, rows.group_id, rows.traj_id, "mean_norm")
    # group 0 values [10, 9.9, 10, 0, 0]: μ = 29.9/5 = 5.98 → S − 5.98
    # group 1 has one row: μ = 0, σ = 1 → A^E = S = 10 (not 0)
    assert torch.allclose(a, torch.tensor([4.02, 3.92, 4.02, -5.98, -5.98, 10.0]), atol=1e-5)


def test_episode_advantage_cross_step_mean_std_norm():
    rows = _rows()
    s = A.row_scores(rows.episode_reward, rows.invalid, 0.1)
    a = A.episode_advantage(s, rows.group_id, rows.traj_id, "mean_std_norm")
    # deviations² 16.1604 + 15.3664 + 16.1604 + 35.7604 + 35.7604 = 119.208; unbiased var = 119.208/4 = 29.802
    sigma = math.sqrt(29.802)  # 5.459121
    expect = [d / (sigma + 1e-6) for d in (4.02, 3.92, 4.02, -5.98, -5.98)] + [10.0 / (1.0 + 1e-6)]
    assert torch.allclose(a, torch.tensor(expect), atol=1e-5)


def test_episode_advantage_vanilla_uses_per_trajectory_mean():
    rows = _rows()
    s = A.row_scores(rows.episode_reward, rows.invalid, 0.1)
    a = A.episode_advantage(s, rows.group_id, rows.traj_id, "mean_norm", cross_step_stats=False)
    # errata 5: traj means 29.9/3 = 9.966667 and 0 → μ = 4.983333; each row: S_i − μ
    mu = (29.9 / 3) / 2
    expect = [10 - mu, 9.9 - mu, 10 - mu, -mu, -mu, 10.0]
    assert torch.allclose(a, torch.tensor(expect), atol=1e-5)
    a_std = A.episode_advantage(s, rows.group_id, rows.traj_id, "mean_std_norm", cross_step_stats=False)
    # unbiased std of [9.966667, 0] = 9.966667/√2 = 7.047498
    sigma = (29.9 / 3) / math.sqrt(2)
    assert torch.allclose(a_std[:5], torch.tensor(expect[:5]) / (sigma + 1e-6), atol=1e-5)
    assert a_std[5].item() == pytest.approx(10.0 / (1 + 1e-6))


def test_unknown_norm_raises():
    rows = _rows()
    with pytest.raises(ValueError, match="norm"):
        A.episode_advantage(rows.episode_reward, rows.group_id, rows.traj_id, "zscore")


def test_anchor_groups_exact_pool_across_turns_not_groups():
    rows = A.RowBatch(
        episode_reward=torch.zeros(4),
        step_reward=torch.zeros(4),
        group_id=torch.tensor([0, 0, 0, 1]),
        traj_id=torch.tensor([0, 0, 1, 2]),
        turn=torch.tensor([0, 1, 0, 0]),
        invalid=torch.zeros(4, dtype=torch.bool),
        anchor_obs=["x", "y", "y", "y"],
    )
    c = A.anchor_groups(rows).tolist()
    # "y" at turn 1 of traj 0 and turn 0 of traj 1 pool; group 1's "y" is a different cluster.
    assert c[1] == c[2] and c[0] != c[1] and c[3] not in (c[0], c[1])


def test_similarity_clusters_depend_on_order():
    a, b, c = "abcdefghij", "abcdefghXY", "abcdefghiY"
    # ratio = 2·matches/(|x|+|y|): (a,b) = 2·8/20 = 0.8; (a,c) = 2·9/20 = 0.9; (b,c) = 2·9/20 = 0.9
    assert A.similarity_clusters([a, b], 0.85) == [0, 1]
    # order a, b, c: c joins a's cluster (first representative with ratio ≥ 0.85)
    assert A.similarity_clusters([a, b, c], 0.85) == [0, 1, 0]
    # order b, c, a: c joins b's cluster, a starts its own
    assert A.similarity_clusters([b, c, a], 0.85) == [0, 0, 1]
    with pytest.raises(ValueError, match="threshold"):
        A.similarity_clusters([a], 1.0)


def test_anchor_groups_similarity_uses_env_turn_order():
    a, b, c = "abcdefghij", "abcdefghXY", "abcdefghiY"

    def build(perm):
        data = [(0, 0, a), (1, 0, b), (2, 0, c)]  # (traj, turn, obs) in env order
        data = [data[i] for i in perm]
        return A.RowBatch(
            episode_reward=torch.zeros(3),
            step_reward=torch.zeros(3),
            group_id=torch.zeros(3, dtype=torch.long),
            traj_id=torch.tensor([d[0] for d in data]),
            turn=torch.tensor([d[1] for d in data]),
            invalid=torch.zeros(3, dtype=torch.bool),
            anchor_obs=[d[2] for d in data],
        )

    # In (env, turn) order a, b, c → {a, c}, {b}; feeding the rows reversed gives the same clusters.
    fwd = A.anchor_groups(build([0, 1, 2]), similarity=True, threshold=0.85).tolist()
    rev = A.anchor_groups(build([2, 1, 0]), similarity=True, threshold=0.85).tolist()
    assert fwd[0] == fwd[2] != fwd[1]
    assert rev[2] == rev[0] != rev[1]


def test_step_advantage_mean_and_std_and_singleton():
    g = torch.tensor([9.025, 0.0, 9.4, 0.0, 10.0])
    cl = torch.tensor([0, 0, 1, 1, 2])
    a = A.step_advantage(g, cl, "mean_norm")
    # cluster 0: μ = 4.5125 → ±4.5125; cluster 1: μ = 4.7 → ±4.7; singleton → μ_C = G_i → 0
    assert torch.allclose(a, torch.tensor([4.5125, -4.5125, 4.7, -4.7, 0.0]))
    s = A.step_advantage(g, cl, "mean_std_norm")
    # two values ±d around μ: unbiased σ = d·√2 → ±d/(d√2 + 1e-6) ≈ ±0.7071067
    assert torch.allclose(s, torch.tensor([1, -1, 1, -1, 0]) / math.sqrt(2), atol=1e-6)


def test_gigpo_final_advantage_mean_norm():
    adv, parts = A.gigpo_advantages(_rows(), _p(norm="mean_norm", step_advantage_w=1.0), KAPPA)
    # A^E = [4.02, 3.92, 4.02, −5.98, −5.98, 10]; G = [9.025, 9.4, 10, 0, 0, 10]
    # clusters: s0 {row0, row3} → ±4.5125; s1 {row1, row4} → ±4.7; s2 {row2} → 0; group 1 s0 {row5} → 0
    expect = [4.02 + 4.5125, 3.92 + 4.7, 4.02, -5.98 - 4.5125, -5.98 - 4.7, 10.0]
    assert torch.allclose(adv, torch.tensor(expect), atol=1e-5)
    assert parts["cluster"][0] == parts["cluster"][3] != parts["cluster"][5]
    half, _ = A.gigpo_advantages(_rows(), _p(norm="mean_norm", step_advantage_w=0.5), KAPPA)
    assert torch.allclose(half, parts["episode"] + 0.5 * parts["step"])


def test_gigpo_is_permutation_equivariant():
    perm = [3, 5, 0, 4, 2, 1]
    base, _ = A.gigpo_advantages(_rows(), _p(), KAPPA)
    shuffled, _ = A.gigpo_advantages(_rows(perm), _p(), KAPPA)
    assert torch.allclose(shuffled, base[perm])


def test_penalty_switch_off():
    adv_off, parts = A.gigpo_advantages(_rows(), _p(norm="mean_norm"), 0.0)
    # without κ: G1 = 9.5, S1 = 10
    assert parts["step_returns"][1].item() == pytest.approx(9.5)
    assert parts["scores"][1].item() == pytest.approx(10.0)
    assert adv_off.shape == (6,)


def test_rloo_errata_form_over_turn_rows():
    rows = _rows()
    s = A.row_scores(rows.episode_reward, rows.invalid, 0.1)
    a = A.rloo_advantages(s, rows.group_id)
    # group 0: n = 5, μ = 5.98 → 5/4·(S − 5.98) = [5.025, 4.9, 5.025, −7.475, −7.475]
    # check row 0 by leave-one-out: 10 − mean(9.9, 10, 0, 0) = 10 − 4.975 = 5.025
    # group 1: n = 1 → A = S = 10
    assert torch.allclose(a, torch.tensor([5.025, 4.9, 5.025, -7.475, -7.475, 10.0]), atol=1e-5)


def test_rloo_without_cross_steps_uses_each_trajectory_first_row():
    # Issue #14: compute_mean_std_cross_steps=False in the release keeps the first row of each trajectory.
    # group 0: traj 0 turn 0 S = 10, traj 1 turn 0 S = 0 → n = 2, baseline 5 → A = 2·(S − 5) on every row
    # (the per-trajectory mean would give 4.983; the cross-step form 5/4·(S − 5.98)). group 1: n = 1 → S.
    rows = _rows()
    s = A.row_scores(rows.episode_reward, rows.invalid, 0.1)
    expect = torch.tensor([10.0, 9.8, 10.0, -10.0, -10.0, 10.0])
    a = A.rloo_advantages(s, rows.group_id, rows.traj_id, rows.turn, cross_step_stats=False)
    assert torch.allclose(a, expect, atol=1e-5)
    # "First" is the lowest turn of the trajectory, not the first row passed in.
    perm = [4, 2, 5, 1, 3, 0]
    rp = _rows(perm)
    sp = A.row_scores(rp.episode_reward, rp.invalid, 0.1)
    assert torch.allclose(A.rloo_advantages(sp, rp.group_id, rp.traj_id, rp.turn, cross_step_stats=False),
                          expect[perm], atol=1e-5)
    # An invalid first row is that trajectory's representative: traj 0 turn 0 invalid → S = 9.9, b = 4.95.
    inv = A.RowBatch(rows.episode_reward, rows.step_reward, rows.group_id, rows.traj_id, rows.turn,
                     torch.tensor([True, False, False, False, False, False]), rows.anchor_obs)
    si = A.row_scores(inv.episode_reward, inv.invalid, 0.1)
    ai = A.rloo_advantages(si, inv.group_id, inv.traj_id, inv.turn, cross_step_stats=False)
    assert torch.allclose(ai, torch.tensor([9.9, 10.1, 10.1, -9.9, -9.9, 10.0]), atol=1e-5)
    # The rloo estimator (algo.rloo.cross_step_stats) honours the switch, as GRPO does.
    out = _run("rloo", rows, cross_step_stats=False)
    assert torch.allclose(out.advantages, expect, atol=1e-5)
    out = _run("rloo", rows)
    assert torch.allclose(out.advantages, A.rloo_advantages(s, rows.group_id), atol=1e-6)
    with pytest.raises(ValueError, match="traj_id"):
        A.rloo_advantages(s, rows.group_id, cross_step_stats=False)


def test_gae_turn_level():
    r = torch.tensor([0.0, 0.0, 1.0, 0.0])
    v = torch.tensor([0.5, 0.6, 0.8, 0.3])
    traj = torch.tensor([0, 0, 0, 1])
    turn = torch.tensor([0, 1, 2, 0])
    adv, ret = A.gae_advantages(r, v, traj, turn, gamma=0.9, lam=0.8)
    # δ2 = 1 − 0.8 = 0.2;            A2 = 0.2
    # δ1 = 0.9·0.8 − 0.6 = 0.12;     A1 = 0.12 + 0.72·0.2 = 0.264
    # δ0 = 0.9·0.6 − 0.5 = 0.04;     A0 = 0.04 + 0.72·0.264 = 0.23008
    # traj 1: δ = 0 − 0.3 → A = −0.3
    assert torch.allclose(adv, torch.tensor([0.23008, 0.264, 0.2, -0.3]), atol=1e-6)
    assert torch.allclose(ret, adv + v)
    # input order does not matter
    perm = [2, 3, 0, 1]
    adv_p, _ = A.gae_advantages(r[perm], v[perm], traj[perm], turn[perm], 0.9, 0.8)
    assert torch.allclose(adv_p, adv[perm])


def _run(name: str, rows: A.RowBatch, values: torch.Tensor | None = None, **kw):
    est = get_estimator(name)
    params = est.params(**kw) if kw else est.params()
    return est.advantages(EstimatorInputs(rows, KAPPA, values=values), est.settings(params))


def test_registry_estimators_and_stats_keys():
    rows = _rows()
    known = {v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str)}
    for name in ("grpo", "gigpo", "rloo"):
        out = _run(name, rows)
        assert torch.equal(out.returns, out.advantages)
        assert set(out.stats) <= known and out.stats
        assert out.policy_loss is None
    gr = _run("grpo", rows, norm="mean_norm")
    assert gr.advantages[0].item() == pytest.approx(4.02, abs=1e-5)
    gi = _run("gigpo", rows, norm="mean_norm")
    assert torch.allclose(gi.advantages, A.gigpo_advantages(rows, _p(norm="mean_norm"), KAPPA)[0])
    ppo = _run("ppo", rows, values=torch.zeros(6))
    # ppo rewards = r − κ·1[invalid] = [0, −0.1, 10, 0, 0, 10]; with V = 0: GAE = λγ-discounted sums
    lg = 0.95 * 0.95
    assert ppo.advantages[2].item() == pytest.approx(10.0)
    assert ppo.advantages[1].item() == pytest.approx(-0.1 + lg * 10.0)
    assert ppo.stats["critic/advantages/max"] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="values"):
        _run("ppo", rows)
    with pytest.raises(ValueError, match="gold"):
        _run("a2tgpo", rows)


def test_registry_declares_group_needs_and_inputs():
    from t2po_cli.algo.registry import estimator_names
    from t2po_cli.errors import ConfigError

    assert set(estimator_names()) >= {"grpo", "gigpo", "rloo", "ppo", "a2tgpo"}
    assert get_estimator("ppo").min_group_size == 1 and get_estimator("ppo").needs_values
    assert get_estimator("grpo").min_group_size == 2 and not get_estimator("grpo").needs_values
    assert get_estimator("a2tgpo").needs_gold_answers
    with pytest.raises(ConfigError, match=r"algo\.name='dpo' is not one of"):
        get_estimator("dpo")


def test_algo_config_sections_are_the_estimators_params():
    from t2po_cli.config.schema import AlgoConfig

    cfg = AlgoConfig()
    for name in ("grpo", "gigpo", "rloo", "ppo", "a2tgpo"):
        assert isinstance(getattr(cfg, name), get_estimator(name).params)
    assert AlgoConfig(invalid_action_penalty_coef=0.2).penalty == pytest.approx(0.2)
    assert AlgoConfig(use_invalid_action_penalty=False).penalty == 0.0


def test_rowbatch_shape_check():
    with pytest.raises(ValueError, match="turn"):
        A.RowBatch(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(3),
                   torch.zeros(2, dtype=torch.bool), ["a", "b"])
