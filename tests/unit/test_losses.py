"""Token-level losses against hand-computed numbers (gigpo.md §9, errata 8-9)."""

from __future__ import annotations

import math

import pytest
import torch

from t2po_cli.algo import losses as L


def _ppo_inputs():
    # ρ = [1.5, 0.5, 1.1, 5.0, (masked)], A = [+1, +1, −1, −1, +1]; the masked token has NaN log-probs.
    old = torch.tensor([[0.0, 0.0, 0.0, 0.0, float("nan")]])
    logps = torch.log(torch.tensor([[1.5, 0.5, 1.1, 5.0, 1.0]])).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    return logps, old, adv, mask


def test_ppo_clip_with_dual_clip_and_masking():
    logps, old, adv, mask = _ppo_inputs()
    loss, st = L.ppo_clip_loss(logps, old, adv, mask, 0.2, 0.2, 3.0)
    # t0: A=+1 ρ=1.5: L1=−1.5, L2=−1.2 → −1.2 (clip active)
    # t1: A=+1 ρ=0.5: L1=−0.5, L2=−0.8 → −0.5
    # t2: A=−1 ρ=1.1: L1=1.1,  L2=1.1  → 1.1; dual min(1.1, 3) = 1.1
    # t3: A=−1 ρ=5.0: L1=5.0,  L2=1.2  → 5.0; dual min(5, 3) = 3 (dual clip active)
    # token-mean: (−1.2 − 0.5 + 1.1 + 3) / (4 + 1e-8) = 0.6; the NaN token is masked out
    assert loss.item() == pytest.approx(0.6, abs=1e-6)
    assert st["actor/pg_clipfrac"] == pytest.approx(0.25)
    assert st["actor/pg_clipfrac_lower"] == pytest.approx(0.25)
    # ppo_kl = mean(log π_old − log π_θ) = −(ln 1.5 + ln 0.5 + ln 1.1 + ln 5)/4 = −1.4170660/4
    assert st["actor/ppo_kl"] == pytest.approx(-1.4170660 / 4, abs=1e-6)
    loss.backward()
    # d/dlogp of −A·ρ/4 = −A·ρ/4 where unclipped: t1 −0.125, t2 +0.275; clipped t0 and dual-clipped t3 → 0
    assert torch.allclose(logps.grad, torch.tensor([[0.0, -0.125, 0.275, 0.0, 0.0]]), atol=1e-6)


def test_dual_clip_only_for_negative_advantages():
    logps = torch.log(torch.tensor([[5.0, 5.0]]))
    old = torch.zeros(1, 2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    # A = +1, ρ = 5: L_clip = max(−5, −1.2) = −1.2; no dual clip for A > 0
    loss, _ = L.ppo_clip_loss(logps, old, torch.tensor([[1.0, 1.0]]), mask)
    assert loss.item() == pytest.approx(-1.2)
    # A = −1, ρ = 5 without dual clip: L = 5
    loss, st = L.ppo_clip_loss(logps, old, torch.tensor([[-1.0, -1.0]]), mask, dual_clip_c=None)
    assert loss.item() == pytest.approx(5.0) and st["actor/pg_clipfrac_lower"] == 0.0


def test_asymmetric_clip_bounds():
    logps = torch.log(torch.tensor([[1.5, 0.5]]))
    old = torch.zeros(1, 2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    # clip_high 0.28: t0 A=+1 → −min(1.5, 1.28) = −1.28; clip_low 0.1: t1 A=−1 → max(0.5, 0.9) = 0.9
    loss, _ = L.ppo_clip_loss(logps, old, torch.tensor([[1.0, -1.0]]), mask, clip_low=0.1, clip_high=0.28)
    assert loss.item() == pytest.approx((-1.28 + 0.9) / 2)


def test_log_ratio_clamped_before_exp():
    logps = torch.tensor([[30.0]])
    old = torch.zeros(1, 1)
    _, st = L.ppo_clip_loss(logps, old, torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool))
    # log ratio 30 → clamped to 20 before exp: ppo_kl = −20
    assert st["actor/ppo_kl"] == pytest.approx(-20.0)


def test_token_mean_masks_and_count_eps():
    x = torch.tensor([[1.0, float("nan")], [3.0, float("inf")]])
    mask = torch.tensor([[True, False], [True, False]])
    # (1 + 3) / (2 + 1e-8)
    assert L.token_mean(x, mask).item() == pytest.approx(2.0)
    # nothing masked in: 0 / 1e-8 = 0, not NaN
    assert L.token_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_kl_k3_and_clamps():
    logps = torch.zeros(1, 4, requires_grad=True)
    ref = torch.tensor([[math.log(2.0), -2.0, 30.0, -30.0]])
    k3 = L.kl_k3(logps, ref)
    # d = ln 2: 2 − 0.693147 − 1 = 0.306853;  d = −2: e^−2 + 2 − 1 = 1.135335
    # d = 30 → clamped to 20: e^20 − 21 → clamped to 10;  d = −30 → −20: e^−20 + 19 = 19 → clamped to 10
    assert torch.allclose(k3, torch.tensor([[0.306853, 1.135335, 10.0, 10.0]]), atol=1e-6)
    k3.sum().backward()
    # dk3/dlogp = −(e^d − 1): ln 2 → −1; −2 → 1 − e^−2 = 0.864665; clamped entries get no gradient
    assert torch.allclose(logps.grad, torch.tensor([[-1.0, 0.864665, 0.0, 0.0]]), atol=1e-6)
    mask = torch.tensor([[True, True, False, False]])
    assert L.kl_loss(logps, ref, mask).item() == pytest.approx((0.306853 + 1.135335) / 2, abs=1e-6)


def test_token_logps_and_entropy():
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])
    ids = torch.tensor([[1, 0]])
    # softmax([0, ln 3]) = [1/4, 3/4] → ln 0.75; uniform over 2 → ln 0.5
    assert torch.allclose(L.token_logps(logits, ids), torch.tensor([[math.log(0.75), math.log(0.5)]]))
    ent = L.token_entropy(torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, float("-inf"), float("-inf"), float("-inf")]]]))
    # uniform over 4 → ln 4; one-hot with −inf logits → 0 (not NaN)
    assert torch.allclose(ent, torch.tensor([[math.log(4.0), 0.0]]))
    # bf16 logits are computed in float32
    assert L.token_logps(logits.bfloat16(), ids).dtype == torch.float32


def test_entropy_bonus_from_logits_or_entropies():
    logits = torch.randn(2, 3, 5)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    a = L.entropy_bonus(mask, logits=logits)
    b = L.entropy_bonus(mask, entropies=L.token_entropy(logits))
    assert a.item() == pytest.approx(b.item())
    with pytest.raises(ValueError, match="exactly one"):
        L.entropy_bonus(mask)


def test_value_loss_plain_and_clipped():
    v = torch.tensor([1.0, 2.0, 7.0])
    ret = torch.zeros(3)
    mask = torch.tensor([True, True, False])
    # plain: 0.5 · (1 + 4) / 2 = 1.25
    assert L.value_loss(v, ret, mask).item() == pytest.approx(1.25)
    # clipped (ε_v = 0.2, V_old = [0.5, 2.5]): clip(V) = [0.7, 2.3] → sq [0.49, 5.29]; max with [1, 4] → [1, 5.29]
    # 0.5 · 6.29 / 2 = 1.5725
    old = torch.tensor([0.5, 2.5, 0.0])
    assert L.value_loss(v, ret, mask, old_values=old, clip_range=0.2).item() == pytest.approx(1.5725)
    with pytest.raises(ValueError, match="old_values"):
        L.value_loss(v, ret, mask, clip_range=0.2)


def test_broadcast_to_tokens():
    out = L.broadcast_to_tokens(torch.tensor([2.0, -1.0]), torch.tensor([[True, False], [True, True]]))
    assert torch.equal(out, torch.tensor([[2.0, 0.0], [-1.0, -1.0]]))
