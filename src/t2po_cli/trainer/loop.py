"""The training loop: one readable function from run folder to finished run.

    setup: config from the run folder → warm start (cached) → policy → engine → T2PO hooks → optimizer
           → resume from the last checkpoint if any (metrics rows after it are dropped)
    for step in 1..steps:
        rollout  = collect(...)                   multi-turn; TTI inside generation, TDS between turns
        adv      = advantages(rollout rows)       grpo | gigpo | rloo | ppo (GAE) | a2tgpo
        update   = policy_update(...)             PPO-clip (+ dual clip / adaptive turn clip), KL, entropy
        diag     = diagnostics(rollout, adv, ...)  diag/* early-warning signals (diag/signals.py)
        metrics → metrics.jsonl (+ MLflow);  validate every N;  checkpoint every M
        watch    = early-warning rules on the rows so far → continue | stop | rollback (trainer.on_collapse)

Across ranks (``trainer.distributed.strategy`` ddp|fsdp, ``trainer/distributed.py``) every rank runs this
same loop on its share of the step's tasks; metrics are reduced over ranks and only rank 0 writes them.

Step numbering: step s is the state after s updates. Validation rows at step 0 measure the warm-start
policy. Every episode of step s samples from its own stream seeded from (seed, s, phase, global episode index)
(``rollout.streams``), so a resumed run draws exactly the numbers an uninterrupted run would have drawn, and an
episode's tokens do not depend on the other episodes of its batch.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from t2po_cli.algo.registry import get_estimator
from t2po_cli.config.compose import load_run_config
from t2po_cli.config.schema import RunConfig
from t2po_cli.console import NullProgress, Progress
from t2po_cli.envs.base import EnvFamily, Task, build_env
from t2po_cli.envs.registry import get_family
from t2po_cli.hooks.base import TokenHookFactory, TurnHook
from t2po_cli.hooks.calibration import RunningWindow
from t2po_cli.rollout.collector import Rollout, collect
from t2po_cli.rollout.types import SamplingParams
from t2po_cli.run_folder import RunFolder
from t2po_cli.tracking import keys as K
from t2po_cli.tracking.jsonl import MetricsWriter, read_metrics
from t2po_cli.trainer import checkpoint as ckpt
from t2po_cli.trainer import diagnostics as diag
from t2po_cli.trainer import distributed as D
from t2po_cli.trainer import watch as W
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
    world: D.World = D.SINGLE
    """The ranks; ``policy`` is what the engine generates with (under FSDP an unsharded replica of
    ``ctx.model``, refreshed after every update)."""
    watch: W.Watch = field(default_factory=W.Watch)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _diag_generator(seed: int, step: int) -> torch.Generator:
    """The template-collapse check's subsample generator for step ``step`` (not a rollout stream)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + 7_368_787) % (2**63 - 1))


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


def run_rollout(s: Session, phase: str, step: int, tasks: list[Task], group_size: int,
                episode_ids: Sequence[int] | None = None) -> Rollout:
    """One rollout of ``tasks × group_size`` episodes with the phase's hooks and per-episode streams.

    ``episode_ids`` are the global episode indices (task position in the step's task list × group size + copy
    index) of the episodes collected here; None = ``0 .. len(tasks)·group_size − 1`` (all of the step's tasks).
    A rank that collects a slice of the tasks passes its slice's ids, so it draws what a single process would.
    """
    from t2po_cli.rollout.engine import build_chat_prompt
    from t2po_cli.rollout.streams import episode_streams

    cfg = s.cfg
    ids = range(len(tasks) * group_size) if episode_ids is None else episode_ids
    # After a rollback (trainer.on_collapse) the retried train steps draw fresh streams: the restored weights with
    # the old streams would replay the abandoned step's rollout exactly, and with it the warning. Validation
    # keeps its streams, so checkpoints stay comparable.
    key = f"{phase}-retry{s.watch.rollbacks}" if phase == "train" and s.watch.rollbacks else phase
    streams = episode_streams(cfg.trainer.seed, step, key, ids)
    token_hooks, turn_hook = s.train_hooks if phase == "train" else s.val_hooks
    max_prompt = cfg.trainer.max_prompt_tokens

    def encode(msg: str) -> list[int]:
        return build_chat_prompt(s.policy.tokenizer, msg)[-max_prompt:]

    def generate(prompts: list[list[int]], params: SamplingParams, hook_factory: TokenHookFactory | None,
                 admissible: Any, row_streams: list[torch.Generator]):
        return s.engine.generate(prompts, params, hook_factory=hook_factory, streams=row_streams,
                                 admissible=admissible)

    return collect(
        family=s.family, make_env=lambda: build_env(s.family, cfg.env), tasks=tasks, group_size=group_size,
        encode_prompt=encode, generate=generate, params=_sampling(cfg, s.family, phase),
        max_turns=s.family.turn_limit(cfg.env), history_length=cfg.env.history_length, streams=streams,
        token_hook_factory=token_hooks, turn_hook=turn_hook, constrained_actions=cfg.trainer.constrained_actions,
        constrained_queries=cfg.trainer.constrained_queries, prompt_style=cfg.env.prompt_style,
        # The release generates for the whole batch, finished envs included (t2po.md §8 #4); only with hooks,
        # so that t2po=off stays bit-identical to the baseline whatever t2po.compat says.
        generate_finished=cfg.t2po.compat == "released" and (token_hooks is not None or turn_hook is not None),
    )


def validate(s: Session, step: int) -> dict[str, float]:
    """Validation metrics (greedy-ish sampling, group size 1, no TDS) under the ``val/`` prefix."""
    ro = _rollout_share(s, "val", step, val_tasks(s.cfg, s.family), group_size=1)
    m = _reduced(s, rollout_metrics(ro, s.cfg), ro)
    return {K.val(k): v for k, v in m.items()}


def _rollout_share(s: Session, phase: str, step: int, tasks: list[Task], group_size: int) -> Rollout:
    """This rank's rollout: its whole task groups, each episode on the stream of its global index, so the
    ranks together draw exactly what one process would (all of the tasks in one process)."""
    mine = D.shard_range(len(tasks), s.world.rank, s.world.world_size)
    ids = [t * group_size + g for t in mine for g in range(group_size)]
    return run_rollout(s, phase, step, [tasks[t] for t in mine], group_size, episode_ids=ids)


def _reduced(s: Session, metrics: dict[str, float], rollout: Rollout) -> dict[str, float]:
    """``metrics`` combined over ranks (rank 0 uses the result); unchanged in one process."""
    if not s.world.active:
        return metrics
    per_rank = D.gather((metrics, len(rollout.episodes), len(rollout.rows)), s.world)
    return D.combine_metrics([m for m, _, _ in per_rank], [e for _, e, _ in per_rank], [r for _, _, r in per_rank])


def build_session(run_dir: str | Path, *, tti: bool | None = None, progress: Progress | None = None,
                  distributed: bool = True) -> Session:
    """Load the run folder's config and build the policy, engine, hooks, optimizer and sinks.

    ``tti`` (evaluation only) switches the thinking intervention on or off for this session, whatever the run
    was trained with; the run folder's config is not changed. None keeps the run's setting. ``progress``
    receives the warm start's progress and the run's notes (nothing is printed without one).
    ``distributed=False`` (evaluation) builds one plain process whatever ``trainer.distributed`` says.
    """
    from t2po_cli.hooks.factory import build_hooks
    from t2po_cli.trainer.models import load_policy

    progress = progress or NullProgress()
    folder = RunFolder.open(run_dir)
    cfg = load_run_config(folder.config_path)
    if tti is not None:
        cfg = replace(cfg, t2po=replace(cfg.t2po, tti=replace(cfg.t2po.tti, enabled=tti)))
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    family = get_family(cfg.env.name)
    estimator = get_estimator(cfg.algo.name)
    dist_cfg = cfg.trainer.distributed
    rank = D.world_from_env(os.environ, dist_cfg.strategy).rank if distributed else 0
    warm = _warm_start(cfg, rank, progress)
    world = D.init_world(dist_cfg.strategy, dist_cfg.timeout_s,
                         device_type="cuda" if torch.cuda.is_available() else "cpu") if distributed else D.SINGLE
    # Every rank initialises with the run's seed (identical weights: FSDP2 does not broadcast them).
    _seed_everything(cfg.trainer.seed)
    # A critic estimator (PPO) needs a value head: implied by the estimator (a derived local value, not a
    # config edit).
    model_cfg = replace(cfg.model, value_head=cfg.model.value_head or estimator.needs_values)
    policy = load_policy(model_cfg, checkpoint=warm, with_reference=cfg.trainer.kl_coef > 0)
    train_model, policy = D.distribute_policy(policy, world)
    _seed_everything(D.derive_seed(cfg.trainer.seed, world.rank))
    engine = _make_engine(cfg, policy)
    think_ids = _think_ids(cfg, policy)
    budget = cfg.trainer.max_response_tokens
    train_hooks = build_hooks(cfg.t2po, think_ids, "train", budget, env_max_think_tokens=cfg.env.max_think_tokens)
    released = getattr(train_hooks[0], "released_state", None)
    val_hooks = build_hooks(cfg.t2po, think_ids, "val", budget, env_max_think_tokens=cfg.env.max_think_tokens,
                            released_state=released, tau_calibrator=getattr(train_hooks[0], "calibrator", None))
    params = [p for p in train_model.parameters() if p.requires_grad]
    settings = estimator.settings(getattr(cfg.algo, estimator.name))
    # One param group per learning rate; ``base_lr`` is what the warm-up and rollback scale (``_set_lr``).
    groups: list[dict[str, Any]] = [{"params": list(params), "lr": cfg.trainer.lr, "base_lr": cfg.trainer.lr}]
    if policy.value_head is not None:
        head = list(policy.value_head.parameters())
        value_lr = float(getattr(settings, "value_lr", cfg.trainer.lr))  # algo.ppo.value_lr
        groups.append({"params": head, "lr": value_lr, "base_lr": value_lr})
        params += head
    optimizer = torch.optim.AdamW(groups, lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    ctx = UpdateContext(
        model=train_model, optimizer=optimizer, params=params, pad_id=policy.pad_id,
        value_head=policy.value_head,
        reference=D.reference_context(policy, train_model, world) if cfg.trainer.kl_coef > 0 else None,
        # A critic estimator's params carry the value-loss weight (``Estimator.needs_values``).
        value_coef=float(getattr(settings, "value_coef", 0.0)) if estimator.needs_values else 0.0,
        world=world,
    )
    sink = None
    if cfg.tracking.mlflow and world.is_main:
        from t2po_cli.tracking.mlflow_sink import MlflowSink

        sink = MlflowSink(folder.path, cfg)
    return Session(cfg, folder, family, policy, engine, ctx, train_hooks, val_hooks,
                   MetricsWriter(folder.metrics_path), sink, progress, world,
                   watch=W.Watch(thresholds=cfg.diagnostics.warnings))


def _warm_start(cfg: RunConfig, rank: int, progress: Progress) -> Path | None:
    """Rank 0 builds (or finds) the cached warm start; the other ranks wait for its file, not in a collective:
    a first build can take longer than ``trainer.distributed.timeout_s``. Then all load the same checkpoint."""
    from t2po_cli.trainer.warmstart import ensure_warmstart, warmstart_dir

    if rank == 0:
        return ensure_warmstart(cfg, progress=progress)
    ws = cfg.trainer.warmstart
    if ws.enabled and not ws.checkpoint:
        done = warmstart_dir(cfg) / "policy.json"
        while not done.is_file():  # rank 0 dying ends this rank too (torchrun / srun stop the job)
            time.sleep(1.0)
    return ensure_warmstart(cfg, progress=NullProgress())


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
        if s.world.is_main:
            s.writer.truncate_after(-1)
        return 0
    _restore(s, found[-1])
    s.watch.events = list(s.folder.read_status().get("warnings", []))  # type: ignore[arg-type]
    return found[-1].step


def _restore(s: Session, info: ckpt.CheckpointInfo) -> None:
    """Load checkpoint ``info`` into the session (every rank) and drop the metrics rows logged after it."""
    if s.world.active:
        # Sharded (torch.distributed.checkpoint): any world size loads what any world size saved.
        state = ckpt.load_distributed(info, s.ctx.model, s.ctx.optimizer, s.policy.value_head, s.world.rank)
        if s.world.strategy == "fsdp":
            D.sync_replica(s.ctx.model, s.policy.model)
    else:
        state = ckpt.load_checkpoint(info, modules=_modules(s), optimizers={"policy": s.ctx.optimizer})
    s.ctx.skipped_total = int(state.get("skipped_total", 0))
    s.ctx.nonfinite_total = int(state.get("nonfinite_total", 0))
    s.watch.restore(state)
    _load_hook_state(s, state.get("t2po_hooks", {}))
    # Every rank keeps the same rows for the warning rules (rank 0 alone rewrites the file).
    rows = read_metrics(s.writer.path) if s.writer.path.exists() else []
    s.watch.rows = [r for r in rows if r["step"] <= info.step]
    D.barrier(s.world)  # every rank has read the rows before rank 0 truncates the file
    if s.world.is_main:
        s.writer.truncate_after(info.step)


def _checkpoint_before(s: Session, step: int) -> ckpt.CheckpointInfo | None:
    """The newest checkpoint saved before ``step`` (rollbacks: ``step`` is the first step of the warning's
    condition minus one)."""
    found = [c for c in ckpt.list_checkpoints(s.folder.checkpoints) if c.step < step]
    return found[-1] if found else None


def _rollback(s: Session, to: ckpt.CheckpointInfo) -> None:
    """Restore ``to``, forget newer checkpoints, and scale the learning rate down (trainer.on_collapse)."""
    import shutil

    rollbacks = s.watch.rollbacks + 1
    lr_scale = s.watch.lr_scale * s.cfg.trainer.rollback_lr_factor
    _restore(s, to)
    D.barrier(s.world)  # every rank has loaded ``to`` before the newer checkpoints go
    if s.world.is_main:
        for c in ckpt.list_checkpoints(s.folder.checkpoints):
            if c.step > to.step:  # a resume must never pick up a checkpoint from the abandoned branch
                shutil.rmtree(c.path, ignore_errors=True)
    D.barrier(s.world)
    s.watch.rollbacks, s.watch.lr_scale = rollbacks, lr_scale


def _modules(s: Session) -> dict[str, torch.nn.Module]:
    modules = {"policy": s.policy.model}
    if s.policy.value_head is not None:
        modules["value_head"] = s.policy.value_head
    return modules


def _save(s: Session, step: int) -> None:
    extra = {"data_cursor": step * s.cfg.trainer.tasks_per_step, "skipped_total": s.ctx.skipped_total,
             "nonfinite_total": s.ctx.nonfinite_total, **s.watch.checkpoint_state(),
             "t2po_hooks": _hook_state(s)}
    keep = _checkpoints_to_keep(s.cfg)
    if s.world.active:
        ckpt.save_distributed(s.folder.checkpoints, step, s.ctx.model, s.ctx.optimizer, s.policy.value_head,
                              world=s.world, extra=extra, keep=keep)
        return
    ckpt.save_checkpoint(s.folder.checkpoints, step, modules=_modules(s), optimizers={"policy": s.ctx.optimizer},
                         extra=extra, keep=keep)


def _checkpoints_to_keep(cfg: RunConfig) -> int:
    """Checkpoints kept on disk: ``ckpt.KEEP`` (2), or under ``trainer.on_collapse=rollback`` enough to reach back
    before the longest warning condition (its window of points, plus the step whose weights first showed it and
    the warning step itself) at ``trainer.save_every``."""
    t = cfg.trainer
    if t.on_collapse != W.ROLLBACK or not t.save_every:
        return ckpt.KEEP
    th = cfg.diagnostics.warnings
    window = max(th.spread_smooth, th.zero_spread_persist, th.cov_persist, th.mult_error_persist,
                 th.entropy_rise_persist, 1)
    return max(ckpt.KEEP, math.ceil((window + 2) / t.save_every) + 1)


def _hook_state(s: Session) -> dict[str, Any]:
    """The training hooks' cross-step state (self-calibrated threshold windows); {} for fixed thresholds."""
    out: dict[str, Any] = {}
    for name, hook in zip(("tti", "tds"), s.train_hooks, strict=True):
        state = hook.state_dict() if hook is not None and hasattr(hook, "state_dict") else {}
        if state:
            out[name] = state
    return out


def _calibration_windows(s: Session) -> list[RunningWindow]:
    """The training hooks' self-calibration windows (τ's, then η's); [] with fixed thresholds."""
    tti, tds = s.train_hooks
    calibrator = getattr(tti, "calibrator", None)
    found = [calibrator.window if calibrator is not None else None, getattr(tds, "window", None)]
    return [w for w in found if w is not None]


def _share_calibration(s: Session, windows: Sequence[RunningWindow],
                       marks: Sequence[tuple[list[float], int]]) -> None:
    """After a step's rollout on several ranks: every rank's windows become the step's starting window plus
    every rank's new values in rank order, so all ranks calibrate on all episodes (``hooks/calibration.py``).

    Args:
        windows: ``_calibration_windows(s)``, the same list on every rank.
        marks: per window, its values and ``added`` count before the rollout.
    """
    per_rank = D.gather([w.since(added) for w, (_, added) in zip(windows, marks, strict=True)], s.world)
    for i, (w, (start, _)) in enumerate(zip(windows, marks, strict=True)):
        w.rebuild(start, [tails[i] for tails in per_rank])


def _load_hook_state(s: Session, state: dict[str, Any]) -> None:
    for name, hook in zip(("tti", "tds"), s.train_hooks, strict=True):
        if name in state and hook is not None and hasattr(hook, "load_state_dict"):
            hook.load_state_dict(state[name])


def _set_lr(s: Session, step: int) -> None:
    t = s.cfg.trainer
    warm = int(t.warmup_ratio * t.steps)
    factor = min(1.0, step / warm) if warm else 1.0
    for group in s.ctx.optimizer.param_groups:
        # base_lr: trainer.lr for the policy, algo.ppo.value_lr for a value head; lr_scale < 1 after a rollback.
        group["lr"] = group.get("base_lr", t.lr) * factor * s.watch.lr_scale


def train_step(s: Session, step: int) -> dict[str, float]:
    """Rollout, advantages and update of RL step ``step`` (1-based). Returns the step's metrics."""
    cfg = s.cfg
    _inject_rank_fault(step, s.world.rank)
    t0 = time.perf_counter()
    windows = _calibration_windows(s) if s.world.active else []
    marks = [(w.values(), w.added) for w in windows]
    rollout = _rollout_share(s, "train", step, train_tasks(cfg, s.family, step), cfg.trainer.group_size)
    if windows:
        _share_calibration(s, windows, marks)
    t_roll = time.perf_counter() - t0
    metrics = rollout_metrics(rollout, cfg)
    adv = compute_step_advantages(s, rollout)
    metrics.update(adv.stats)
    if adv.warning:
        s.progress.note(f"step {step}: {adv.warning}")
    metrics.update(diag.rollout_diagnostics(rollout, adv.advantages))
    if cfg.diagnostics.template_mi_samples:
        metrics.update(diag.template_diagnostics(
            s.policy.model, rollout, cfg.diagnostics.template_mi_samples, s.policy.pad_id,
            cfg.trainer.micro_batch_rows, _diag_generator(cfg.trainer.seed, step)))
    _set_lr(s, step)
    t1 = time.perf_counter()
    metrics.update(policy_update(s.ctx, rollout.rows, adv.advantages, adv.returns, cfg,
                                 policy_loss=adv.policy_loss, nan_injector=_nan_injector(step)))
    if s.world.strategy == "fsdp":
        D.sync_replica(s.ctx.model, s.policy.model)  # the engine's unsharded copy gets the new weights
    d = cfg.diagnostics
    metrics.update(diag.grad_norm_z(s.watch.grad_norms(d.grad_norm_window), metrics.get(K.GRAD_NORM),
                                    d.grad_norm_min_points))
    metrics[K.UPDATE_TIME] = time.perf_counter() - t1
    metrics[K.ROLLOUT_TIME] = t_roll
    metrics[K.STEP_TIME] = time.perf_counter() - t0
    return _reduced(s, metrics, rollout)


def _inject_rank_fault(step: int, rank: int) -> None:
    """Reliability tests: T2PO_KILL_RANK_AT=R:N SIGKILLs rank R at the start of step N (a dead rank);
    T2PO_HANG_RANK_AT=R:N makes it sleep there (a hung rank: the others' collectives time out)."""
    if os.environ.get("T2PO_KILL_RANK_AT") == f"{rank}:{step}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("T2PO_HANG_RANK_AT") == f"{rank}:{step}":
        time.sleep(10**6)


def _nan_injector(step: int):
    """Reliability tests set T2PO_INJECT_NAN_STEP=N to corrupt the loss of step N (skipped and counted)."""
    target = os.environ.get("T2PO_INJECT_NAN_STEP")
    if target is None or int(target) != step:
        return None
    return lambda loss: loss * math.nan


def train_run(run_dir: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir``. Returns the last train and validation metrics.

    ``progress`` receives the warm start's and the steps' progress and the run's notes; the trainer itself
    prints nothing. An early warning is reported through ``progress.alert`` and acted on as
    ``trainer.on_collapse`` says (``_on_warnings``); a stopped run ends with state ``stopped`` (resumable).
    """
    progress = progress or NullProgress()
    s = build_session(run_dir, progress=progress)
    try:
        return _train(s, progress)
    finally:
        D.shutdown(s.world)


def _train(s: Session, progress: Progress) -> dict[str, Any]:
    t = s.cfg.trainer
    main = s.world.is_main
    start = _resume(s)
    if main and s.world.active:
        D.record_world(s.folder.path, s.world)
    _status(s, "running", step=start, pid=os.getpid())
    if start:
        progress.note(f"resumed from checkpoint step {start}")
    last_train: dict[str, float] = {}
    last_val: dict[str, float] = {}
    stopped_at: int | None = None
    try:
        if start == 0 and t.val_every:
            last_val = validate(s, 0)
            _log(s, 0, "val", last_val)
        progress.start("train", t.steps, start)
        step = start + 1
        while step <= t.steps:
            last_train = train_step(s, step)
            _log(s, step, "train", last_train)
            if t.val_every and (step % t.val_every == 0 or step == t.steps):
                last_val = validate(s, step)
                _log(s, step, "val", last_val)
            saved = step == t.steps or (t.save_every and step % t.save_every == 0)
            if saved:
                _save(s, step)
            action = _on_warnings(s, step)
            if action == W.STOP:
                if not saved:
                    _save(s, step)  # resumable from exactly here
                stopped_at = step
                break
            if action == W.ROLLBACK:
                step = s.watch.rows[-1]["step"] + 1 if s.watch.rows else 1
                progress.update(step - 1, _progress_info(last_train, last_val))
                continue
            _status(s, "running", step=step, pid=os.getpid())
            progress.update(step, _progress_info(last_train, last_val))
            step += 1
    except BaseException as e:
        _status(s, "failed", error=f"{type(e).__name__}: {e}"[:500])
        if s.sink is not None:
            s.sink.finish("FAILED")
        raise
    finally:
        progress.stop()
    if stopped_at is not None:
        _status(s, "stopped", step=stopped_at)
        progress.note(f"stopped at step {stopped_at} (trainer.on_collapse={t.on_collapse}); continue with "
                      f"`t2po train --resume {s.folder.path}` or inspect with `t2po report {s.folder.path}`")
    else:
        _status(s, "finished", step=t.steps)
    if s.sink is not None:
        s.sink.deliver(read_metrics(s.writer.path))
        s.sink.finish("KILLED" if stopped_at is not None else "FINISHED")  # stopped: ended early, resumable
    summary = {"steps": stopped_at or t.steps, "train": _headline(last_train), "val": _headline(last_val)}
    if stopped_at is None:
        progress.note(f"finished {s.folder.path}: val success {summary['val'].get('success_rate', float('nan')):.3f}")
    return summary


def _status(s: Session, state: str, **extra: object) -> None:
    """status.json, with the early warnings so far (``warnings``: rule, step, metric, value, message, action)."""
    if not s.world.is_main:
        return
    if s.watch.events:
        extra = {**extra, "warnings": s.watch.events, "rollbacks": s.watch.rollbacks}
    s.folder.write_status(state, **extra)


def _on_warnings(s: Session, step: int) -> str:
    """Report the warnings that first fire at ``step`` and apply ``trainer.on_collapse`` to them.

    Returns:
        ``continue``, ``stop`` or ``rollback`` (the rollback is already done: the session is back at the
        restored checkpoint, with the learning rate scaled by ``trainer.rollback_lr_factor``).
    """
    new = s.watch.check(step)
    if not new:
        return W.CONTINUE
    t = s.cfg.trainer
    # The metrics of step k come from rollouts of the weights saved as checkpoint k-1. A warning whose condition
    # began at step ``since`` was first seen in the rollouts of checkpoint since-1, so the rollback restores the
    # newest checkpoint before that one: the policy before the one that showed the condition.
    since = min(w.since for w in new)
    before = _checkpoint_before(s, since - 1) if t.on_collapse == W.ROLLBACK else None
    action = W.decide(t.on_collapse, s.watch.rollbacks, t.max_rollbacks, before.step if before else None)
    for w in new:
        s.progress.alert(w.line())
        s.watch.events.append(W.event(w, action))
    if action == W.ROLLBACK and before is not None:
        _rollback(s, before)
        s.progress.note(f"rolled back to checkpoint step {before.step} (rollback {s.watch.rollbacks}/"
                        f"{t.max_rollbacks}); learning rate × {s.watch.lr_scale:g}")
        _status(s, "running", step=before.step, pid=os.getpid())
    elif action == W.STOP and t.on_collapse == W.ROLLBACK:
        why = "no checkpoint before the warning" if before is None else f"{t.max_rollbacks} rollbacks used"
        s.progress.note(f"cannot roll back ({why}); stopping")
    return action


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
    if not s.world.is_main:
        # The metrics are already reduced over ranks: every rank keeps the row so that the early-warning rules
        # (and ``trainer.on_collapse``) decide the same on every rank; rank 0 alone writes it.
        s.watch.rows.append({"step": int(step), "split": split, "metrics": dict(metrics)})
        return
    row = s.writer.write(step, split, metrics)
    s.watch.rows.append(row)
    if s.sink is not None:
        s.sink.deliver([row])
