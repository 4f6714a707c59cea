"""The training loop: one readable function from run folder to finished run.

    setup: config from the run folder → warm start (cached) → policy → engine → T2PO hooks → optimizer
           → resume from the last checkpoint if any (metrics rows after it are dropped)
    for step in 1..steps:
        rollout  = collect(...)                   multi-turn; TTI inside generation, TDS between turns
        adv      = advantages(rollout rows)       grpo | gigpo | rloo | ppo (GAE) | a2tgpo
        update   = policy_update(...)             PPO-clip (+ dual clip / adaptive turn clip), KL, entropy
        metrics → metrics.jsonl (+ MLflow);  validate every N;  checkpoint every M

Step numbering: step s is the state after s updates. Validation rows at step 0 measure the warm-start
policy. The rollout RNG of step s is seeded from (seed, s), so a resumed run draws exactly the numbers an
uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from t2po_cli.algo.registry import get_estimator
from t2po_cli.config.compose import load_run_config
from t2po_cli.config.schema import RunConfig
from t2po_cli.console import NullProgress, Progress
from t2po_cli.envs.base import EnvFamily, Task
from t2po_cli.envs.registry import get_family
from t2po_cli.hooks.base import TokenHookFactory, TurnHook
from t2po_cli.rollout.collector import Rollout, collect
from t2po_cli.rollout.types import SamplingParams
from t2po_cli.run_folder import RunFolder
from t2po_cli.tracking import keys as K
from t2po_cli.tracking.jsonl import MetricsWriter, read_metrics
from t2po_cli.trainer import checkpoint as ckpt
from t2po_cli.trainer.advantage_step import compute_step_advantages
from t2po_cli.trainer.rollout_metrics import rollout_metrics
from t2po_cli.trainer.update import UpdateContext, policy_update

if TYPE_CHECKING:
    from t2po_cli.rollout.types import GenerationEngine
    from t2po_cli.tracking.mlflow_sink import MlflowSink
    from t2po_cli.trainer.models import Policy

VAL_SEED_OFFSET = 1000  # envs.md §0.2: validation uses base seed + 1000, group size 1


Hooks = tuple["TokenHookFactory | None", "TurnHook | None"]
"""A phase's (token-hook factory, turn hook); ``(None, None)`` is the baseline (T2PO off)."""


@dataclass
class Session:
    """Everything built once per run (not config: derived objects)."""

    cfg: RunConfig
    folder: RunFolder
    family: EnvFamily
    policy: Policy
    engine: GenerationEngine
    ctx: UpdateContext
    train_hooks: Hooks
    val_hooks: Hooks
    writer: MetricsWriter
    sink: MlflowSink | None
    progress: Progress = field(default_factory=NullProgress)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _step_generator(seed: int, step: int, phase: str) -> torch.Generator:
    """A generator seeded from (seed, step, phase): reproducible across resume, fresh for every step."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7919 + (0 if phase == "train" else 104_729)) % (2**63 - 1))
    return g


def train_tasks(cfg: RunConfig, family: EnvFamily, step: int) -> list[Task]:
    """The distinct tasks of RL step ``step`` (1-based): a seeded permutation walked in order (data cursor)."""
    n = cfg.env.num_train_tasks
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.trainer.seed)).tolist()
    start = (step - 1) * cfg.trainer.tasks_per_step
    idx = [perm[(start + k) % n] for k in range(cfg.trainer.tasks_per_step)]
    return family.sample_tasks("train", idx, cfg.trainer.seed, cfg.env.difficulty)


def val_tasks(cfg: RunConfig, family: EnvFamily) -> list[Task]:
    n = min(cfg.trainer.val_tasks, cfg.env.num_val_tasks)
    return family.sample_tasks("val", list(range(n)), cfg.trainer.seed + VAL_SEED_OFFSET, cfg.env.difficulty)


def _sampling(cfg: RunConfig, family: EnvFamily, phase: str) -> SamplingParams:
    sp = cfg.trainer.train_sampling if phase == "train" else cfg.trainer.val_sampling
    return SamplingParams(
        max_new_tokens=cfg.trainer.max_response_tokens, temperature=sp.temperature, top_p=sp.top_p,
        top_k=sp.top_k, stop_strings=family.stop_strings,
    )


def run_rollout(s: Session, phase: str, step: int, tasks: list[Task], group_size: int) -> Rollout:
    """One rollout of ``tasks × group_size`` episodes with the phase's hooks and a (seed, step) RNG."""
    from t2po_cli.rollout.engine import build_chat_prompt

    cfg = s.cfg
    gen = _step_generator(cfg.trainer.seed, step, phase)
    token_hooks, turn_hook = s.train_hooks if phase == "train" else s.val_hooks
    max_prompt = cfg.trainer.max_prompt_tokens

    def encode(msg: str) -> list[int]:
        return build_chat_prompt(s.policy.tokenizer, msg)[-max_prompt:]

    def generate(prompts: list[list[int]], params: SamplingParams, hook_factory: TokenHookFactory | None,
                 admissible: Any = None):
        return s.engine.generate(prompts, params, hook_factory=hook_factory, generator=gen, admissible=admissible)

    return collect(
        family=s.family, make_env=lambda: s.family.make_env(cfg.env), tasks=tasks, group_size=group_size,
        encode_prompt=encode, generate=generate, params=_sampling(cfg, s.family, phase),
        max_turns=s.family.turn_limit(cfg.env), history_length=cfg.env.history_length,
        token_hook_factory=token_hooks, turn_hook=turn_hook, constrained_actions=cfg.trainer.constrained_actions,
        constrained_queries=cfg.trainer.constrained_queries, prompt_style=cfg.env.prompt_style,
        # The release generates for the whole batch, finished envs included (t2po.md §8 #4); only with hooks,
        # so that t2po=off stays bit-identical to the baseline whatever t2po.compat says.
        generate_finished=cfg.t2po.compat == "released" and (token_hooks is not None or turn_hook is not None),
    )


def validate(s: Session, step: int) -> dict[str, float]:
    """Validation metrics (greedy-ish sampling, group size 1, no TDS) under the ``val/`` prefix."""
    ro = run_rollout(s, "val", step, val_tasks(s.cfg, s.family), group_size=1)
    m = rollout_metrics(ro, s.cfg)
    return {K.val(k): v for k, v in m.items()}


def build_session(run_dir: str | Path, *, tti: bool | None = None, progress: Progress | None = None) -> Session:
    """Load the run folder's config and build the policy, engine, hooks, optimizer and sinks.

    ``tti`` (evaluation only) switches the thinking intervention on or off for this session, whatever the run
    was trained with; the run folder's config is not changed. None keeps the run's setting. ``progress``
    receives the warm start's progress and the run's notes (nothing is printed without one).
    """
    from t2po_cli.hooks.factory import build_hooks
    from t2po_cli.trainer.models import load_policy
    from t2po_cli.trainer.warmstart import ensure_warmstart

    progress = progress or NullProgress()
    folder = RunFolder.open(run_dir)
    cfg = load_run_config(folder.config_path)
    if tti is not None:
        cfg = replace(cfg, t2po=replace(cfg.t2po, tti=replace(cfg.t2po.tti, enabled=tti)))
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    family = get_family(cfg.env.name)
    estimator = get_estimator(cfg.algo.name)
    warm = ensure_warmstart(cfg, progress=progress)
    _seed_everything(cfg.trainer.seed)
    # A critic estimator (PPO) needs a value head: implied by the estimator (a derived local value, not a
    # config edit).
    model_cfg = replace(cfg.model, value_head=cfg.model.value_head or estimator.needs_values)
    policy = load_policy(model_cfg, checkpoint=warm, with_reference=cfg.trainer.kl_coef > 0)
    engine = _make_engine(cfg, policy)
    think_ids = _think_ids(cfg, policy)
    budget = cfg.trainer.max_response_tokens
    train_hooks = build_hooks(cfg.t2po, think_ids, "train", budget, env_max_think_tokens=cfg.env.max_think_tokens)
    released = getattr(train_hooks[0], "released_state", None)
    val_hooks = build_hooks(cfg.t2po, think_ids, "val", budget, env_max_think_tokens=cfg.env.max_think_tokens,
                            released_state=released)
    params = policy.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    settings = estimator.settings(getattr(cfg.algo, estimator.name))
    ctx = UpdateContext(
        model=policy.model, optimizer=optimizer, params=params, pad_id=policy.pad_id,
        value_head=policy.value_head, reference=policy.reference if cfg.trainer.kl_coef > 0 else None,
        # A critic estimator's params carry the value-loss weight (``Estimator.needs_values``).
        value_coef=float(getattr(settings, "value_coef", 0.0)) if estimator.needs_values else 0.0,
    )
    sink = None
    if cfg.tracking.mlflow:
        from t2po_cli.tracking.mlflow_sink import MlflowSink

        sink = MlflowSink(folder.path, cfg)
    return Session(cfg, folder, family, policy, engine, ctx, train_hooks, val_hooks,
                   MetricsWriter(folder.metrics_path), sink, progress)


def _think_ids(cfg: RunConfig, policy: Policy) -> tuple[int, int] | None:
    if not cfg.t2po.tti.enabled:
        return policy.think_ids
    from t2po_cli.hooks.tti import resolve_think_ids

    return resolve_think_ids(policy.tokenizer)


def _make_engine(cfg: RunConfig, policy: Policy) -> GenerationEngine:
    if cfg.trainer.engine == "vllm":
        from t2po_cli.rollout.vllm_engine import VLLMEngine as Engine
    else:
        from t2po_cli.rollout.engine import HFEngine as Engine
    return Engine(policy, max_prompt_tokens=cfg.trainer.max_prompt_tokens, signal_alpha=cfg.t2po.alpha,
                  released_signal=cfg.t2po.compat == "released")


def _resume(s: Session) -> int:
    """Restore the newest checkpoint; returns the step to continue after (0 = fresh start)."""
    found = ckpt.list_checkpoints(s.folder.checkpoints)
    if not found:
        # A run killed before its first checkpoint restarts from scratch: drop any rows it had logged.
        s.writer.truncate_after(-1)
        return 0
    modules = {"policy": s.policy.model}
    if s.policy.value_head is not None:
        modules["value_head"] = s.policy.value_head
    state = ckpt.load_checkpoint(found[-1], modules=modules, optimizers={"policy": s.ctx.optimizer})
    s.ctx.skipped_total = int(state.get("skipped_total", 0))
    s.ctx.nonfinite_total = int(state.get("nonfinite_total", 0))
    s.writer.truncate_after(found[-1].step)
    return found[-1].step


def _save(s: Session, step: int) -> None:
    modules = {"policy": s.policy.model}
    if s.policy.value_head is not None:
        modules["value_head"] = s.policy.value_head
    ckpt.save_checkpoint(
        s.folder.checkpoints, step, modules=modules, optimizers={"policy": s.ctx.optimizer},
        extra={"data_cursor": step * s.cfg.trainer.tasks_per_step, "skipped_total": s.ctx.skipped_total,
               "nonfinite_total": s.ctx.nonfinite_total},
    )


def _set_lr(s: Session, step: int) -> None:
    t = s.cfg.trainer
    warm = int(t.warmup_ratio * t.steps)
    factor = min(1.0, step / warm) if warm else 1.0
    for group in s.ctx.optimizer.param_groups:
        group["lr"] = t.lr * factor


def train_step(s: Session, step: int) -> dict[str, float]:
    """Rollout, advantages and update of RL step ``step`` (1-based). Returns the step's metrics."""
    cfg = s.cfg
    t0 = time.perf_counter()
    rollout = run_rollout(s, "train", step, train_tasks(cfg, s.family, step), cfg.trainer.group_size)
    t_roll = time.perf_counter() - t0
    metrics = rollout_metrics(rollout, cfg)
    adv = compute_step_advantages(s, rollout)
    metrics.update(adv.stats)
    if adv.warning:
        s.progress.note(f"step {step}: {adv.warning}")
    _set_lr(s, step)
    t1 = time.perf_counter()
    metrics.update(policy_update(s.ctx, rollout.rows, adv.advantages, adv.returns, cfg,
                                 policy_loss=adv.policy_loss, nan_injector=_nan_injector(step)))
    metrics[K.UPDATE_TIME] = time.perf_counter() - t1
    metrics[K.ROLLOUT_TIME] = t_roll
    metrics[K.STEP_TIME] = time.perf_counter() - t0
    return metrics


def _nan_injector(step: int):
    """Reliability tests set T2PO_INJECT_NAN_STEP=N to corrupt the loss of step N (skipped and counted)."""
    target = os.environ.get("T2PO_INJECT_NAN_STEP")
    if target is None or int(target) != step:
        return None
    return lambda loss: loss * math.nan


def train_run(run_dir: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir``. Returns the last train and validation metrics.

    ``progress`` receives the warm start's and the steps' progress and the run's notes; the trainer itself
    prints nothing.
    """
    progress = progress or NullProgress()
    s = build_session(run_dir, progress=progress)
    t = s.cfg.trainer
    start = _resume(s)
    s.folder.write_status("running", step=start, pid=os.getpid())
    if start:
        progress.note(f"resumed from checkpoint step {start}")
    last_train: dict[str, float] = {}
    last_val: dict[str, float] = {}
    try:
        if start == 0 and t.val_every:
            last_val = validate(s, 0)
            _log(s, 0, "val", last_val)
        progress.start("train", t.steps, start)
        for step in range(start + 1, t.steps + 1):
            last_train = train_step(s, step)
            _log(s, step, "train", last_train)
            if t.val_every and (step % t.val_every == 0 or step == t.steps):
                last_val = validate(s, step)
                _log(s, step, "val", last_val)
            if step == t.steps or (t.save_every and step % t.save_every == 0):
                _save(s, step)
            s.folder.write_status("running", step=step, pid=os.getpid())
            progress.update(step, _progress_info(last_train, last_val))
    except BaseException as e:
        s.folder.write_status("failed", error=f"{type(e).__name__}: {e}"[:500])
        if s.sink is not None:
            s.sink.finish("FAILED")
        raise
    finally:
        progress.stop()
    s.folder.write_status("finished", step=t.steps)
    if s.sink is not None:
        s.sink.deliver(read_metrics(s.writer.path))
        s.sink.finish("FINISHED")
    summary = {"steps": t.steps, "train": _headline(last_train), "val": _headline(last_val)}
    progress.note(f"finished {s.folder.path}: val success {summary['val'].get('success_rate', float('nan')):.3f}")
    return summary


def _progress_info(train: dict[str, float], val: dict[str, float]) -> str:
    info = f"success {train.get(K.SUCCESS_RATE, float('nan')):.2f}"
    if K.val(K.SUCCESS_RATE) in val:
        info += f"  val {val[K.val(K.SUCCESS_RATE)]:.2f}"
    return info


def _headline(m: dict[str, float]) -> dict[str, float]:
    out = {}
    for k, v in m.items():
        base = k.removeprefix(K.VAL_PREFIX)
        if base in (K.SUCCESS_RATE, K.REWARD_MEAN, K.EPISODE_LENGTH, K.TOKENS_PER_EPISODE, K.SCORE_MEAN):
            out[base.split("/")[-1] if base != K.SUCCESS_RATE else "success_rate"] = v
    return out


def _log(s: Session, step: int, split: str, metrics: dict[str, float]) -> None:
    row = s.writer.write(step, split, metrics)
    if s.sink is not None:
        s.sink.deliver([row])
