"""Early-warning signals (diag/signals.py) against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from t2po_cli.diag.signals import (
    clip_fractions,
    entropy_adv_cov,
    logp_mismatch,
    reward_spread,
    robust_z,
    template_mi,
)


def test_reward_spread_by_hand() -> None:
    # group 0: [1, 0, 1, 0] → mean 0.5, std 0.5; group 1: [2, 2, 2, 2] → 0; group 2: [0, 0, 0, 3] → mean 0.75,
    # var = (3·0.75² + 2.25²)/4 = (1.6875 + 5.0625)/4 = 1.6875 → std 1.29904
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 3.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    spread, zero = reward_spread(r, g)
    assert spread == pytest.approx((0.5 + 0.0 + math.sqrt(1.6875)) / 3)
    assert zero == pytest.approx(1 / 3)


def test_reward_spread_singletons_and_empty() -> None:
    assert reward_spread(torch.tensor([1.0, 5.0]), torch.tensor([0, 1])) == (0.0, 1.0)
    s, z = reward_spread(torch.empty(0), torch.empty(0, dtype=torch.long))
    assert math.isnan(s) and math.isnan(z)


def test_entropy_adv_cov_by_hand() -> None:
    # masked tokens: logp [-1, -2, -3], A [1, 1, -2] (the 4th token is masked out)
    # mean logp −2, Ā 0 → (1)(1) + (1)(0) + (−2)(−1) = 3 → / 3 = 1
    logps = torch.tensor([[-1.0, -2.0], [-3.0, -9.0]])
    adv = torch.tensor([[1.0, 1.0], [-2.0, 5.0]])
    mask = torch.tensor([[True, True], [True, False]])
    assert entropy_adv_cov(logps, adv, mask) == pytest.approx(1.0)
    # confident tokens penalised → negative covariance
    assert entropy_adv_cov(logps, -adv, mask) == pytest.approx(-1.0)
    assert math.isnan(entropy_adv_cov(logps, adv, torch.zeros_like(mask)))


def test_logp_mismatch_by_hand() -> None:
    roll = torch.tensor([[-1.0, -2.0, -0.5]])
    train = torch.tensor([[-1.1, -1.8, -7.0]])
    mask = torch.tensor([[True, True, False]])
    mis, mult = logp_mismatch(roll, train, mask)
    assert mis == pytest.approx((0.1 + 0.2) / 2)
    assert mult == pytest.approx((math.exp(0.1) + math.exp(0.2)) / 2)
    assert logp_mismatch(roll, roll, mask) == (0.0, 1.0)


def test_template_mi_by_hand() -> None:
    # N = 2, S = [[0, −ln 3], [−ln 3, 0]]: row i: S_ii − log(½(1 + ⅓)) = −log(2/3) = log 1.5 each.
    s = torch.tensor([[0.0, -math.log(3.0)], [-math.log(3.0), 0.0]])
    mi, acc = template_mi(s)
    assert mi == pytest.approx(math.log(1.5))
    assert acc == 1.0
    # A template policy: every prompt scores every response the same → MI 0; argmax ties pick prompt 0.
    mi0, acc0 = template_mi(torch.zeros(4, 4))
    assert mi0 == pytest.approx(0.0, abs=1e-12)
    assert acc0 == 0.25
    assert all(math.isnan(v) for v in template_mi(torch.zeros(1, 1)))


def test_robust_z_by_hand() -> None:
    # history [1, 2, 3, 4, 100]: median 3, |dev| [2, 1, 0, 1, 97] → MAD 1 → σ 1.4826; x = 9 → z = 6/1.4826
    assert robust_z([1, 2, 3, 4, 100], 9.0) == pytest.approx(6 / 1.4826)
    assert math.isnan(robust_z([1, 2, 3], 9.0))  # fewer than 5 points
    assert math.isnan(robust_z([1, 2, 3, 4, 5], math.nan))
    # flat history: MAD 0, the scale is floored at 5 % of the median: (2.1 − 2) / 0.1 = 1
    assert robust_z([2.0] * 5, 2.1) == pytest.approx(1.0)
    assert robust_z([2.0] * 5, 3.0) == pytest.approx(10.0)


def test_clip_fractions_by_hand() -> None:
    # ratios: e^{-0.5}=0.61 (A<0 → low), e^{0.5}=1.65 (A>0 → high), e^{0.1}=1.105 (A>0, not clipped),
    # e^{-0.5} with A>0 (not clipped: the low clip only binds for A<0); 5th token masked.
    old = torch.zeros(1, 5)
    logps = torch.tensor([[-0.5, 0.5, 0.1, -0.5, 3.0]])
    adv = torch.tensor([[-1.0, 1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    low, high = clip_fractions(logps, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert (low, high) == (0.25, 0.25)
    assert clip_fractions(old, old, adv, mask, 0.2, 0.2) == (0.0, 0.0)


def _row(traj: int, group: int, logps: list[float]):
    from t2po_cli.rollout.collector import TurnRow

    n = len(logps)
    return TurnRow(traj, group, 0, [1, 2], torch.ones(n, dtype=torch.long), torch.tensor(logps),
                   torch.zeros(n, dtype=torch.bool), torch.zeros(n), torch.zeros(n), 0.0, False, "", "", "")


def test_rollout_diagnostics_by_hand() -> None:
    from t2po_cli.rollout.collector import Episode, Rollout
    from t2po_cli.tracking import keys as K
    from t2po_cli.trainer.diagnostics import rollout_diagnostics

    # two groups of two episodes: rewards [1, 0] (std 0.5) and [1, 1] (zero spread)
    eps = [Episode(i, i // 2, None, r, bool(r), 1, 0, 1, r) for i, r in enumerate([1.0, 0.0, 1.0, 1.0])]
    # rows: logps [-1, -3] with A = 1 and [-2] with A = -2 → tokens (−1, 1), (−3, 1), (−2, −2); the empty row
    # (no response tokens) is left out. mean logp −2, Ā 0: ((1)(1) + (−1)(1) + (0)(−2)) / 3 = 0
    rows = [_row(0, 0, [-1.0, -3.0]), _row(1, 0, [-2.0]), _row(2, 1, [])]
    ro = Rollout(rows, eps, 0, 0, 0.0, 0.0, 0.0)
    m = rollout_diagnostics(ro, torch.tensor([1.0, -2.0, 7.0]))
    assert m[K.DIAG_REWARD_SPREAD] == pytest.approx(0.25)
    assert m[K.DIAG_ZERO_SPREAD_GROUPS] == 0.5
    assert m[K.DIAG_ENTROPY_ADV_COV] == pytest.approx(0.0)
    # no response tokens at all: the covariance is not logged (never nan)
    assert K.DIAG_ENTROPY_ADV_COV not in rollout_diagnostics(Rollout([rows[2]], eps, 0, 0, 0.0, 0.0, 0.0),
                                                             torch.tensor([1.0]))
