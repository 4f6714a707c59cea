"""Turn a rollout into per-row advantages with the configured estimator (the math lives in ``algo/``).

The estimator is looked up by ``algo.name`` in ``algo.registry``; this module never names one. It provides
what an estimator declares it needs: V(s_t) from the value head (``needs_values``: one no-grad forward over
every row's prompt), or the gold answer's log-prob after every row's prompt from the forced-answer probe
(``needs_gold_answers``: one extra forward per turn, a2tgpo.md §2.1).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from t2po_cli.algo.advantages import RowBatch
from t2po_cli.algo.registry import EstimatorInputs, EstimatorOutput, get_estimator
from t2po_cli.rollout.collector import Rollout, TurnRow
from t2po_cli.tracking import keys as K
from t2po_cli.trainer.batching import micro_batches, pack_rows, response_logits

if TYPE_CHECKING:
    from t2po_cli.trainer.loop import Session


def row_batch(rows: list[TurnRow]) -> RowBatch:
    """The estimator's view of the rows (gigpo.md §1)."""
    return RowBatch(
        episode_reward=torch.tensor([r.episode_reward for r in rows], dtype=torch.float32),
        step_reward=torch.tensor([r.reward for r in rows], dtype=torch.float32),
        group_id=torch.tensor([r.group_id for r in rows], dtype=torch.long),
        traj_id=torch.tensor([r.traj_id for r in rows], dtype=torch.long),
        turn=torch.tensor([r.turn for r in rows], dtype=torch.long),
        invalid=torch.tensor([r.invalid for r in rows], dtype=torch.bool),
        anchor_obs=[r.anchor_obs for r in rows],
    )


@torch.no_grad()
def row_values(policy: Any, rows: list[TurnRow], micro: int) -> torch.Tensor:
    """V(s_t) per row from the value head on the last prompt token's hidden state, ``FloatTensor[N]``."""
    out = torch.zeros(len(rows))
    for chunk in micro_batches(list(range(len(rows))), micro):
        packed = pack_rows([rows[i].prompt_ids for i in chunk], [rows[i].response_ids for i in chunk], policy.pad_id)
        _, hidden = response_logits(policy.model, packed, want_hidden=True)
        out[chunk] = policy.value_head(hidden).float().reshape(-1)
    return out


def gold_answer_logps(s: Session, rollout: Rollout) -> torch.Tensor:
    """ℓ per row: the gold answer's log-prob after the row's prompt with the family's forced-answer text
    (next_prompt layout, a2tgpo.md §2.1, §2.4), ``FloatTensor[N]``."""
    from t2po_cli.algo.a2tgpo import InformationGainError
    from t2po_cli.algo.ig_probe import forced_answer, gold_answer_logprobs

    tok = s.policy.tokenizer
    # §2.4 next_prompt: the assistant message starts fresh, so the think-open tag is prepended to the
    # prefix; the suffix ends with this model's end-of-turn token instead of Qwen's (§2.1).
    prefix = "<think>" + (s.family.forced_answer_prompt or "")
    suffix = "\n</answer>" + tok.decode([s.policy.eos_id])
    tasks = {ep.traj_id: ep.task for ep in rollout.episodes}
    forced: dict[int, Any] = {}
    ctx_ids, ans_ids, masks = [], [], []
    for r in rollout.rows:
        task = tasks[r.traj_id]
        if not task.gold_answers:
            raise InformationGainError(f"task {task.index} of {task.env} has no gold answer")
        if r.traj_id not in forced:
            forced[r.traj_id] = forced_answer(tok, task.gold_answers[0], prefix, suffix)
        fa = forced[r.traj_id]
        ctx_ids.append(list(r.prompt_ids))
        ans_ids.append(fa.ids)
        masks.append(fa.gold_mask)
    return gold_answer_logprobs(s.policy.model, ctx_ids, ans_ids, s.policy.pad_id, score_mask=masks,
                                batch_size=s.cfg.trainer.micro_batch_rows)


def compute_step_advantages(s: Session, rollout: Rollout) -> EstimatorOutput:
    """Advantages of ``algo.name`` over the rollout's rows, with the inputs the estimator declares."""
    cfg = s.cfg
    estimator = get_estimator(cfg.algo.name)
    values = gold = None
    stats: dict[str, float] = {}
    if estimator.needs_values:
        values = row_values(s.policy, rollout.rows, cfg.trainer.micro_batch_rows)
    if estimator.needs_gold_answers:
        t0 = time.perf_counter()
        gold = gold_answer_logps(s, rollout)
        stats[K.A2TGPO_IG_FORWARD_TIME] = time.perf_counter() - t0
    inputs = EstimatorInputs(row_batch(rollout.rows), cfg.algo.penalty, values=values, gold_logps=gold)
    out = estimator.advantages(inputs, estimator.settings(getattr(cfg.algo, estimator.name)))
    out.stats = {**out.stats, **stats}
    return out
