"""Rollout-level T2PO metrics from the token hook's per-row reports (t2po.md §9).

The collector gathers the reports of the **accepted** sample of every environment-turn of a rollout (the
``hook_reports`` of each turn's final ``Generation``, after TDS) and calls ``tti_metrics`` once. The TDS
metrics come from ``DynamicalSampler.metrics()``. Validation rows take the ``val/`` prefix
(``tracking.keys.val``) at the caller.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from t2po_cli.hooks.tti import BUDGET, STAGNATION
from t2po_cli.tracking import keys


def tti_metrics(
    reports: Sequence[Mapping[str, Any]],
    turns: Sequence[int] | None = None,
    *,
    include_tti: bool = True,
) -> dict[str, float]:
    """Aggregate accepted-turn reports into ``t2po/tti/*`` and ``t2po/turn_score/*``.

    Args:
        reports: one ``ThinkingIntervention`` report per accepted environment-turn.
        turns: the turn index of each report; adds ``t2po/turn_score/by_turn/{t}`` when given.
        include_tti: False when only TDS runs (no forcing): then only the turn-score keys are returned.

    Returns:
        Metric dict. Keys whose denominator is zero (no turns, no think block, no stagnation event, no
        score) are left out rather than logged as 0.
    """
    out: dict[str, float] = {}
    n = len(reports)
    if n == 0:
        return out
    if include_tti:
        out.update(_intervention_metrics(reports))
    out.update(_score_metrics(reports, turns))
    return out


def _intervention_metrics(reports: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    n = float(len(reports))
    forced = [r["forced"] for r in reports]
    out = {
        # τ each accepted turn was generated with (constant when fixed; moves per call under tau=auto).
        keys.TTI_TAU: sum(float(r["tau"]) for r in reports) / n,
        keys.TTI_INTERVENTIONS_PER_TURN: sum(f[BUDGET] + f[STAGNATION] for f in forced) / n,
        keys.TTI_INTERVENTION_RATE: sum(1 for f in forced if f[BUDGET] + f[STAGNATION] > 0) / n,
        keys.TTI_BUDGET_RATE: sum(1 for f in forced if f[BUDGET] > 0) / n,
        keys.TTI_STAGNATION_RATE: sum(1 for f in forced if f[STAGNATION] > 0) / n,
        keys.TTI_TOKENS_SAVED_UPPER: float(sum(r["tokens_saved_upper"] for r in reports)),
        keys.TTI_UNCLOSED_THINK_RATE: sum(1 for r in reports if r["unclosed_think"]) / n,
    }
    # Think length over turns that opened a think block (a turn without one has no block to measure).
    think = [r["think_tokens"] for r in reports if r["has_think"]]
    if think:
        out[keys.TTI_THINK_TOKENS_MEAN] = sum(think) / len(think)
    at_stagnation = [tl for r in reports for _, kind, tl in r["interventions"] if kind == STAGNATION]
    if at_stagnation:
        out[keys.TTI_THINK_LEN_AT_INTERVENTION] = sum(at_stagnation) / len(at_stagnation)
    return out


def _score_metrics(reports: Sequence[Mapping[str, Any]], turns: Sequence[int] | None) -> dict[str, float]:
    scores = [r["turn_score"] for r in reports]
    present = [s for s in scores if s is not None]
    out = {keys.TURN_SCORE_MISSING_RATE: (len(scores) - len(present)) / len(scores)}
    if present:
        s = torch.tensor(present, dtype=torch.float64)
        out[keys.TURN_SCORE_MEAN] = float(s.mean())
        # Population std: a single score has spread 0, not NaN.
        out[keys.TURN_SCORE_STD] = float(s.std(correction=0))
    if turns is not None:
        if len(turns) != len(scores):
            raise ValueError(f"{len(turns)} turn indices for {len(scores)} reports")
        by_turn: dict[int, list[float]] = defaultdict(list)
        for t, score in zip(turns, scores, strict=True):
            if score is not None:
                by_turn[t].append(score)
        for t in sorted(by_turn):
            out[f"{keys.TURN_SCORE_BY_TURN}/{t}"] = sum(by_turn[t]) / len(by_turn[t])
    return out
