"""Warm start: supervised fine-tuning on expert trajectories (the paper's RFT cold start, t2po.md §7).

The released T2PO runs start RL from rejection-fine-tuned checkpoints. Here the embedded envs' scripted
experts provide the demonstrations: each expert turn becomes one (prompt, response) pair and the loss is
the response tokens' negative log-likelihood (prompt tokens masked). (Rejection fine-tuning on the policy's
own successful rollouts is not implemented yet.)

Checkpoints are cached under ``$T2PO_CACHE/warmstart/<key>``, keyed by everything that determines them
(model build, env, prompt template version, warm-start settings), so every run and sweep point of the same
recipe starts from the same weights, and the first one pays the cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from t2po_cli.config.schema import RunConfig
from t2po_cli.console import NullProgress, Progress, format_duration
from t2po_cli.envs.registry import expert_dialogues, get_family
from t2po_cli.trainer.batching import micro_batches, pack_rows, response_logits

WARMSTART_SEED = 0
"""Demonstrations and SFT order use a fixed seed: one warm-start checkpoint serves every RL seed."""
FORMAT_VERSION = 1


def warmstart_key(cfg: RunConfig) -> str:
    """Cache key of the warm-start checkpoint for this run config."""
    fam = get_family(cfg.env.name)
    model = asdict(cfg.model)
    model.pop("name", None)
    payload = {
        "format": FORMAT_VERSION,
        "model": model,
        "env": cfg.env.name,
        "template": fam.template_version,
        # Families with a separate demonstrator (WebShop) get a new key; the others keep their cached builds.
        **({"demonstrator": "demo"} if fam.demo_policy is not None else {}),
        "history_length": cfg.env.history_length,
        # Only non-default styles enter the key, so the caches of full-prompt recipes stay valid.
        **({"prompt_style": cfg.env.prompt_style} if cfg.env.prompt_style != "full" else {}),
        "max_turns": fam.turn_limit(cfg.env),
        "max_prompt_tokens": cfg.trainer.max_prompt_tokens,
        # bf16_autocast enters the key only when on, so the caches built before it existed stay valid.
        "warmstart": {k: v for k, v in asdict(cfg.trainer.warmstart).items()
                      if k not in ("enabled", "checkpoint") and not (k == "bf16_autocast" and not v)},
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return f"{cfg.env.name}-{cfg.model.name}-{digest}"


def warmstart_dir(cfg: RunConfig) -> Path:
    from t2po_cli.paths import cache_root

    return cache_root() / "warmstart" / warmstart_key(cfg)


def truncate_thought(ids: list[int], open_id: int, close_id: int, rng: random.Random) -> list[int]:
    """Cut the thought of one response after a uniform 1..n-1 of its n thought tokens and close it there,
    as a forced ``</think>`` would: ``<think> a b c </think> act`` → e.g. ``<think> a </think> act``.

    Args:
        ids: response token ids.
        open_id: ``<think>`` id; close_id: ``</think>`` id.
        rng: source of the cut point.

    Returns:
        The shortened ids, or ``ids`` unchanged when there is no thought with at least two tokens.
    """
    if open_id not in ids or close_id not in ids:
        return ids
    start, end = ids.index(open_id) + 1, ids.index(close_id)
    if end - start < 2:
        return ids
    keep = rng.randint(1, end - start - 1)
    return ids[: start + keep] + ids[end:]


def sft_examples(cfg: RunConfig, encode_prompt: Callable[[str], list[int]], tokenizer, eos_id: int
                 ) -> list[tuple[list[int], torch.Tensor]]:
    """(prompt ids, response ids + EOS) pairs from the demonstrator's episodes on the train split; a
    ``truncated_think_rate`` fraction of them with a cut-and-closed thought (``truncate_thought``)."""
    ws = cfg.trainer.warmstart
    rng = random.Random(WARMSTART_SEED)
    think = (tokenizer.convert_tokens_to_ids("<think>"), tokenizer.convert_tokens_to_ids("</think>"))
    examples: list[tuple[list[int], torch.Tensor]] = []
    for turns in expert_dialogues(cfg.env.name, ws.episodes, WARMSTART_SEED,
                                  history_length=cfg.env.history_length,
                                  max_turns=get_family(cfg.env.name).turn_limit(cfg.env),
                                  demonstrator=True, prompt_style=cfg.env.prompt_style):
        for prompt, response in turns:
            ids = tokenizer(response, add_special_tokens=False)["input_ids"]
            if ws.truncated_think_rate > 0 and rng.random() < ws.truncated_think_rate:
                ids = truncate_thought(ids, *think, rng)
            ids = ids[: cfg.trainer.max_response_tokens - 1]
            examples.append((encode_prompt(prompt), torch.tensor([*ids, eos_id], dtype=torch.long)))
    return examples


def supervised_finetune(
    model: torch.nn.Module,
    examples: list[tuple[list[int], torch.Tensor]],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    pad_id: int,
    micro_batch: int,
    progress: Callable[[int, float], None] | None = None,
    bf16: bool = False,
) -> list[float]:
    """Next-token cross-entropy on response tokens with AdamW and a one-cycle schedule (model.md §2).

    ``bf16`` runs the forward (and so the backward) under bf16 autocast on the model's device; the loss is
    computed from float32 logits either way.

    Returns:
        The loss of every step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 2), pct_start=0.1)
    rng = random.Random(WARMSTART_SEED)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    for step in range(steps):
        if len(order) < batch_size:
            order = list(range(len(examples)))
            rng.shuffle(order)
        batch_idx, order = order[:batch_size], order[batch_size:]
        opt.zero_grad(set_to_none=True)
        # Length-bucket the batch: each micro-batch pads to its longest prompt, and WebShop prompts range
        # from ~150 to ~1500 tokens, so sorting cuts the padded (wasted) tokens several-fold.
        batch_idx = sorted(batch_idx, key=lambda i: len(examples[i][0]))
        chunks = micro_batches(batch_idx, micro_batch)
        total = 0.0
        n_tok = sum(int(examples[i][1].numel()) for i in batch_idx)
        for chunk in chunks:
            packed = pack_rows([examples[i][0] for i in chunk], [examples[i][1] for i in chunk], pad_id)
            with _autocast(model, bf16):
                logits, _ = response_logits(model, packed)
            nll = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), packed.response_ids.reshape(-1), reduction="none"
            ).reshape(packed.response_ids.shape)
            loss = (nll * packed.response_mask).sum() / n_tok  # token mean over the whole batch
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(total)
        if progress is not None:
            progress(step, total)
    return losses


def _autocast(model: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the model's device type when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    device = next(model.parameters()).device
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def bf16_available(device: torch.device) -> bool:
    """Native bf16 on ``device``: CUDA's own check, or the CPU flags (``models.cpu_supports_bf16``)."""
    from t2po_cli.trainer.models import cpu_supports_bf16

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def ensure_warmstart(cfg: RunConfig, *, progress: Progress | None = None) -> Path | None:
    """The warm-start checkpoint this run starts from, building (and caching) it if needed.

    ``progress`` hears what is being built (once per machine and recipe), how long it should take, and the
    steps as they run.

    Returns:
        A folder written by ``save_trainable``, or None when warm start is disabled.
    """
    ws = cfg.trainer.warmstart
    if ws.checkpoint:
        from t2po_cli.errors import UserError

        path = Path(ws.checkpoint)
        if not (path / "policy.json").is_file():
            raise UserError(f"trainer.warmstart.checkpoint={path} is not a checkpoint folder (no policy.json)")
        return path
    if not ws.enabled:
        return None
    final = warmstart_dir(cfg)
    if (final / "policy.json").is_file():
        return final
    build_warmstart(cfg, final, progress=progress)
    return final


def build_warmstart(cfg: RunConfig, out: Path, *, progress: Progress | None = None) -> dict[str, float]:
    """Fine-tune the base model on expert demonstrations and save it to ``out`` atomically."""
    from t2po_cli.rollout.engine import build_chat_prompt
    from t2po_cli.trainer.models import load_policy, save_trainable

    ws = cfg.trainer.warmstart
    torch.manual_seed(WARMSTART_SEED)
    # Full fine-tuning of the warm start is the default for the tiny model (LoRA on a random init plateaus,
    # model.md §6B); RL may still train LoRA adapters on top of the resulting weights.
    model_cfg = replace(cfg.model, lora=replace(cfg.model.lora, enabled=not ws.full_finetune), value_head=False)
    policy = load_policy(model_cfg)
    max_prompt = cfg.trainer.max_prompt_tokens

    def encode(msg: str) -> list[int]:
        return build_chat_prompt(policy.tokenizer, msg)[-max_prompt:]

    examples = sft_examples(cfg, encode, policy.tokenizer, policy.eos_id)
    report = _StepReport(progress or NullProgress(), cfg, ws.steps)
    try:
        losses = supervised_finetune(
            policy.model, examples, steps=ws.steps, lr=ws.lr, batch_size=ws.batch_size, pad_id=policy.pad_id,
            micro_batch=max(1, cfg.trainer.micro_batch_rows), progress=report,
            bf16=ws.bf16_autocast and bf16_available(policy.device),
        )
    finally:
        report.progress.stop()
    if not ws.full_finetune and hasattr(policy.model, "merge_and_unload"):
        policy.model = policy.model.merge_and_unload()
        policy.lora = False
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_trainable(policy, tmp)
    summary = {"examples": len(examples), "loss_first": losses[0] if losses else math.nan,
               "loss_last": losses[-1] if losses else math.nan}
    (tmp / "warmstart.json").write_text(json.dumps(summary, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(tmp)  # another process finished first: keep theirs
    else:
        tmp.rename(out)
    return summary


ESTIMATE_AFTER_STEPS = 3
"""The first-run notice gives its time estimate after this many warm-start steps (measured, not guessed)."""


class _StepReport:
    """Feeds ``supervised_finetune``'s per-step callback to a ``Progress`` and, after a few steps, tells the
    user once what is being built and about how long it takes (it is cached afterwards)."""

    def __init__(self, progress: Progress, cfg: RunConfig, steps: int) -> None:
        import time

        self.progress, self.cfg, self.steps = progress, cfg, steps
        self._clock = time.monotonic
        self._t0 = self._clock()
        progress.start("warm start", steps)

    def __call__(self, step: int, loss: float) -> None:
        done = step + 1
        if done == min(ESTIMATE_AFTER_STEPS, self.steps):
            per_step = (self._clock() - self._t0) / done
            self.progress.note(
                f"building the warm start of {self.cfg.model.name} on {self.cfg.env.name} "
                f"(about {format_duration(per_step * self.steps)}, once; cached in {warmstart_dir(self.cfg)})"
            )
        self.progress.update(done, f"loss {loss:.3f}")
