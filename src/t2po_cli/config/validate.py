"""Cross-field checks that run before anything starts. Each failure says how to fix it."""

from __future__ import annotations

import math

from t2po_cli.checks import choice as _choice
from t2po_cli.checks import in_range as _range
from t2po_cli.checks import positive as _positive
from t2po_cli.config import schema as s
from t2po_cli.errors import ConfigError


def _finite_floats(cfg: s.RunConfig) -> None:
    """Reject nan/inf anywhere: range checks written as ``value < lo`` are all False for nan, so
    ``trainer.lr=nan`` used to pass validation and only fail (or silently skip every step) at run time."""
    from dataclasses import fields, is_dataclass

    def walk(node: object, prefix: str) -> None:
        for f in fields(node):  # type: ignore[arg-type]
            value = getattr(node, f.name)
            if is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            elif isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{prefix}{f.name}={value} is not a finite number; give a real value")

    walk(cfg, "")


def _names(cfg: s.RunConfig) -> None:
    """run_name and experiment_name become folder names under runs_root: they must not escape it
    (``run_name=../x`` or ``/abs`` used to be silently renamed; dry runs showed the escaped path)."""
    from t2po_cli.errors import UserError
    from t2po_cli.run_folder import check_name

    for key, value in (("run_name", cfg.run_name), ("experiment_name", cfg.experiment_name)):
        if value is None:
            continue
        try:
            check_name(str(value), key)
        except UserError as e:
            raise ConfigError(str(e)) from None


def validate_config(cfg: s.RunConfig) -> None:
    """Raise ``ConfigError`` on the first inconsistent setting.

    Env and estimator names come from their registries (``envs.registry``, ``algo.registry``); each estimator
    section and the ``t2po`` section validate their own fields. Nothing here imports torch.
    """
    from t2po_cli.algo.registry import estimator_names, get_estimator
    from t2po_cli.envs.base import BACKENDS, EXECUTORS, REWARDS
    from t2po_cli.envs.registry import env_names, get_family

    _finite_floats(cfg)
    _names(cfg)
    _choice(cfg.env.name, env_names(), "env.name")
    _choice(cfg.env.backend, BACKENDS, "env.backend")
    _choice(cfg.env.executor, EXECUTORS, "env.executor")
    if cfg.env.name in env_names():
        _choice(cfg.env.prompt_style, get_family(cfg.env.name).prompt_styles, "env.prompt_style")
    _choice(cfg.env.reward, REWARDS, "env.reward")
    estimator = get_estimator(cfg.algo.name)
    for name in estimator_names():  # every section is checked: a bad value must not wait for its algo
        section = getattr(cfg.algo, name)
        if hasattr(section, "validate"):
            section.validate(f"algo.{name}")
    _choice(cfg.model.kind, s.MODEL_KINDS, "model.kind")
    _choice(cfg.model.dtype, s.DTYPES, "model.dtype")
    _choice(cfg.trainer.engine, s.ENGINES, "trainer.engine")
    _choice(cfg.launcher.name, s.LAUNCHERS, "launcher.name")
    _choice(cfg.trainer.distributed.strategy, s.STRATEGIES, "trainer.distributed.strategy")
    _positive(cfg.trainer.distributed.timeout_s, "trainer.distributed.timeout_s")
    _choice(cfg.trainer.on_collapse, s.ON_COLLAPSE, "trainer.on_collapse")
    cfg.t2po.validate("t2po")

    t = cfg.trainer
    _range(t.warmstart.truncated_think_rate, 0.0, 1.0, "trainer.warmstart.truncated_think_rate")
    for key, val in (
        ("trainer.steps", t.steps),
        ("trainer.tasks_per_step", t.tasks_per_step),
        ("trainer.group_size", t.group_size),
        ("trainer.max_response_tokens", t.max_response_tokens),
        ("trainer.max_prompt_tokens", t.max_prompt_tokens),
        ("trainer.ppo_epochs", t.ppo_epochs),
        ("trainer.micro_batch_rows", t.micro_batch_rows),
        ("env.num_train_tasks", cfg.env.num_train_tasks),
        ("env.num_val_tasks", cfg.env.num_val_tasks),
        ("model.lora.r", cfg.model.lora.r),
        ("launcher.max_parallel", cfg.launcher.max_parallel),
    ):
        _positive(val, key)
    for key, val in (
        ("trainer.val_every", t.val_every),
        ("trainer.save_every", t.save_every),
        ("trainer.val_tasks", t.val_tasks),
        ("trainer.mini_batch_rows", t.mini_batch_rows),
        ("trainer.threads", t.threads),
        ("trainer.entropy_coef", t.entropy_coef),
        ("trainer.kl_coef", t.kl_coef),
        ("env.history_length", cfg.env.history_length),
        ("trainer.max_rollbacks", t.max_rollbacks),
        ("diagnostics.template_mi_samples", cfg.diagnostics.template_mi_samples),
        ("diagnostics.grad_norm_min_points", cfg.diagnostics.grad_norm_min_points),
    ):
        _positive(val, key, allow_zero=True)
    _positive(t.lr, "trainer.lr")
    _positive(t.grad_clip, "trainer.grad_clip")
    _range(t.warmup_ratio, 0.0, 1.0, "trainer.warmup_ratio")
    _range(t.rollback_lr_factor, 0.0, 1.0, "trainer.rollback_lr_factor", lo_open=True)
    _positive(cfg.diagnostics.grad_norm_window, "diagnostics.grad_norm_window")
    w, wk = cfg.diagnostics.warnings, "diagnostics.warnings"
    for name in ("min_history", "spread_smooth", "zero_spread_persist", "cov_persist", "mult_error_persist",
                 "entropy_rise_baseline", "entropy_rise_persist"):
        _positive(getattr(w, name), f"{wk}.{name}")
    for name in ("spread_frac", "zero_spread_rate", "zero_spread_from", "zero_spread_max_success",
                 "cov_entropy_drop"):
        _range(getattr(w, name), 0.0, 1.0, f"{wk}.{name}")
    _positive(w.spread_min_peak, f"{wk}.spread_min_peak", allow_zero=True)
    _positive(w.grad_z_max, f"{wk}.grad_z_max")
    if w.entropy_rise_factor <= 1.0:
        raise ConfigError(f"{wk}.entropy_rise_factor={w.entropy_rise_factor:g} would fire on a flat entropy; "
                          "use a value above 1, e.g. 1.5")
    if w.mult_error_max < 1.0:
        raise ConfigError(f"{wk}.mult_error_max={w.mult_error_max:g} is below 1 (exp|Δ log p| >= 1 always, the "
                          "rule would fire every step); use a value above 1, e.g. 1.05")
    if cfg.diagnostics.template_mi_samples == 1:
        raise ConfigError("diagnostics.template_mi_samples=1 cannot compare prompts; set 0 (off) or N >= 2")
    for phase in ("train_sampling", "val_sampling"):
        sp: s.SamplingConfig = getattr(t, phase)
        _positive(sp.temperature, f"trainer.{phase}.temperature", allow_zero=True)
        _range(sp.top_p, 0.0, 1.0, f"trainer.{phase}.top_p", lo_open=True)
        _positive(sp.top_k, f"trainer.{phase}.top_k", allow_zero=True)

    if cfg.env.max_turns is not None:
        _positive(cfg.env.max_turns, "env.max_turns")
    if t.group_size < estimator.min_group_size:
        raise ConfigError(
            f"algo {cfg.algo.name} needs trainer.group_size >= {estimator.min_group_size} (got {t.group_size}); "
            f"set trainer.group_size=4 or use an estimator without a group baseline (algo=ppo)"
        )
    rows_per_step = t.tasks_per_step * t.group_size
    if t.mini_batch_rows and rows_per_step % t.mini_batch_rows:
        raise ConfigError(
            f"trainer.tasks_per_step × trainer.group_size = {rows_per_step} episodes is not divisible by "
            f"trainer.mini_batch_rows={t.mini_batch_rows}; pick a divisor"
        )
    if t.max_prompt_tokens + t.max_response_tokens > cfg.model.max_position_embeddings and cfg.model.kind == "tiny":
        raise ConfigError(
            f"trainer.max_prompt_tokens + trainer.max_response_tokens exceeds model.max_position_embeddings="
            f"{cfg.model.max_position_embeddings}; lower them or raise the model's context"
        )

    a = cfg.algo
    _range(a.clip_low, 0.0, 1.0, "algo.clip_low", lo_open=True, hi_open=True)
    _positive(a.clip_high, "algo.clip_high")
    if a.dual_clip_c <= 1.0:
        raise ConfigError(f"algo.dual_clip_c={a.dual_clip_c} must be > 1 (the paper uses 3.0)")
    _positive(a.invalid_action_penalty_coef, "algo.invalid_action_penalty_coef", allow_zero=True)
    if estimator.needs_gold_answers and not get_family(cfg.env.name).has_gold_answers:
        raise ConfigError(
            f"algo={a.name} needs gold answers, which env {cfg.env.name} does not have; "
            f"use an env with gold answers (`t2po envs list`) or another algo"
        )

    if cfg.trainer.constrained_queries and not cfg.trainer.constrained_actions:
        raise ConfigError("trainer.constrained_queries=true needs trainer.constrained_actions=true")
    if cfg.trainer.engine == "vllm" and cfg.model.kind == "tiny":
        raise ConfigError("trainer.engine=vllm needs a real checkpoint; use model=smollm2-135m or a GPU model recipe")
    if cfg.launcher.name == "slurm" and not cfg.launcher.profile:
        raise ConfigError("launcher=slurm needs a profile; add --profile NAME (see slurm/*.yaml)")
    if cfg.trainer.distributed.strategy == "fsdp" and (cfg.model.value_head or estimator.needs_values):
        raise ConfigError(
            f"trainer.distributed.strategy=fsdp does not shard a value head (algo={cfg.algo.name}); "
            "use trainer.distributed.strategy=ddp"
        )
    if cfg.launcher.name == "local":
        validate_world(cfg, cfg.launcher.nproc)
    elif cfg.launcher.nproc != 1:
        raise ConfigError("launcher.nproc applies to the local launcher; on Slurm set nodes and tasks_per_node "
                          "in the profile")
    if cfg.model.kind == "hf" and not cfg.model.path:
        raise ConfigError("model.kind=hf needs model.path (a local folder or a cached hub id)")


def validate_world(cfg: s.RunConfig, nproc: int) -> None:
    """Checks for a run of ``nproc`` ranks (``t2po train --nproc N`` or a multi-task Slurm profile).

    Raises:
        ConfigError: several ranks without a strategy, or fewer tasks than ranks (every rank plays whole
            task groups, so each needs at least one task per step and, when validating, one validation task).
    """
    t = cfg.trainer
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} must be >= 1")
    if nproc > 1 and t.distributed.strategy == "none":
        raise ConfigError(f"--nproc {nproc} needs trainer.distributed.strategy=ddp (or fsdp)")
    if t.tasks_per_step < nproc:
        raise ConfigError(
            f"trainer.tasks_per_step={t.tasks_per_step} < {nproc} ranks: each rank plays whole task groups; "
            f"set trainer.tasks_per_step={nproc} or more"
        )
    if t.val_every and min(t.val_tasks, cfg.env.num_val_tasks) < nproc:
        raise ConfigError(f"trainer.val_tasks={t.val_tasks} < {nproc} ranks; set trainer.val_tasks={nproc} or more")
