"""Cross-field checks that run before anything starts. Each failure says how to fix it."""

from __future__ import annotations

import math

from t2po_cli.config import schema as s
from t2po_cli.errors import ConfigError

# Envs whose tasks carry gold answers (needed by A2TGPO's information gain).
ENVS_WITH_GOLD_ANSWERS = ("searchqa",)


def _choice(value: object, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}; set {key}=<one of them>")


def _range(value: float, lo: float, hi: float, key: str, *, lo_open: bool = False, hi_open: bool = False) -> None:
    bad = value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi)
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ConfigError(f"{key}={value} is out of range {lb}{lo}, {hi}{rb}; pick a value inside it")


def _positive(value: int | float, key: str, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value} must be {need}")


def _validate_a2tgpo(a: s.A2TGPOConfig, active: bool) -> None:
    _choice(a.preset, ("default", "paper", "released"), "a2tgpo.preset")
    _choice(a.ig_form, ("log", "linear"), "a2tgpo.ig_form")
    _choice(a.ig_context, ("trajectory", "next_prompt"), "a2tgpo.ig_context")
    for key, value, choices in (
        ("ig_baseline", a.ig_baseline, ("query", "first_turn")),
        ("ig_measure", a.ig_measure, ("after_observation", "released_cuts")),
        ("loss_agg", a.loss_agg, ("token-mean", "seq-mean-token-mean")),
        ("turn_spans", a.turn_spans, ("explicit", "advantage_runs")),
    ):
        if value is not None:
            _choice(value, choices, f"a2tgpo.{key}")
    _range(a.gamma, 0.0, 1.0, "a2tgpo.gamma")
    if not active:
        return  # the preset table lives in algo/ (torch); only consult it when A2TGPO is selected
    # The trainer rolls out next_prompt rows (one row per turn); the released token layout (released_cuts
    # measurement points, spans inferred from advantage runs) needs the trajectory context (a2tgpo.md §2.4).
    from t2po_cli.algo.a2tgpo import resolve_params

    preset = resolve_params(a.preset)
    measure = a.ig_measure if a.ig_measure is not None else getattr(preset, "ig_measure", None)
    spans = a.turn_spans if a.turn_spans is not None else getattr(preset, "turn_spans", None)
    if a.ig_context == "next_prompt" and (measure == "released_cuts" or spans == "advantage_runs"):
        raise ConfigError(
            f"a2tgpo ig_measure={measure} / turn_spans={spans} need the trajectory layout, which this trainer "
            "does not roll out; set a2tgpo.ig_measure=after_observation a2tgpo.turn_spans=explicit"
        )


def _finite_floats(cfg: s.RunConfig) -> None:
    """Reject nan/inf anywhere: range checks written as ``value < lo`` are all False for nan, so
    ``trainer.lr=nan`` used to pass validation and only fail (or silently skip every step) at run time."""
    from dataclasses import asdict

    from t2po_cli.config.compose import flatten

    for key, value in flatten(asdict(cfg)).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not a finite number; give a real value")


def _names(cfg: s.RunConfig) -> None:
    """run_name and experiment_name become folder names under runs_root: they must not escape it
    (``run_name=../x`` or ``/abs`` used to be silently renamed; dry runs showed the escaped path)."""
    from t2po_cli.errors import UserError
    from t2po_cli.jobs.run_folder import check_name

    for key, value in (("run_name", cfg.run_name), ("experiment_name", cfg.experiment_name)):
        if value is None:
            continue
        try:
            check_name(str(value), key)
        except UserError as e:
            raise ConfigError(str(e)) from None


def validate_config(cfg: s.RunConfig) -> None:
    """Raise ``ConfigError`` on the first inconsistent setting."""
    _finite_floats(cfg)
    _names(cfg)
    _choice(cfg.env.name, s.ENV_NAMES, "env.name")
    _choice(cfg.env.backend, s.BACKENDS, "env.backend")
    _choice(cfg.env.executor, ("inline", "thread", "process"), "env.executor")
    _choice(cfg.algo.name, s.ALGO_NAMES, "algo.name")
    _choice(cfg.algo.norm, s.ADV_NORMS, "algo.norm")
    _choice(cfg.model.kind, s.MODEL_KINDS, "model.kind")
    _choice(cfg.model.dtype, s.DTYPES, "model.dtype")
    _choice(cfg.trainer.engine, s.ENGINES, "trainer.engine")
    _choice(cfg.t2po.compat, s.T2PO_COMPAT, "t2po.compat")
    _choice(cfg.t2po.variant, ("on", "off", "tti", "tds"), "t2po.variant")
    _choice(cfg.launcher.name, s.LAUNCHERS, "launcher.name")
    _validate_a2tgpo(cfg.a2tgpo, active=cfg.algo.name == "a2tgpo")

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
        ("env.max_turns", cfg.env.max_turns),
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
        ("t2po.tds.max_resamples", cfg.t2po.tds.max_resamples),
        ("t2po.tds.skip_tokens", cfg.t2po.tds.skip_tokens),
    ):
        _positive(val, key, allow_zero=True)
    _positive(t.lr, "trainer.lr")
    _positive(t.grad_clip, "trainer.grad_clip")
    _range(t.warmup_ratio, 0.0, 1.0, "trainer.warmup_ratio")
    for phase in ("train_sampling", "val_sampling"):
        sp: s.SamplingConfig = getattr(t, phase)
        _positive(sp.temperature, f"trainer.{phase}.temperature", allow_zero=True)
        _range(sp.top_p, 0.0, 1.0, f"trainer.{phase}.top_p", lo_open=True)
        _positive(sp.top_k, f"trainer.{phase}.top_k", allow_zero=True)

    if t.group_size < 2 and cfg.algo.name in ("grpo", "gigpo", "rloo", "a2tgpo"):
        raise ConfigError(
            f"algo {cfg.algo.name} needs trainer.group_size >= 2 (got {t.group_size}); "
            "set trainer.group_size=4 or use algo=ppo"
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
    _range(a.gamma, 0.0, 1.0, "algo.gamma")
    _range(a.gae_lambda, 0.0, 1.0, "algo.gae_lambda")
    _range(a.similarity_threshold, 0.0, 1.0, "algo.similarity_threshold", lo_open=True, hi_open=True)
    _range(a.clip_low, 0.0, 1.0, "algo.clip_low", lo_open=True, hi_open=True)
    _positive(a.clip_high, "algo.clip_high")
    if a.dual_clip_c <= 1.0:
        raise ConfigError(f"algo.dual_clip_c={a.dual_clip_c} must be > 1 (the paper uses 3.0)")
    _positive(a.invalid_action_penalty_coef, "algo.invalid_action_penalty_coef", allow_zero=True)
    if a.name == "a2tgpo" and cfg.env.name not in ENVS_WITH_GOLD_ANSWERS:
        raise ConfigError(
            f"algo=a2tgpo needs gold answers, which env {cfg.env.name} does not have; "
            f"use env=searchqa or another algo"
        )

    tp = cfg.t2po
    _range(tp.alpha, 0.0, 1.0, "t2po.alpha")
    _positive(tp.tti.epsilon, "t2po.tti.epsilon", allow_zero=True)
    if tp.tti.patience is not None:
        _positive(tp.tti.patience, "t2po.tti.patience")
    if tp.tti.max_think_tokens is not None:
        _positive(tp.tti.max_think_tokens, "t2po.tti.max_think_tokens")
    _positive(tp.tds.eta, "t2po.tds.eta")
    if cfg.trainer.constrained_queries and not cfg.trainer.constrained_actions:
        raise ConfigError("trainer.constrained_queries=true needs trainer.constrained_actions=true")
    if cfg.trainer.engine == "vllm" and cfg.model.kind == "tiny":
        raise ConfigError("trainer.engine=vllm needs a real checkpoint; use model=smollm2-135m or a GPU model recipe")
    if cfg.launcher.name == "slurm" and not cfg.launcher.profile:
        raise ConfigError("launcher=slurm needs a profile; add --profile NAME (see slurm/*.yaml)")
    if cfg.model.kind == "hf" and not cfg.model.path:
        raise ConfigError("model.kind=hf needs model.path (a local folder or a cached hub id)")
