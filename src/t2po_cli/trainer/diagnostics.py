"""The ``diag/*`` metrics of one step (issue 17): the trainer's only writer of these keys.

The math lives in ``diag/signals.py``; this module gathers its inputs from the rollout, the advantages and
the policy. The update's own diagnostics (rollout/trainer mismatch, clip fractions) are measured inside the
update (``trainer/update.py``), where the trainer's log-probs exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from t2po_cli.diag import signals
from t2po_cli.rollout.collector import Rollout, TurnRow
from t2po_cli.tracking import keys as K
from t2po_cli.trainer.batching import micro_batches, pack_rows, response_logits


def pad_tokens(rows: Sequence[TurnRow], values: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-row token values ``FloatTensor[L_i]`` to ``[B, T]`` with the mask of real tokens."""
    t = max([len(r.response_ids) for r in rows] + [1])
    out = torch.zeros(len(rows), t)
    mask = torch.zeros(len(rows), t, dtype=torch.bool)
    for i, v in enumerate(values):
        n = int(v.numel())
        out[i, :n] = v.float()
        mask[i, :n] = True
    return out, mask


def rollout_diagnostics(rollout: Rollout, advantages: torch.Tensor) -> dict[str, float]:
    """Reward spread, zero-spread groups and the entropy–advantage covariance of one training rollout.

    Args:
        rollout: the step's rollout (rows and episodes).
        advantages: ``FloatTensor[N]`` per row of ``rollout.rows``.
    """
    rewards = torch.tensor([e.reward for e in rollout.episodes], dtype=torch.float64)
    groups = torch.tensor([e.group_id for e in rollout.episodes], dtype=torch.long)
    spread, zero = signals.reward_spread(rewards, groups)
    out = {K.DIAG_REWARD_SPREAD: spread, K.DIAG_ZERO_SPREAD_GROUPS: zero}
    idx = [i for i, r in enumerate(rollout.rows) if len(r.response_ids)]
    if idx:
        rows = [rollout.rows[i] for i in idx]
        logps, mask = pad_tokens(rows, [r.rollout_logps for r in rows])
        adv = advantages[idx].float().unsqueeze(-1) * mask.float()
        out[K.DIAG_ENTROPY_ADV_COV] = signals.entropy_adv_cov(logps, adv, mask)
    # nan = nothing to measure; left out, since the report counts nan metrics as broken steps.
    return {k: v for k, v in out.items() if math.isfinite(v)}


def grad_norm_z(history: Sequence[float], grad_norm: float | None, min_points: int) -> dict[str, float]:
    """``diag/grad_norm_z`` of this step's gradient norm against ``history`` ({} when no norm or no history).

    Steps with a zero gradient (every advantage 0: no learning signal) are left out of the history and not
    judged: against a history of zeros any update would be an infinite spike.
    """
    if not grad_norm:
        return {}
    z = signals.robust_z([g for g in history if g], grad_norm, min_points)
    return {} if math.isnan(z) else {K.DIAG_GRAD_NORM_Z: z}


def _pick(rows: Sequence[TurnRow], n: int, generator: torch.Generator) -> list[TurnRow]:
    """Up to ``n`` rows with distinct prompts and non-empty responses, in a seeded random order."""
    seen: set[tuple[int, ...]] = set()
    picked: list[TurnRow] = []
    for i in torch.randperm(len(rows), generator=generator).tolist():
        key = tuple(rows[i].prompt_ids)
        if len(rows[i].response_ids) and key not in seen:
            seen.add(key)
            picked.append(rows[i])
            if len(picked) == n:
                break
    return picked


@torch.no_grad()
def template_scores(model: torch.nn.Module, rows: Sequence[TurnRow], pad_id: int, micro: int) -> torch.Tensor:
    """``S[i, j]`` = (1/|r_i|) log p(r_i | x_j): every picked response under every picked prompt (N² rows).

    Returns:
        ``FloatTensor[N, N]``.
    """
    from t2po_cli.algo.losses import token_logps

    n = len(rows)
    pairs = [(i, j) for i in range(n) for j in range(n)]
    scores = torch.zeros(n, n)
    was_training = model.training
    model.eval()
    try:
        for chunk in micro_batches(list(range(len(pairs))), micro):
            batch = pack_rows([rows[pairs[k][1]].prompt_ids for k in chunk],
                              [rows[pairs[k][0]].response_ids for k in chunk], pad_id)
            logits, _ = response_logits(model, batch)
            lp = token_logps(logits, batch.response_ids) * batch.response_mask
            per_row = lp.sum(-1) / batch.response_mask.sum(-1).clamp(min=1)
            for c, k in enumerate(chunk):
                scores[pairs[k]] = per_row[c].float()
    finally:
        model.train(was_training)
    return scores


def template_diagnostics(model: torch.nn.Module, rollout: Rollout, n: int, pad_id: int, micro: int,
                         generator: torch.Generator) -> dict[str, float]:
    """``diag/template_mi`` and ``diag/template_retrieval_acc`` on ``n`` sampled rows ({} if fewer than 2)."""
    rows = _pick(rollout.rows, n, generator)
    if len(rows) < 2:
        return {}
    mi, acc = signals.template_mi(template_scores(model, rows, pad_id, micro))
    return {k: v for k, v in ((K.DIAG_TEMPLATE_MI, mi), (K.DIAG_TEMPLATE_RETRIEVAL_ACC, acc)) if math.isfinite(v)}
