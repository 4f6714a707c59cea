"""Turn a rollout into per-row advantages with the configured estimator (the math lives in ``algo/``).

GRPO, GiGPO and RLOO need only the rows. PPO first reads the value head on every row's last prompt state
(one no-grad forward). A2TGPO first measures the gold answer's log-prob after every row's prompt with the
forced-answer probe (one extra forward per turn, a2tgpo.md §2.1) and returns its adaptive turn-level clip
loss to use instead of the plain PPO-clip term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from t2po_cli.algo.advantages import AdvantageParams, RowBatch, compute_advantages
from t2po_cli.rollout.collector import Rollout, TurnRow
from t2po_cli.trainer.batching import micro_batches, pack_rows, response_logits

if TYPE_CHECKING:
    from t2po_cli.trainer.loop import Session


@dataclass
class StepAdvantages:
    """Advantages of one step and, for A2TGPO, the loss that replaces PPO-clip."""

    advantages: torch.Tensor
    returns: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)
    extra_loss: Callable[..., tuple[torch.Tensor, dict[str, float]]] | None = None


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


def compute_step_advantages(s: Session, rollout: Rollout) -> StepAdvantages:
    """Advantages for ``s.cfg.algo.name`` over the rollout's rows."""
    cfg = s.cfg
    rows = rollout.rows
    batch = row_batch(rows)
    if cfg.algo.name == "a2tgpo":
        return _a2tgpo(s, rollout, batch)
    values = row_values(s.policy, rows, cfg.trainer.micro_batch_rows) if cfg.algo.name == "ppo" else None
    res = compute_advantages(cfg.algo.name, batch, AdvantageParams.from_config(cfg.algo), values=values)
    return StepAdvantages(res.advantages, res.returns, dict(res.stats))


def _a2tgpo(s: Session, rollout: Rollout, batch: RowBatch) -> StepAdvantages:
    """IG probe on every row's prompt (next_prompt layout, a2tgpo.md §2.4), then the A2TGPO estimator."""
    from t2po_cli.algo import a2tgpo as A
    from t2po_cli.algo.ig_probe import forced_answer, gold_answer_logprobs
    from t2po_cli.algo.losses import broadcast_to_tokens
    from t2po_cli.algo.turn_clip import turn_clip_loss

    cfg, tok = s.cfg, s.policy.tokenizer
    p = A.params_from_config(cfg.a2tgpo)
    # §2.4 next_prompt: the assistant message starts fresh, so the think-open tag is prepended to the
    # prefix; the suffix ends with this model's end-of-turn token instead of Qwen's (§2.1).
    prefix = "<think>" + (s.family.forced_answer_prompt or "")
    suffix = "\n</answer>" + tok.decode([s.policy.eos_id])
    tasks = {ep.traj_id: ep.task for ep in rollout.episodes}
    forced: dict[int, object] = {}
    ctx_ids, ans_ids, masks = [], [], []
    for r in rollout.rows:
        task = tasks[r.traj_id]
        if not task.gold_answers:
            raise A.InformationGainError(f"task {task.index} of {task.env} has no gold answer")
        if r.traj_id not in forced:
            forced[r.traj_id] = forced_answer(tok, task.gold_answers[0], prefix, suffix)
        fa = forced[r.traj_id]
        ctx_ids.append(list(r.prompt_ids))
        ans_ids.append(fa.ids)  # type: ignore[attr-defined]
        masks.append(fa.gold_mask)  # type: ignore[attr-defined]
    ell = gold_answer_logprobs(s.policy.model, ctx_ids, ans_ids, s.policy.pad_id, score_mask=masks,
                               batch_size=cfg.trainer.micro_batch_rows)
    res = A.compute_a2tgpo_advantages(batch, ell, p)
    if res.warning:
        from t2po_cli.cli.console import err

        err.print(f"[yellow]a2tgpo:[/yellow] {res.warning}")
    traj = batch.traj_id

    def loss_fn(chunk: list[int], logps, old_logps, adv, mask):
        scale = broadcast_to_tokens(res.clip_scale[chunk].float(), mask)
        return turn_clip_loss(logps, old_logps, adv, scale, mask, p, traj_ids=traj[chunk])

    return StepAdvantages(res.advantages, res.advantages, dict(res.stats), extra_loss=loss_fn)
