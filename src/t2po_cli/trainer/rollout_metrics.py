"""Per-step rollout metrics (episode outcomes, lengths, signal, throughput, T2PO) from a ``Rollout``."""

from __future__ import annotations

from collections import defaultdict

import torch

from t2po_cli.config.schema import RunConfig
from t2po_cli.rollout.collector import Rollout
from t2po_cli.tracking import keys as K


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def zero_variance_group_rate(rollout: Rollout) -> float:
    """Share of task groups whose episodes all got the same reward (no learning signal for GRPO/GiGPO)."""
    groups: dict[int, list[float]] = defaultdict(list)
    for ep in rollout.episodes:
        groups[ep.group_id].append(ep.reward)
    if not groups:
        return float("nan")
    return sum(1 for rs in groups.values() if max(rs) == min(rs)) / len(groups)


def rollout_metrics(rollout: Rollout, cfg: RunConfig) -> dict[str, float]:
    """Episode, response, signal, throughput and T2PO metrics of one rollout (keys from tracking/keys.py)."""
    from t2po_cli.hooks.metrics import tti_metrics

    eps, rows = rollout.episodes, rollout.rows
    lengths = [len(r.response_ids) for r in rows]
    m: dict[str, float] = {
        K.SUCCESS_RATE: _mean([float(e.won) for e in eps]),
        K.REWARD_MEAN: _mean([e.reward for e in eps]),
        K.SCORE_MEAN: _mean([e.task_score for e in eps]),
        K.EPISODE_LENGTH: _mean([float(e.turns) for e in eps]),
        K.VALID_ACTION_RATIO: _mean([float(not r.invalid) for r in rows]),
        K.TOKENS_PER_EPISODE: _mean([float(e.tokens) for e in eps]),
        K.RESPONSE_LENGTH_MEAN: _mean([float(n) for n in lengths]),
        K.RESPONSE_LENGTH_MAX: float(max(lengths)) if lengths else float("nan"),
        K.RESPONSE_LENGTH_MIN: float(min(lengths)) if lengths else float("nan"),
        K.RESPONSE_CLIP_RATIO: _mean([float(r.finish_reason == "length") for r in rows]),
        K.ZERO_VARIANCE_GROUPS: zero_variance_group_rate(rollout),
        K.GENERATED_TOKENS: float(rollout.generated_tokens + rollout.extra_gen_tokens),
        K.TOKENS_PER_S: (rollout.generated_tokens + rollout.extra_gen_tokens) / max(rollout.gen_seconds, 1e-9),
    }
    if rows:
        signals = torch.cat([r.signals for r in rows]) if any(len(r.signals) for r in rows) else torch.empty(0)
        ents = torch.cat([r.entropies for r in rows]) if any(len(r.entropies) for r in rows) else torch.empty(0)
        if signals.numel():
            m[K.SIGNAL_MEAN] = float(torch.nan_to_num(signals.float(), nan=0.0).mean())
            m[K.ROLLOUT_ENTROPY] = float(ents.float().mean())
    reports = [r.hook_report for r in rows if r.hook_report]
    if reports:
        m.update(tti_metrics(reports, [r.turn for r in rows if r.hook_report], include_tti=cfg.t2po.tti.enabled))
    if rollout.hook_metrics:
        m.update(rollout.hook_metrics)
        m[K.TDS_TIME] = rollout.tds_seconds
    return m
