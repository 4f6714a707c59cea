"""Token-level losses: PPO-clip with dual clip, k3 KL, entropy bonus, value loss (gigpo.md §9, errata 8-9).

Shapes: B rows (one per turn), T response positions, V logits width. Masks are bool, True = participates
(response tokens up to and including the first EOS; padding and rows without tokens are False).

Public API (what the trainer loop calls, per micro-batch)::

    logps  = token_logps(logits, response_ids)                        # [B, T] float32
    adv    = broadcast_to_tokens(row_advantages, response_mask)       # [B] -> [B, T]
    pg, st = ppo_clip_loss(logps, old_logps, adv, response_mask,
                           clip_low=cfg.algo.clip_low, clip_high=cfg.algo.clip_high,
                           dual_clip_c=cfg.algo.dual_clip_c)
    loss   = pg
    if cfg.trainer.kl_coef:      loss = loss + cfg.trainer.kl_coef * kl_loss(logps, ref_logps, response_mask)
    if cfg.trainer.entropy_coef: loss = loss - cfg.trainer.entropy_coef * token_mean(token_entropy(logits),
                                                                                     response_mask)
    (PPO) loss = loss + cfg.algo.value_coef * value_loss(values, returns, row_mask)
    loss / n_micro_batches  → backward          # gradient accumulation (gigpo.md §9) is the trainer's job

``st`` holds ``actor/pg_loss``, ``actor/pg_clipfrac``, ``actor/pg_clipfrac_lower``, ``actor/ppo_kl``.
"""

from __future__ import annotations

import torch

from t2po_cli.tracking import keys

LOG_RATIO_CLAMP = 20.0
"""|log π_θ − log π_old| and |log π_ref − log π_θ| are clamped here before ``exp`` (gigpo.md §9, errata 8)."""
KL_CLAMP = 10.0
"""The k3 value is clamped to [−10, 10] (errata 8)."""
COUNT_EPS = 1e-8
"""Added to the token count of a token-mean (errata 9)."""


def token_logps(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log π(ids | prefix) per position: gather − logsumexp, in float32.

    Args:
        logits: ``[B, T, V]`` logits aligned with ``ids`` (row t predicts ``ids[:, t]``).
        ids: ``LongTensor[B, T]``.

    Returns:
        ``FloatTensor[B, T]``.
    """
    z = logits.float()
    picked = torch.gather(z, -1, ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(z, dim=-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy H = −Σ_v p log p (nats) per position, float32, with 0·log 0 = 0 (−inf logits).

    Args:
        logits: ``[B, T, V]``.

    Returns:
        ``FloatTensor[B, T]``.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)


def token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``token-mean`` aggregation: Σ_masked x / (#masked + 1e-8) (errata 9).

    Masked-out positions are dropped with ``where`` rather than multiplied by 0, so a NaN or inf there
    (garbage log-probs on padding) cannot poison the mean.

    Args:
        x: ``[...]``.
        mask: bool, same shape.

    Returns:
        A 0-d tensor (0 when nothing is masked in).
    """
    return torch.where(mask, x, torch.zeros_like(x)).sum() / (mask.sum() + COUNT_EPS)


def broadcast_to_tokens(row_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Copy a per-row value to each response token of the row, zero elsewhere (gigpo.md §7).

    Args:
        row_values: ``FloatTensor[B]``.
        mask: ``BoolTensor[B, T]``.

    Returns:
        ``FloatTensor[B, T]``.
    """
    return row_values.float().unsqueeze(-1) * mask.float()


def ppo_clip_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip_c: float | None = 3.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip with dual clip on negative advantages, token-mean (gigpo.md §9, errata 9).

        ρ      = exp(clamp(log π_θ − log π_old, −20, 20))
        L1     = −A·ρ;   L2 = −A·clip(ρ, 1 − ε_low, 1 + ε_high);   L_clip = max(L1, L2)
        L_tok  = min(L_clip, −c·A) if A < 0 else L_clip
        loss   = Σ_masked L_tok / (#masked + 1e-8)

    Args:
        logps: log π_θ, ``FloatTensor[B, T]`` (with gradient).
        old_logps: log π_old, ``FloatTensor[B, T]`` (recomputed by the training policy, gigpo.md §9).
        advantages: A per token, ``FloatTensor[B, T]``.
        mask: ``BoolTensor[B, T]``.
        clip_low: ε_low.
        clip_high: ε_high.
        dual_clip_c: c > 1; None disables the dual clip.

    Returns:
        (loss 0-d, stats): ``actor/pg_loss``; ``actor/pg_clipfrac`` (share of tokens where L2 > L1, the
        clip is active); ``actor/pg_clipfrac_lower`` (share where the dual clip is active); ``actor/ppo_kl``
        (token-mean of log π_old − log π_θ, clamped as ρ is).
    """
    neg_kl = torch.clamp(logps - old_logps.detach(), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(neg_kl)
    adv = advantages.detach()
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    l_clip = torch.maximum(l1, l2)
    per_token = l_clip
    lower_active = torch.zeros_like(mask)
    if dual_clip_c is not None:
        l3 = -adv * dual_clip_c
        per_token = torch.where(adv < 0, torch.minimum(l_clip, l3), l_clip)
        lower_active = (adv < 0) & (l_clip > l3)
    loss = token_mean(per_token, mask)
    with torch.no_grad():
        stats = {
            keys.PG_LOSS: float(loss),
            keys.PG_CLIPFRAC: float(token_mean((l2 > l1).float(), mask)),
            keys.PG_CLIPFRAC_LOWER: float(token_mean(lower_active.float(), mask)),
            keys.PPO_KL: float(token_mean(-neg_kl, mask)),
        }
    return loss, stats


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k3 ("low_var_kl") estimate of KL(π_θ ‖ π_ref) per token, with the errata 8 clamps.

        d  = clamp(log π_ref − log π_θ, −20, 20)
        k3 = clamp(exp(d) − d − 1, −10, 10)

    Args:
        logps: log π_θ, ``FloatTensor[B, T]``.
        ref_logps: log π_ref, ``FloatTensor[B, T]``.

    Returns:
        ``FloatTensor[B, T]`` (≥ 0 before the clamp).
    """
    d = torch.clamp(ref_logps.detach() - logps, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(d) - d - 1.0, -KL_CLAMP, KL_CLAMP)


def kl_loss(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean k3 KL to the reference (``actor/kl_loss``; weight ``trainer.kl_coef``).

    Args:
        logps: ``FloatTensor[B, T]``.
        ref_logps: ``FloatTensor[B, T]``.
        mask: ``BoolTensor[B, T]``.

    Returns:
        0-d tensor.
    """
    return token_mean(kl_k3(logps, ref_logps), mask)


def entropy_bonus(
    mask: torch.Tensor, *, logits: torch.Tensor | None = None, entropies: torch.Tensor | None = None
) -> torch.Tensor:
    """Token-mean entropy (``actor/entropy_loss``); the total loss subtracts ``entropy_coef ×`` this.

    Args:
        mask: ``BoolTensor[B, T]``.
        logits: ``[B, T, V]`` (entropy computed here), or
        entropies: precomputed ``FloatTensor[B, T]``. Exactly one must be given.

    Returns:
        0-d tensor.
    """
    if (logits is None) == (entropies is None):
        raise ValueError("entropy_bonus needs exactly one of logits= or entropies=")
    ent = token_entropy(logits) if logits is not None else entropies
    assert ent is not None
    return token_mean(ent, mask)


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    old_values: torch.Tensor | None = None,
    clip_range: float | None = None,
) -> torch.Tensor:
    """Critic loss ``critic/value_loss`` (PPO baseline, gigpo.md §8), masked mean.

        plain (default):  0.5 · (V − R)²
        clipped:          0.5 · max((V − R)², (clip(V, V_old − ε_v, V_old + ε_v) − R)²)

    Plain MSE is the default: the turn-level critic sees each row once per PPO epoch (one epoch in the
    recipes), so value clipping would only slow it; the clipped form (verl's) is kept for multi-epoch runs.

    Args:
        values: V_θ, ``FloatTensor[...]`` (one per row for turn-level GAE, or per token).
        returns: targets R (``AdvantageResult.returns``), same shape.
        mask: ``BoolTensor``, same shape.
        old_values: V at rollout time; required with ``clip_range``.
        clip_range: ε_v; None = plain MSE.

    Returns:
        0-d tensor.
    """
    target = returns.detach()
    err = (values - target) ** 2
    if clip_range is not None:
        if old_values is None:
            raise ValueError("a clipped value loss needs old_values")
        old = old_values.detach()
        clipped = old + torch.clamp(values - old, -clip_range, clip_range)
        err = torch.maximum(err, (clipped - target) ** 2)
    return 0.5 * token_mean(err, mask)
