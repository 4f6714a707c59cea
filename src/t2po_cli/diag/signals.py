"""Early-warning signals as pure functions (issue 17): each is a statistic of one step's rollout or update.

Shape letters: N episodes or rows, B rows in a batch, T response positions, G groups. Masks are bool, True =
the token participates. Every function returns Python floats (nan when there is nothing to measure), so the
trainer writes them as ``diag/*`` metrics (tracking/keys.py) and the rules in ``tracking/early_warning.py``
read them back.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch

MAD_SCALE = 1.4826
"""1 / Φ⁻¹(3/4): MAD × this estimates σ for normal data."""
LOG_RATIO_CLAMP = 20.0
"""Same clamp on log π_θ − log π_old as the PPO loss (algo/losses.py), so the clip fractions agree with it."""


def reward_spread(rewards: torch.Tensor, group_ids: torch.Tensor, tol: float = 1e-8) -> tuple[float, float]:
    """Within-group reward spread (RAGEN, StarPO-S §4): collapse is preceded by groups whose copies all
    earn the same reward.

        spread = (1/G) Σ_g std_g(R),   zero = (1/G) Σ_g [std_g(R) ≤ tol]      (population std, ddof 0)

    Args:
        rewards: episode rewards R, ``FloatTensor[N]``.
        group_ids: task group of each episode, ``LongTensor[N]``.
        tol: a group whose std is at most this counts as zero-spread (float round-off).

    Returns:
        (mean within-group std, fraction of zero-spread groups); (nan, nan) without episodes.
    """
    if rewards.numel() == 0:
        return math.nan, math.nan
    stds = []
    for g in torch.unique(group_ids):
        r = rewards[group_ids == g].double()
        stds.append(float(r.std(unbiased=False)) if r.numel() > 1 else 0.0)
    return sum(stds) / len(stds), sum(s <= tol for s in stds) / len(stds)


def entropy_adv_cov(logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> float:
    """Covariance of the sampled tokens' log-probability and advantage over the response tokens.

        Cov = mean_t (A_t − Ā)(log π_t − mean log π)      (means over masked tokens)

    Under softmax policy gradient the entropy changes by ΔH ≈ −η·Cov ("The Entropy Mechanism of RL for
    Reasoning LMs", arXiv 2505.22617, eq. 4): a sustained positive covariance (confident tokens rewarded)
    drives entropy down.

    Args:
        logps: log π of each sampled token, ``FloatTensor[B, T]``.
        advantages: A per token, ``FloatTensor[B, T]`` (a row's advantage broadcast over its tokens).
        mask: ``BoolTensor[B, T]``.

    Returns:
        The covariance; nan without masked tokens.
    """
    m = mask.bool()
    if not bool(m.any()):
        return math.nan
    lp = logps[m].double()
    a = advantages[m].double()
    return float(((a - a.mean()) * (lp - lp.mean())).mean())


def logp_mismatch(rollout_logps: torch.Tensor, trainer_logps: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Rollout-engine vs trainer log-prob mismatch of the same tokens under the same weights.

        Δ_t = log π_rollout(y_t) − log π_trainer(y_t)
        mismatch = mean_t |Δ_t|,   mult_error = mean_t exp|Δ_t|

    ``mult_error`` is NeMo-RL's ``token_mult_prob_error`` (1 when both agree; investigate above ~1.05:
    stale inference weights, bf16, padding or batching differences).

    Args:
        rollout_logps: ``FloatTensor[B, T]`` from the engine at sampling time.
        trainer_logps: ``FloatTensor[B, T]`` recomputed by the training forward before the update.
        mask: ``BoolTensor[B, T]``.

    Returns:
        (mean |Δ|, mean exp|Δ|); (nan, nan) without masked tokens.
    """
    m = mask.bool()
    if not bool(m.any()):
        return math.nan, math.nan
    d = (rollout_logps[m].double() - trainer_logps[m].double()).abs()
    return float(d.mean()), float(d.exp().mean())


def template_mi(scores: torch.Tensor) -> tuple[float, float]:
    """Template collapse (RAGEN-2): do responses still depend on their prompt?

    ``scores[i, j]`` = (1/|r_i|) log p(r_i | x_j), response i scored under prompt j (length-normalised).

        MI  = mean_i [ S_ii − log (1/N) Σ_j exp S_ij ]
        acc = mean_i [ argmax_j S_ij = i ]

    A policy that answers every prompt with the same template has MI → 0 and acc → 1/N.

    Args:
        scores: ``FloatTensor[N, N]``, N ≥ 2.

    Returns:
        (MI estimate in nats per token, retrieval accuracy).
    """
    s = scores.double()
    n = s.shape[0]
    if n < 2 or s.shape != (n, n):
        return math.nan, math.nan
    mi = (s.diagonal() - (torch.logsumexp(s, dim=1) - math.log(n))).mean()
    acc = (s.argmax(dim=1) == torch.arange(n)).double().mean()
    return float(mi), float(acc)


def robust_z(history: Sequence[float], x: float, min_points: int = 5, rel_floor: float = 0.05) -> float:
    """Robust z-score of ``x`` against ``history`` (e.g. the previous steps' gradient norms).

        z = (x − median(h)) / max(1.4826·MAD(h), rel_floor·|median(h)|, 1e-12)

    The relative floor keeps a nearly flat history from turning a small wobble into a huge z (a z of 4 then
    still means at least 4·rel_floor above the median).

    Args:
        history: past values (non-finite ones are ignored).
        x: the new value.
        min_points: fewer finite past values than this give nan (no judgement yet).
        rel_floor: lower bound of the scale as a fraction of |median|.

    Returns:
        z, or nan when ``x`` is not finite or the history is too short.
    """
    h = [v for v in history if math.isfinite(v)]
    if len(h) < max(1, min_points) or not math.isfinite(x):
        return math.nan
    med = statistics.median(h)
    mad = statistics.median(abs(v - med) for v in h)
    return (x - med) / max(MAD_SCALE * mad, rel_floor * abs(med), 1e-12)


def clip_fractions(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[float, float]:
    """Share of tokens whose PPO ratio is clipped, by side (the tokens that get no gradient).

        ρ = exp(clamp(log π_θ − log π_old, ±20))
        low  = mean_t [A_t < 0 ∧ ρ_t < 1 − ε_low]
        high = mean_t [A_t > 0 ∧ ρ_t > 1 + ε_high]

    Args:
        logps: log π_θ, ``FloatTensor[B, T]``.
        old_logps: log π_old, ``FloatTensor[B, T]``.
        advantages: ``FloatTensor[B, T]``.
        mask: ``BoolTensor[B, T]``.
        clip_low: ε_low.
        clip_high: ε_high.

    Returns:
        (low fraction, high fraction); (nan, nan) without masked tokens.
    """
    m = mask.bool()
    if not bool(m.any()):
        return math.nan, math.nan
    ratio = torch.exp(torch.clamp(logps[m].double() - old_logps[m].double(), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    a = advantages[m]
    low = ((a < 0) & (ratio < 1.0 - clip_low)).double().mean()
    high = ((a > 0) & (ratio > 1.0 + clip_high)).double().mean()
    return float(low), float(high)
