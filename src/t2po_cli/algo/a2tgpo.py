"""A²TGPO: information-gain turn advantages and adaptive turn-level clipping (a2tgpo.md, errata 17-21).

Row layout (``algo.a2tgpo.ig_context = next_prompt``, our default): one row per turn, rows of a trajectory are
turns 0 … T_i−1 (0-based), the last row is the answer turn. The gold-answer log-prob ℓ is measured once per
row on **that row's prompt** plus the forced answer (``algo.ig_probe``): row 0's prompt is the query-only
context (ℓ_{i,0}) and row k's prompt is the context through o_k (ℓ_{i,k}). Hence the IG of process turn
y_{k+1} (row k) is ℓ[row k+1] − ℓ[row k] (a2tgpo.md §2.1-2.3).

Public API (what the trainer loop calls)::

    p    = ESTIMATOR.settings(cfg.algo.a2tgpo)              # algo.estimators.a2tgpo: presets resolved (§8)
    ell  = ig_probe.gold_answer_logprobs(policy, ctx_ids, answer_ids, pad_id, score_mask=gold_masks)
    res  = compute_a2tgpo_advantages(rows, ell, p)           # rows: algo.advantages.RowBatch
    res.advantages [N], res.clip_scale [N], res.stats {a2tgpo/* key: float}, res.warning (str | None)
    loss, st = turn_clip_loss(logps, old_logps,
                              broadcast_to_tokens(res.advantages, mask),
                              broadcast_to_tokens(res.clip_scale, mask), mask, p, traj_ids=row_traj_ids)

Released token layout (``ig_context = trajectory`` with ``preset = released``, §8 rows 7-9) is emulated by
``released_measure_points`` → ``released_ig_points`` → ``released_token_advantages`` and
``segments_from_advantage_runs`` (pass the result as ``segment_ids`` to ``turn_clip_loss``).

Decisions (errata): padding is masked in the IG pass (17); IG is an explicit input and any failure raises
``InformationGainError`` (18); advantages and the loss both use the response/loss mask (19); logged IG
statistics are the true values (20); the paper's formulas are the reference (21).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from t2po_cli.algo.advantages import RowBatch, traj_order
from t2po_cli.tracking import keys as K

if TYPE_CHECKING:
    from t2po_cli.algo.estimators.a2tgpo import A2TGPOParams


class InformationGainError(RuntimeError):
    """The IG computation failed (non-finite or missing log-probs); never silently dropped (errata 18)."""


# --------------------------------------------------------------------------------------------------------
# §2 information gain
# --------------------------------------------------------------------------------------------------------


def ig_from_points(ell: torch.Tensor, form: str) -> torch.Tensor:
    """Differences of consecutive measurements of one trajectory (§2.2).

        log: ig_t = ℓ_t − ℓ_{t−1};    linear: ig_t = exp(ℓ_t) − exp(ℓ_{t−1})

    Args:
        ell: mean gold-token log-probs ℓ_0 … ℓ_K at consecutive points, ``FloatTensor[K+1]``.
        form: ``log`` or ``linear`` (``algo.a2tgpo.ig_form``).

    Returns:
        ig_1 … ig_K, ``FloatTensor[K]``.
    """
    if form == "log":
        x = ell.float()
    elif form == "linear":
        x = ell.float().exp()
    else:
        raise ValueError(f"IG form {form!r} is not 'log' or 'linear'")
    return x[1:] - x[:-1]


def information_gain(
    gold_logps: torch.Tensor, traj_id: torch.Tensor, turn: torch.Tensor, p: A2TGPOParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw IG per row in the row layout (§2.2-2.3, rows 3 and 8).

    Row k (turn y_{k+1}) of a trajectory with T rows gets ig = f(ℓ[row k+1]) − f(ℓ[row k]) for
    k = 0 … T−2; the answer row (k = T−1) has none. With ``ig_baseline = first_turn`` the first point only
    seeds the baseline, so row 0 gets no IG (one search call → no IG at all). With ``ig_drop_zero`` an IG of
    exactly 0 is dropped, as the released code finds IG positions as non-zero rewards.

    Args:
        gold_logps: ℓ per row (measured on the row's prompt), ``FloatTensor[N]``.
        traj_id: ``LongTensor[N]``.
        turn: ``LongTensor[N]``.
        p: settings (``ig_form``, ``ig_baseline``, ``ig_drop_zero``).

    Returns:
        (ig ``FloatTensor[N]``, 0 where absent; has_ig ``BoolTensor[N]``).

    Raises:
        InformationGainError: a log-prob is NaN or +inf (errata 18).
    """
    ell = gold_logps.float()
    if torch.isnan(ell).any() or torch.isposinf(ell).any():
        raise InformationGainError(f"IG pass returned non-finite gold log-probs: {ell.tolist()}")
    ig = torch.zeros_like(ell)
    has = torch.zeros(ell.shape, dtype=torch.bool)
    order = traj_order(traj_id, turn)
    tids = traj_id[order]
    for tid in torch.unique_consecutive(tids).tolist():
        idx = order[tids == tid]
        if idx.numel() < 2:
            continue  # zero tool calls: only the answer turn
        vals = ig_from_points(ell[idx], p.ig_form)
        if not torch.isfinite(vals).all():
            raise InformationGainError(f"IG of trajectory {tid} is not finite: {vals.tolist()}")
        ig[idx[:-1]] = vals
        has[idx[:-1]] = True
        if p.ig_baseline == "first_turn":
            has[idx[0]] = False
            ig[idx[0]] = 0.0
        elif p.ig_baseline != "query":
            raise ValueError(f"ig_baseline {p.ig_baseline!r} is not 'query' or 'first_turn'")
    if p.ig_drop_zero:
        has &= ig != 0
    return ig, has


def ig_ordinal(has_ig: torch.Tensor, traj_id: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Position of each IG value among its trajectory's IG values (0-based; −1 where none), ``LongTensor[N]``.

    The turn-group key is (prompt uid, ordinal): equal to the process-turn index up to a shift unless zero
    IG values are dropped, where it reproduces the released key (§3).
    """
    out = torch.full(has_ig.shape, -1, dtype=torch.long)
    count, prev = 0, None
    for i in traj_order(traj_id, turn).tolist():
        tid = int(traj_id[i])
        if tid != prev:
            count, prev = 0, tid
        if has_ig[i]:
            out[i] = count
            count += 1
    return out


# --------------------------------------------------------------------------------------------------------
# §3-4 normalisation
# --------------------------------------------------------------------------------------------------------


def population_zscore(
    values: torch.Tensor, keys: torch.Tensor, var_eps: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group z-score with the population std (§3, App. Eq. 21).

        σ = sqrt((1/|G|)·Σ (x − μ)² + ε_var);   z = (x − μ) / (σ + ε);   |G| ≤ 1 → z = 0

    Args:
        values: ``FloatTensor[M]``.
        keys: group per value, ``LongTensor[M]``.
        var_eps: ε_var.
        eps: ε.

    Returns:
        (z, s, |G|), each ``[M]``: s = sqrt((1/|G|)·Σ(x − μ)²) is the group's raw population std, without
        ε_var (with ε_var = 1e-8 the σ above never drops below 1e-4, which would hide the §2.2 collapse).
    """
    if values.numel() == 0:
        return values.float(), values.float(), values.float()
    _, inv = torch.unique(keys, return_inverse=True)
    n = int(inv.max()) + 1
    v = values.double()
    count = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, torch.ones_like(v))
    mean = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, v) / count
    var = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, (v - mean[inv]) ** 2) / count
    std = (var + var_eps).sqrt()
    z = torch.where(count[inv] > 1, (v - mean[inv]) / (std[inv] + eps), torch.zeros_like(v))
    return z.float(), var.sqrt()[inv].float(), count[inv].float()


def turn_group_normalize(
    ig: torch.Tensor, has_ig: torch.Tensor, group_id: torch.Tensor, ordinal: torch.Tensor, p: A2TGPOParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """îg: IG z-scored within (prompt uid, IG ordinal) groups (§3). Rows without IG get 0.

    Args:
        ig: raw IG, ``FloatTensor[N]``.
        has_ig: ``BoolTensor[N]``.
        group_id: prompt uid, ``LongTensor[N]``.
        ordinal: ``ig_ordinal`` output, ``LongTensor[N]``.
        p: settings (``norm_var_eps``, ``norm_eps``).

    Returns:
        (îg ``[N]``, raw population std of G_{q,t} ``[N]``, |G_{q,t}| ``[N]``; std and size are 0 where no
        IG).
    """
    sel = has_ig.nonzero().squeeze(-1)
    # One key per (uid, ordinal); ordinal < N so the product key cannot collide.
    key = group_id[sel] * (len(ig) + 1) + ordinal[sel]
    z, std, count = population_zscore(ig[sel], key, p.norm_var_eps, p.norm_eps)
    out = [torch.zeros(ig.shape) for _ in range(3)]
    for buf, val in zip(out, (z, std, count), strict=True):
        buf[sel] = val
    return out[0], out[1], out[2]


def outcome_normalize(rows: RowBatch, p: A2TGPOParams) -> torch.Tensor:
    """R̂: per-prompt z-score of the outcome R_i over the G rollouts of q (§4), broadcast to the rows.

    Args:
        rows: the batch (``episode_reward`` is R_i on every row of trajectory i).
        p: settings (``norm_var_eps``, ``norm_eps``).

    Returns:
        R̂ per row, ``FloatTensor[N]``.
    """
    traj, tinv = torch.unique(rows.traj_id, return_inverse=True)
    first = torch.zeros(traj.numel(), dtype=torch.long).scatter_(0, tinv.flip(0), torch.arange(len(rows)).flip(0))
    z, _, _ = population_zscore(rows.episode_reward[first], rows.group_id[first], p.norm_var_eps, p.norm_eps)
    return z[tinv]


# --------------------------------------------------------------------------------------------------------
# §5 advantage, §6 clip scale
# --------------------------------------------------------------------------------------------------------


def accumulate_advantages(
    ig_norm: torch.Tensor,
    has_ig: torch.Tensor,
    outcome_norm: torch.Tensor,
    traj_id: torch.Tensor,
    turn: torch.Tensor,
    p: A2TGPOParams,
) -> torch.Tensor:
    """Variance-rescaled discounted accumulation (§5).

        D_{i,t} = Σ_{k=t}^{T_i−1} γ^{k−t} · îg_{i,k};   n_{i,t} = number of accumulated IG terms
        Â_{i,t} = λ · D_{i,t} / √n_{i,t} + R̂_i          (λ·D without √n when variance_rescale is off)
        Â_{i,t} = R̂_i                                   when n_{i,t} = 0 (the answer turn)

    The sum runs over IG ordinals, so n = T_i − t when every process turn has an IG. A turn without IG
    (``first_turn`` row 0, a dropped zero) takes the accumulation of the later turns: it merges into the
    next span, as in the released layout (§8 rows 8-9).

    Args:
        ig_norm: îg, ``FloatTensor[N]``.
        has_ig: ``BoolTensor[N]``.
        outcome_norm: R̂ per row, ``FloatTensor[N]``.
        traj_id: ``LongTensor[N]``.
        turn: ``LongTensor[N]``.
        p: settings (``gamma``, ``ig_weight``, ``variance_rescale``).

    Returns:
        Â, ``FloatTensor[N]``.
    """
    adv = outcome_norm.float().clone()
    acc, n, prev = 0.0, 0, None
    for i in reversed(traj_order(traj_id, turn).tolist()):
        tid = int(traj_id[i])
        if tid != prev:
            acc, n, prev = 0.0, 0, tid
        if has_ig[i]:
            acc = float(ig_norm[i]) + p.gamma * acc
            n += 1
        if n:
            scale = math.sqrt(n) if p.variance_rescale else 1.0
            adv[i] += p.ig_weight * acc / scale
    return adv


def clip_scale(ig_norm: torch.Tensor, has_ig: torch.Tensor, p: A2TGPOParams) -> torch.Tensor:
    """Adaptive clip scale c = 1 + β·(2·sigmoid(îg) − 1) for process turns, 1 elsewhere (§6).

    c(0) = 1, c ∈ (1 − β, 1 + β). The answer turn and turns without IG get c = 1; ``clip_adaptive = false``
    gives c ≡ 1. c carries no gradient.

    Args:
        ig_norm: îg, ``FloatTensor[N]`` (any shape).
        has_ig: ``BoolTensor``, same shape.
        p: settings (``clip_beta``, ``clip_adaptive``).

    Returns:
        c, same shape.
    """
    c = 1.0 + p.clip_beta * (2.0 * torch.sigmoid(ig_norm.detach().float()) - 1.0)
    if not p.clip_adaptive:
        return torch.ones_like(c)
    return torch.where(has_ig, c, torch.ones_like(c))


# --------------------------------------------------------------------------------------------------------
# Entry point and §9 metrics
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class A2TGPOResult:
    """Per-row outputs of ``compute_a2tgpo_advantages``; every tensor is ``[N]``.

    Attributes:
        advantages: Â (stop-gradient), broadcast to the row's model tokens by the trainer.
        clip_scale: c of the row's turn (1 for the answer turn).
        ig_raw: raw IG (0 where ``has_ig`` is False).
        ig_norm: îg (0 where ``has_ig`` is False or the turn group is a singleton).
        has_ig: True for process turns that carry an IG.
        outcome_norm: R̂ of the row's trajectory.
        stats: ``a2tgpo/*`` metric key → value (true values, errata 20).
        warning: set when the median raw IG turn-group std (groups of size ≥ 2, without ε_var) is below
            10·ε (§2.2): the epsilons dominate and the process signal collapses towards 0.
    """

    advantages: torch.Tensor
    clip_scale: torch.Tensor
    ig_raw: torch.Tensor
    ig_norm: torch.Tensor
    has_ig: torch.Tensor
    outcome_norm: torch.Tensor
    stats: dict[str, float]
    warning: str | None


def compute_a2tgpo_advantages(rows: RowBatch, gold_logps: torch.Tensor, p: A2TGPOParams) -> A2TGPOResult:
    """A²TGPO advantages and clip scales for the row layout (§2-§6, explicit turn spans).

    Args:
        rows: the batch; ``group_id`` is the prompt uid, ``episode_reward`` the outcome R_i.
        gold_logps: ℓ per row, measured on the row's prompt (``ig_probe.gold_answer_logprobs``),
            ``FloatTensor[N]``.
        p: resolved settings.

    Returns:
        ``A2TGPOResult``.

    Raises:
        InformationGainError: non-finite IG inputs (errata 18).
        ValueError: a token-layout-only setting (``released_cuts``, ``advantage_runs``) in the row layout.
    """
    if gold_logps.shape != rows.episode_reward.shape:
        raise InformationGainError(f"need one gold log-prob per row: {tuple(gold_logps.shape)} vs {len(rows)} rows")
    if p.ig_measure != "after_observation" or p.turn_spans != "explicit":
        raise ValueError(
            "ig_measure=released_cuts and turn_spans=advantage_runs exist only in the trajectory token layout; "
            "use released_token_advantages / segments_from_advantage_runs, or set them explicitly"
        )
    ig, has_ig = information_gain(gold_logps, rows.traj_id, rows.turn, p)
    ordinal = ig_ordinal(has_ig, rows.traj_id, rows.turn)
    ig_norm, group_std, group_size = turn_group_normalize(ig, has_ig, rows.group_id, ordinal, p)
    outcome = outcome_normalize(rows, p)
    adv = accumulate_advantages(ig_norm, has_ig, outcome, rows.traj_id, rows.turn, p)
    c = clip_scale(ig_norm, has_ig, p)
    stats = a2tgpo_stats(rows, ig, has_ig, ig_norm, group_std, group_size, ordinal, c, outcome, adv)
    median = stats.get(K.A2TGPO_IG_RAW_GROUP_STD_MEDIAN)
    warning = None
    if median is not None and median < 10 * p.norm_eps:
        warning = (
            f"a2tgpo: median IG turn-group std {median:.3g} < 10·eps = {10 * p.norm_eps:.3g}; the process signal "
            f"is collapsing to 0 (ig_form={p.ig_form}; the log form gives larger IG, a2tgpo.md §2.2)"
        )
    return A2TGPOResult(adv, c, ig, ig_norm, has_ig, outcome, stats, warning)


def _moments(prefix: str, x: torch.Tensor, which: tuple[str, ...] = ("mean", "std")) -> dict[str, float]:
    """Population moments of a 1-D tensor under ``prefix/{mean,std,min,max}``; empty input gives {}."""
    if x.numel() == 0:
        return {}
    x = x.float()
    fns = {"mean": x.mean, "std": lambda: x.std(unbiased=False), "min": x.min, "max": x.max}
    return {f"{prefix}/{k}": float(fns[k]()) for k in which}


def _by_turn(prefix: str, x: torch.Tensor, turn: torch.Tensor) -> dict[str, float]:
    """Mean of ``x`` per turn under ``prefix/by_turn/{t}``, t = 1-based turn index (the paper's t)."""
    return {f"{prefix}/by_turn/{int(k) + 1}": float(x[turn == k].float().mean()) for k in torch.unique(turn)}


def a2tgpo_stats(
    rows: RowBatch,
    ig: torch.Tensor,
    has_ig: torch.Tensor,
    ig_norm: torch.Tensor,
    group_std: torch.Tensor,
    group_size: torch.Tensor,
    ordinal: torch.Tensor,
    c: torch.Tensor,
    outcome: torch.Tensor,
    adv: torch.Tensor,
) -> dict[str, float]:
    """The a2tgpo.md §9 metrics (all ``[N]`` inputs as in ``A2TGPOResult``); clip scale over IG turns' rows."""
    sel = has_ig
    stats: dict[str, float] = {}
    stats |= _moments(K.A2TGPO_IG_RAW, ig[sel]) | _by_turn(K.A2TGPO_IG_RAW, ig[sel], rows.turn[sel])
    stats |= _moments(K.A2TGPO_IG_NORM, ig_norm[sel]) | _by_turn(K.A2TGPO_IG_NORM, ig_norm[sel], rows.turn[sel])
    # One entry per (uid, ordinal) group: the group's first row.
    keys = rows.group_id[sel] * (len(rows) + 1) + ordinal[sel]
    uniq, inv = torch.unique(keys, return_inverse=True)
    first = torch.zeros(uniq.numel(), dtype=torch.long).scatter_(0, inv.flip(0), torch.arange(keys.numel()).flip(0))
    g_std, g_size = group_std[sel][first], group_size[sel][first]
    stats[K.A2TGPO_SINGLETON_TURN_GROUPS] = float((g_size <= 1).sum())
    if (g_size > 1).any():
        stats[K.A2TGPO_IG_RAW_GROUP_STD_MEDIAN] = float(g_std[g_size > 1].median())
    stats |= _moments(K.A2TGPO_CLIP_SCALE, c[sel], ("mean", "std", "min", "max"))
    stats |= _moments(K.A2TGPO_ADV, adv, ("mean", "min", "max")) | _by_turn(K.A2TGPO_ADV, adv, rows.turn)
    traj, tinv = torch.unique(rows.traj_id, return_inverse=True)
    turns = torch.zeros(traj.numel()).index_add_(0, tinv, torch.ones(len(rows)))
    tfirst = torch.zeros(traj.numel(), dtype=torch.long).scatter_(0, tinv.flip(0), torch.arange(len(rows)).flip(0))
    stats |= _moments(K.A2TGPO_OUTCOME_NORM, outcome[tfirst])
    stats[K.A2TGPO_TURNS_PER_TRAJ_MEAN] = float(turns.mean())
    # A trajectory of one turn made no tool call (App. C.4).
    stats[K.A2TGPO_ZERO_CALL_RATE] = float((turns == 1).float().mean())
    return stats
