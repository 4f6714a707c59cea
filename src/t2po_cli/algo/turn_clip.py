"""A²TGPO loss: turn-level ratio with adaptive clipping (a2tgpo.md §6), and the released token layout (§8).

Shapes: B rows, T response positions. ``mask`` is the loss mask (model tokens only; observation tokens and
padding are False, errata 19).

Public API::

    loss, stats = turn_clip_loss(logps, old_logps, advantages, clip_scale, mask, p,
                                 segment_ids=None, traj_ids=None)
    # released emulation on one growing assistant sequence (ig_context = trajectory, preset = released):
    points = released_measure_points(search_open, search_close)
    pos, ig = released_ig_points(points, point_logps, p)
    adv, c  = released_token_advantages(pos, ig_norm, outcome_norm, length, p)
    seg     = segments_from_advantage_runs(adv, mask)       # turn_spans = advantage_runs
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from t2po_cli.algo.a2tgpo import ig_from_points
from t2po_cli.tracking import keys

if TYPE_CHECKING:
    from t2po_cli.algo.estimators.a2tgpo import A2TGPOParams


def _segment_keys(mask: torch.Tensor, segment_ids: torch.Tensor | None) -> torch.Tensor:
    """A dense segment index for every masked token, ``LongTensor[M]`` (M = mask.sum())."""
    b, t = mask.shape
    rows = torch.arange(b).unsqueeze(-1).expand(b, t)
    if segment_ids is None:
        key = rows  # the row layout: one row = one turn
    else:
        width = int(segment_ids[mask].max()) + 1 if mask.any() else 1
        key = rows * width + segment_ids
    return torch.unique(key[mask], return_inverse=True)[1]


def turn_clip_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    clip_scale: torch.Tensor,
    mask: torch.Tensor,
    p: A2TGPOParams,
    segment_ids: torch.Tensor | None = None,
    traj_ids: torch.Tensor | None = None,
    straight_through: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Turn-level ratio loss with adaptive clip bounds (§6).

        r_{i,t} = exp(clamp(mean_{k ∈ y_t}(log π_θ(k) − log π_old(k)), max = 10))
        lower = 1 − c·ε_low,  upper = 1 + c·ε_high
        loss_k = max(−Â·r, −Â·clip(r, lower, upper))     for every token k of y_t

    ``straight_through`` (released): each token's log-ratio takes the turn mean as its value and keeps its
    own gradient, so Σ_k ∇loss_k = −Â·r·Σ_k ∇log π_θ(k); the direct form (each token carries r with the
    gradient of the mean) sums to the same gradient. No dual clip, KL or entropy term (§6).

    Args:
        logps: log π_θ, ``FloatTensor[B, T]``.
        old_logps: log π_old, ``FloatTensor[B, T]``.
        advantages: Â per token, ``FloatTensor[B, T]`` (constant within a turn).
        clip_scale: c per token, ``FloatTensor[B, T]``.
        mask: loss mask, ``BoolTensor[B, T]``.
        p: settings (``clip_eps_low``, ``clip_eps_high``, ``log_ratio_clamp``, ``loss_agg``).
        segment_ids: turn index per token for rows holding several turns (trajectory layout),
            ``LongTensor[B, T]``; None = each row is one turn.
        traj_ids: trajectory per row, ``LongTensor[B]``, for ``seq-mean-token-mean`` (None = one per row).
        straight_through: the released construction (true) or the direct exp(mean) form.

    Returns:
        (loss 0-d, stats): ``actor/pg_loss``, ``a2tgpo/pg_clipfrac_upper`` (Â > 0 and r > upper),
        ``a2tgpo/pg_clipfrac_lower`` (Â < 0 and r < lower), as token means.
    """
    seg = _segment_keys(mask, segment_ids)
    n_seg = int(seg.max()) + 1 if seg.numel() else 0
    log_ratio = (logps - old_logps.detach())[mask]
    count = torch.zeros(n_seg).index_add_(0, seg, torch.ones_like(log_ratio))
    seg_mean = torch.zeros(n_seg, dtype=log_ratio.dtype).index_add(0, seg, log_ratio) / count
    if straight_through:
        tok_lr = seg_mean[seg].detach() + log_ratio - log_ratio.detach()
    else:
        tok_lr = seg_mean[seg]
    if p.log_ratio_clamp is not None:
        tok_lr = torch.clamp(tok_lr, max=p.log_ratio_clamp)
    ratio = torch.exp(tok_lr)
    adv = advantages.detach()[mask]
    c = clip_scale.detach()[mask]
    lower, upper = 1.0 - c * p.clip_eps_low, 1.0 + c * p.clip_eps_high
    per_token = torch.maximum(-adv * ratio, -adv * torch.minimum(torch.maximum(ratio, lower), upper))
    loss = _aggregate(per_token, mask, p.loss_agg, traj_ids)
    n_tok = per_token.numel() + 1e-8
    with torch.no_grad():
        stats = {
            keys.PG_LOSS: float(loss),
            keys.A2TGPO_PG_CLIPFRAC_UPPER: float(((adv > 0) & (ratio > upper)).sum() / n_tok),
            keys.A2TGPO_PG_CLIPFRAC_LOWER: float(((adv < 0) & (ratio < lower)).sum() / n_tok),
        }
    return loss, stats


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_agg: str, traj_ids: torch.Tensor | None):
    """``token-mean`` or ``seq-mean-token-mean`` (§6, row 5) of the masked tokens' losses ``[M]``."""
    if loss_agg == "token-mean":
        return per_token.sum() / (per_token.numel() + 1e-8)
    if loss_agg != "seq-mean-token-mean":
        raise ValueError(f"loss_agg {loss_agg!r} is not 'token-mean' or 'seq-mean-token-mean'")
    b, t = mask.shape
    rows = traj_ids if traj_ids is not None else torch.arange(b)
    # In the row layout a "trajectory" is the set of rows sharing a trajectory id (§6).
    tok_traj = rows.unsqueeze(-1).expand(b, t)[mask]
    _, inv = torch.unique(tok_traj, return_inverse=True)
    n = int(inv.max()) + 1 if inv.numel() else 0
    if n == 0:
        return per_token.sum()
    sums = torch.zeros(n, dtype=per_token.dtype).index_add(0, inv, per_token)
    counts = torch.zeros(n).index_add_(0, inv, torch.ones_like(per_token))
    return (sums / counts).mean()


# --------------------------------------------------------------------------------------------------------
# Released token layout (§2.4, §8 rows 3, 4, 7-9)
# --------------------------------------------------------------------------------------------------------


def released_measure_points(search_open: list[int], search_close: list[int]) -> list[int]:
    """Released measurement points on one response (``ig_measure = released_cuts``, §2.4).

    With K search calls: point k (k = 0 … K−2) is the last token before the (k+2)-th ``<search>``, so it
    includes the (k+1)-th result and the reasoning after it; point K−1 is the last token of the K-th
    ``</search>`` (the last result is excluded).

    Args:
        search_open: token index of the first token of each ``<search>``, in order (length K).
        search_close: token index of the last token of each ``</search>`` (length K).

    Returns:
        K token positions.
    """
    if len(search_open) != len(search_close):
        raise ValueError("every <search> needs its </search>")
    k = len(search_open)
    return [search_open[j + 1] - 1 for j in range(k - 1)] + ([search_close[-1]] if k else [])


def released_ig_points(
    points: list[int], point_logps: torch.Tensor, p: A2TGPOParams
) -> tuple[list[int], torch.Tensor]:
    """IG values and their token positions on one response (released: §2.3 ``first_turn``, row 8).

    The first point seeds the baseline; IG_k = f(ℓ_k) − f(ℓ_{k−1}) sits at ``points[k]`` for k ≥ 1, so a
    single search call gives no IG. With ``ig_drop_zero`` an IG of exactly 0 disappears.

    Args:
        points: K measurement positions.
        point_logps: ℓ at each point, ``FloatTensor[K]``.
        p: settings (``ig_form``, ``ig_drop_zero``).

    Returns:
        (positions, IG ``FloatTensor[len(positions)]``).
    """
    if len(points) < 2:
        return [], torch.zeros(0)
    ig = ig_from_points(point_logps, p.ig_form)
    pos = points[1:]
    keep = [j for j in range(len(pos)) if not (p.ig_drop_zero and float(ig[j]) == 0.0)]
    return [pos[j] for j in keep], ig[keep]


def released_token_advantages(
    positions: list[int], ig_norm: torch.Tensor, outcome_norm: float, length: int, p: A2TGPOParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level Â and c of one response in the released layout (§8 row 9).

    Segment j covers the tokens after IG position j−1 up to and including position j (the first segment
    starts at token 0, so the first two search calls share it). Its advantage is λ·D_j/√n_j + R̂ with D and n
    accumulated over IG ordinals j … J−1, and its clip scale is c(îg_j). The tail after the last IG position
    (last result, final reasoning, answer) gets R̂ and c = 1.

    Args:
        positions: IG token positions (``released_ig_points``), increasing, length J.
        ig_norm: îg at those positions, ``FloatTensor[J]`` (normalised across the group by the caller).
        outcome_norm: R̂ of this response.
        length: response length L.
        p: settings (``gamma``, ``ig_weight``, ``variance_rescale``, ``clip_beta``, ``clip_adaptive``).

    Returns:
        (advantages, clip scale), each ``FloatTensor[L]``.
    """
    adv = torch.full((length,), float(outcome_norm))
    c = torch.ones(length)
    acc = 0.0
    start = [0] + [q + 1 for q in positions[:-1]]
    for j in reversed(range(len(positions))):
        acc = float(ig_norm[j]) + p.gamma * acc
        n = len(positions) - j
        scale = math.sqrt(n) if p.variance_rescale else 1.0
        adv[start[j] : positions[j] + 1] = p.ig_weight * acc / scale + outcome_norm
        if p.clip_adaptive:
            c[start[j] : positions[j] + 1] = 1.0 + p.clip_beta * (2.0 * torch.sigmoid(ig_norm[j]) - 1.0)
    return adv, c


def segments_from_advantage_runs(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Turn spans inferred as runs of equal advantage between adjacent masked tokens (§8 row 7, released).

    Two adjacent turns with equal advantage merge silently; that is the released behaviour being
    reproduced. Use recorded spans (``turn_spans = explicit``) otherwise.

    Args:
        advantages: ``FloatTensor[B, T]``.
        mask: ``BoolTensor[B, T]``.

    Returns:
        Segment index per token, ``LongTensor[B, T]`` (−1 outside the mask).
    """
    out = torch.full(advantages.shape, -1, dtype=torch.long)
    for b in range(advantages.shape[0]):
        seg, prev = -1, None
        for t in mask[b].nonzero().squeeze(-1).tolist():
            a = float(advantages[b, t])
            if prev is None or a != prev:
                seg += 1
            out[b, t], prev = seg, a
    return out
