"""The policy update of one RL step: PPO epochs × mini-batches × micro-batches (gigpo.md §9).

Each mini-batch is one optimiser step; micro-batch losses are scaled by 1 / (number of micro-batches) for
gradient accumulation. With one epoch and one mini-batch, π_old is the detached current log-prob (exactly
the sampling policy); otherwise π_old is recomputed once, before the first optimiser step, by a no-grad
forward of the training policy (t2po.md §3.5: the forced token is then trained with its natural probability).
A non-finite loss or gradient norm skips the optimiser step and is counted, never applied.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from t2po_cli.algo import losses as L
from t2po_cli.algo.registry import PolicyLoss
from t2po_cli.config.schema import RunConfig
from t2po_cli.diag import signals
from t2po_cli.rollout.collector import TurnRow
from t2po_cli.tracking import keys as K
from t2po_cli.trainer import distributed as D
from t2po_cli.trainer.batching import PackedBatch, micro_batches, pack_rows, response_logits


@dataclass
class UpdateContext:
    """What the update needs besides the rows.

    Attributes:
        model: the policy (peft-wrapped under LoRA).
        optimizer: AdamW over the trainable parameters.
        params: the trainable parameters (for clipping and the finiteness check).
        pad_id: padding id.
        value_head: PPO critic head on the last prompt hidden state, or None.
        reference: context manager factory yielding the module that computes reference logits (LoRA:
            ``model.disable_adapter``), or None when no KL term is used.
        value_coef: weight of the value loss when ``value_head`` is set (the critic estimator's setting).
        world: the ranks (``distributed.SINGLE`` for one process without a group); ``model`` is then the
            DDP wrapper or the FSDP2-sharded model.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    pad_id: int
    value_head: torch.nn.Module | None = None
    reference: Callable[[], contextlib.AbstractContextManager] | None = None
    value_coef: float = 0.0
    world: D.World = D.SINGLE
    skipped_total: int = 0
    nonfinite_total: int = 0
    stats: dict[str, list[float]] = field(default_factory=dict)


def _loss_mask(row: TurnRow, mask_forced: bool) -> torch.Tensor:
    keep = torch.ones(len(row.response_ids), dtype=torch.bool)
    if mask_forced:
        keep &= ~row.forced_mask  # t2po.tti.mask_forced_tokens: ablation only (t2po.md §3.5)
    return keep


def _packed(rows: list[TurnRow], idx: list[int], pad_id: int, mask_forced: bool) -> PackedBatch:
    batch = pack_rows([rows[i].prompt_ids for i in idx], [rows[i].response_ids for i in idx], pad_id)
    for j, i in enumerate(idx):
        n = len(rows[i].response_ids)
        batch.response_mask[j, :n] &= _loss_mask(rows[i], mask_forced)
    return batch


def _trainable_rows(rows: list[TurnRow]) -> list[int]:
    # Rows without response tokens count in the advantage statistics but get no loss (errata 10).
    return [i for i, r in enumerate(rows) if len(r.response_ids) > 0]


@torch.no_grad()
def _old_logps(ctx: UpdateContext, rows: list[TurnRow], idx: list[int], micro: int, mask_forced: bool
               ) -> dict[int, torch.Tensor]:
    out: dict[int, torch.Tensor] = {}
    for chunk in micro_batches(idx, micro):
        batch = _packed(rows, chunk, ctx.pad_id, mask_forced)
        logits, _ = response_logits(ctx.model, batch)
        lp = L.token_logps(logits, batch.response_ids)
        for j, i in enumerate(chunk):
            out[i] = lp[j]
    return out


def _mini_batches(idx: list[int], cfg: RunConfig, num_rows_total: int) -> Iterator[list[int]]:
    size = cfg.trainer.mini_batch_rows
    if not size:
        yield idx
        return
    # mini_batch_rows counts episodes' worth of rows per optimiser step in the released recipes; here it is
    # rows of this step, split evenly so every mini-batch is one optimiser step.
    n_mb = max(1, round(num_rows_total / size))
    per = math.ceil(len(idx) / n_mb)
    for k in range(0, len(idx), per):
        yield idx[k : k + per]


def _diagnostics(
    rows: list[TurnRow],
    chunk: list[int],
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    cfg: RunConfig,
    before_update: bool,
) -> dict[str, float]:
    """Clip fractions by side, and (on the trainer's log-probs from before any optimiser step of this update)
    the rollout/trainer mismatch against the engine's log-probs of the same tokens (diag/signals.py)."""
    low, high = signals.clip_fractions(logps.detach(), old_logps, adv, mask, cfg.algo.clip_low, cfg.algo.clip_high)
    out = {K.DIAG_CLIP_FRAC_LOW: low, K.DIAG_CLIP_FRAC_HIGH: high}
    if before_update:
        # π_old is the trainer's pre-update forward (recomputed, or the detached current log-prob on the
        # single-pass path): the engine sampled from the same weights, so any gap is numerics or staleness.
        roll = torch.zeros_like(old_logps)
        for j, i in enumerate(chunk):
            n = min(len(rows[i].rollout_logps), roll.shape[1])
            roll[j, :n] = rows[i].rollout_logps[:n].float()
        mis, mult = signals.logp_mismatch(roll, old_logps.detach(), mask)
        out.update({K.DIAG_LOGP_MISMATCH: mis, K.DIAG_LOGP_MULT_ERROR: mult})
    # nan = nothing to measure (every token masked); leave it out: the report counts nan metrics as broken steps.
    return {k: v for k, v in out.items() if math.isfinite(v)}


def policy_update(
    ctx: UpdateContext,
    rows: list[TurnRow],
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: RunConfig,
    *,
    policy_loss: PolicyLoss | None = None,
    nan_injector: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Run the PPO epochs over this step's rows and return the update metrics.

    Args:
        ctx: model, optimizer and options.
        rows: the step's turn rows (N).
        advantages: ``FloatTensor[N]`` per row.
        returns: ``FloatTensor[N]`` value targets (PPO) per row.
        cfg: run config (read only).
        policy_loss: the estimator's replacement for the PPO-clip term (A²TGPO's turn-level clip), or None.
        nan_injector: test hook that may corrupt the loss (reliability tests).
    """
    if ctx.world.active:
        return _distributed_update(ctx, rows, advantages, returns, cfg, policy_loss, nan_injector)
    t = cfg.trainer
    idx = _trainable_rows(rows)
    ctx.stats = {}
    skipped = nonfinite = 0
    if not idx:
        return {K.SKIPPED_STEPS: float(ctx.skipped_total)}
    mask_forced = cfg.t2po.tti.mask_forced_tokens
    mbs = list(_mini_batches(idx, cfg, len(rows)))
    reuse_current = t.ppo_epochs == 1 and len(mbs) == 1
    old = {} if reuse_current else _old_logps(ctx, rows, idx, t.micro_batch_rows, mask_forced)
    ctx.model.train()
    for epoch in range(t.ppo_epochs):
        for mb in mbs:
            ctx.optimizer.zero_grad(set_to_none=True)
            chunks = micro_batches(mb, t.micro_batch_rows)
            finite = True
            for chunk in chunks:
                loss = _micro_loss(ctx, rows, chunk, advantages, returns, old, cfg, mask_forced, policy_loss,
                                   before_update=epoch == 0)
                if nan_injector is not None:
                    loss = nan_injector(loss)
                if not torch.isfinite(loss):
                    finite = False
                    break
                (loss / len(chunks)).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(ctx.params, t.grad_clip) if finite else torch.tensor(math.nan)
            dropped, bad_grad = _apply_update(ctx, finite, grad_norm, t.nan_guard)
            skipped, nonfinite = skipped + dropped, nonfinite + bad_grad
    return _finish(ctx, skipped, nonfinite)


def _apply_update(ctx: UpdateContext, finite: bool, grad_norm: torch.Tensor, nan_guard: bool) -> tuple[int, int]:
    """Step the optimizer when the loss and the gradient are finite; otherwise drop the gradient.

    Returns:
        (skipped, nonfinite): 1 and 0/1 for a dropped update (nonfinite: finite loss but non-finite gradient).
    """
    if not finite or not torch.isfinite(grad_norm):
        # Never apply a non-finite update (gigpo.md §9 "our implementation adds"); count it instead.
        ctx.optimizer.zero_grad(set_to_none=True)
        if not nan_guard:
            raise FloatingPointError("non-finite loss or gradient and trainer.nan_guard=false")
        return 1, int(finite)
    ctx.optimizer.step()
    ctx.stats.setdefault(K.GRAD_NORM, []).append(float(grad_norm))
    return 0, 0


def _finish(ctx: UpdateContext, skipped: int, nonfinite: int) -> dict[str, float]:
    ctx.skipped_total += skipped
    ctx.nonfinite_total += nonfinite
    metrics = {k: sum(v) / len(v) for k, v in ctx.stats.items() if v}
    metrics[K.SKIPPED_STEPS] = float(ctx.skipped_total)
    metrics[K.GRAD_NORM_NONFINITE] = float(ctx.nonfinite_total)
    metrics[K.LR] = float(ctx.optimizer.param_groups[0]["lr"])
    return metrics


def _micro_loss(
    ctx: UpdateContext,
    rows: list[TurnRow],
    chunk: list[int],
    advantages: torch.Tensor,
    returns: torch.Tensor,
    old: dict[int, torch.Tensor],
    cfg: RunConfig,
    mask_forced: bool,
    policy_loss: PolicyLoss | None,
    before_update: bool = False,
) -> torch.Tensor:
    t, a = cfg.trainer, cfg.algo
    batch = _packed(rows, chunk, ctx.pad_id, mask_forced)
    want_hidden = ctx.value_head is not None
    logits, hidden = response_logits(ctx.model, batch, want_hidden=want_hidden)
    logps = L.token_logps(logits, batch.response_ids)
    mask = batch.response_mask
    if old:
        old_logps = torch.zeros_like(logps)
        for j, i in enumerate(chunk):
            n = old[i].shape[0]
            old_logps[j, :n] = old[i]
    else:
        old_logps = logps.detach()
    adv = L.broadcast_to_tokens(advantages[chunk].float(), mask)
    if policy_loss is not None:
        loss, stats = policy_loss(chunk, logps, old_logps, adv, mask)
    else:
        loss, stats = L.ppo_clip_loss(
            logps, old_logps, adv, mask, clip_low=a.clip_low, clip_high=a.clip_high, dual_clip_c=a.dual_clip_c
        )
    ent = L.token_mean(L.token_entropy(logits.detach()), mask)
    stats = {**stats, K.ENTROPY: float(ent), **_diagnostics(rows, chunk, logps, old_logps, adv, mask, cfg,
                                                            before_update)}
    if t.entropy_coef:
        ent_term = L.token_mean(L.token_entropy(logits), mask)
        loss = loss - t.entropy_coef * ent_term
        stats[K.ENTROPY_LOSS] = float(ent_term)
    if t.kl_coef and ctx.reference is not None:
        # The module the context yields computes π_ref: the same model with adapters off under LoRA, the
        # frozen copy under full fine-tuning (before, the trained model itself was used there: KL was 0).
        with torch.no_grad(), ctx.reference() as ref_model:
            ref_logits, _ = response_logits(ref_model, batch)
            ref_logps = L.token_logps(ref_logits, batch.response_ids)
        kl = L.kl_loss(logps, ref_logps, mask)
        loss = loss + t.kl_coef * kl
        stats[K.KL_LOSS] = float(kl)
    if ctx.value_head is not None and hidden is not None:
        values = ctx.value_head(hidden.float()).reshape(-1)
        row_mask = torch.ones(len(chunk), dtype=torch.bool)
        vloss = L.value_loss(values, returns[chunk].float(), row_mask)
        loss = loss + ctx.value_coef * vloss
        stats[K.VALUE_LOSS] = float(vloss.detach())
    for k, v in stats.items():
        ctx.stats.setdefault(k, []).append(float(v))
    return loss


# ------------------------------------------------------------------------------------------ distributed


def _dummy_batch(pad_id: int) -> PackedBatch:
    """A one-token batch with no loss tokens: keeps a rank's forward/backward count equal to the others'."""
    batch = pack_rows([[pad_id]], [torch.tensor([pad_id])], pad_id)
    batch.response_mask[:] = False
    return batch


def _dummy_loss(ctx: UpdateContext, cfg: RunConfig) -> torch.Tensor:
    """A zero loss with the forwards of a real micro-batch (policy, and the KL reference when it runs through
    the sharded model), so FSDP's all-gathers and DDP's reduction happen as often on every rank."""
    batch = _dummy_batch(ctx.pad_id)
    logits, _ = response_logits(ctx.model, batch)
    if cfg.trainer.kl_coef and ctx.reference is not None:
        with torch.no_grad(), ctx.reference() as ref_model:
            response_logits(ref_model, batch)
    return logits.float().sum() * 0.0


def _padded(chunks: list[list[int]], world: D.World) -> list[list[int] | None]:
    """``chunks`` padded with None (dummy chunks) to the largest rank's count (one all-reduce)."""
    n = int(D.all_reduce(float(len(chunks)), world, "max"))
    return [*chunks, *([None] * (n - len(chunks)))]


@torch.no_grad()
def _old_logps_dist(ctx: UpdateContext, rows: list[TurnRow], idx: list[int], micro: int, mask_forced: bool
                    ) -> dict[int, torch.Tensor]:
    out: dict[int, torch.Tensor] = {}
    for chunk in _padded(micro_batches(idx, micro), ctx.world):
        batch = _packed(rows, chunk, ctx.pad_id, mask_forced) if chunk else _dummy_batch(ctx.pad_id)
        logits, _ = response_logits(ctx.model, batch)
        if chunk:
            lp = L.token_logps(logits, batch.response_ids)
            for j, i in enumerate(chunk):
                out[i] = lp[j]
    return out


def _global_mini_batches(idx: list[int], cfg: RunConfig, rows_total: int, world: D.World) -> list[list[int]]:
    """This rank's rows split into the same number of mini-batches on every rank (one optimiser step each).

    The count follows the global row count, as ``_mini_batches`` does for one process; a rank with fewer
    rows than mini-batches gets empty ones (it still joins every collective).
    """
    size = cfg.trainer.mini_batch_rows
    n_mb = max(1, round(D.all_reduce(float(rows_total), world) / size)) if size else 1
    per = max(1, math.ceil(len(idx) / n_mb))
    mbs = [idx[k : k + per] for k in range(0, len(idx), per)]
    return mbs + [[] for _ in range(n_mb - len(mbs))]


def _distributed_update(
    ctx: UpdateContext,
    rows: list[TurnRow],
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: RunConfig,
    policy_loss: PolicyLoss | None,
    nan_injector: Callable[[torch.Tensor], torch.Tensor] | None,
) -> dict[str, float]:
    """``policy_update`` across ranks: the loss is the token-mean over the global mini-batch.

    Each micro-batch's loss is weighted by ``distributed.chunk_weight`` (its share of the mini-batch's loss
    tokens over every rank, times the world size) instead of 1 / (number of micro-batches), so the gradient
    equals one process's over all rows. Loss-free rows and dummy chunks keep collectives in step; a
    non-finite loss still runs its backward (skipping it would desynchronise DDP) and the step is skipped
    on every rank, decided by an all-reduce.
    """
    t, world = cfg.trainer, ctx.world
    idx = _trainable_rows(rows)
    ctx.stats = {}
    skipped = nonfinite = 0
    mask_forced = cfg.t2po.tti.mask_forced_tokens
    mbs = _global_mini_batches(idx, cfg, len(rows), world)
    reuse_current = t.ppo_epochs == 1 and len(mbs) == 1
    old = {} if reuse_current else _old_logps_dist(ctx, rows, idx, t.micro_batch_rows, mask_forced)
    extra = list(ctx.value_head.parameters()) if ctx.value_head is not None else []
    ctx.model.train()
    for _epoch in range(t.ppo_epochs):
        for mb in mbs:
            ctx.optimizer.zero_grad(set_to_none=True)
            tokens = sum(int(_loss_mask(rows[i], mask_forced).sum()) for i in mb)
            global_tokens = int(D.all_reduce(float(tokens), world))
            chunks = _padded(micro_batches(mb, t.micro_batch_rows) if mb else [], world)
            finite = True
            for k, chunk in enumerate(chunks):
                with D.no_sync(ctx.model, last=k == len(chunks) - 1):
                    if chunk is None:
                        loss = _dummy_loss(ctx, cfg)
                    else:
                        loss = _micro_loss(ctx, rows, chunk, advantages, returns, old, cfg, mask_forced, policy_loss)
                        if nan_injector is not None:
                            loss = nan_injector(loss)
                        finite &= bool(torch.isfinite(loss))
                        n = sum(int(_loss_mask(rows[i], mask_forced).sum()) for i in chunk)
                        loss = loss * D.chunk_weight(n, global_tokens, world.world_size)
                    loss.backward()
            D.average_grads(extra, world)
            finite = D.all_reduce(float(finite), world, "min") > 0
            grad_norm = D.grad_norm_value(torch.nn.utils.clip_grad_norm_(ctx.params, t.grad_clip)) if finite \
                else torch.tensor(math.nan)
            dropped, bad_grad = _apply_update(ctx, finite, grad_norm, t.nan_guard)
            skipped, nonfinite = skipped + dropped, nonfinite + bad_grad
    return _finish(ctx, skipped, nonfinite)
