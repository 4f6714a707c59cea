"""Every metric key, defined once. Names are ``group/name``; validation rows use the ``val/`` prefix.

Renaming a key breaks comparisons across runs: record every rename in CHANGELOG.md.
The released GiGPO/T2PO names are kept where they exist (gigpo.md §9, t2po.md §9).
"""

from __future__ import annotations

# Episode outcomes (rollout)
SUCCESS_RATE = "episode/success_rate"
REWARD_MEAN = "episode/reward/mean"
SCORE_MEAN = "episode/score/mean"
EPISODE_LENGTH = "episode/length/mean"
VALID_ACTION_RATIO = "episode/valid_action_ratio"
TOKENS_PER_EPISODE = "episode/tokens/mean"
RESPONSE_LENGTH_MEAN = "response_length/mean"
RESPONSE_LENGTH_MAX = "response_length/max"
RESPONSE_LENGTH_MIN = "response_length/min"
RESPONSE_CLIP_RATIO = "response_length/clip_ratio"
ZERO_VARIANCE_GROUPS = "episode/zero_variance_group_rate"

# Policy statistics (update)
PG_LOSS = "actor/pg_loss"
PG_CLIPFRAC = "actor/pg_clipfrac"
PG_CLIPFRAC_LOWER = "actor/pg_clipfrac_lower"
PPO_KL = "actor/ppo_kl"
ENTROPY = "actor/entropy"
ENTROPY_LOSS = "actor/entropy_loss"
KL_LOSS = "actor/kl_loss"
GRAD_NORM = "actor/grad_norm"
LR = "actor/lr"
VALUE_LOSS = "critic/value_loss"
ADVANTAGE_MEAN = "critic/advantages/mean"
ADVANTAGE_MAX = "critic/advantages/max"
ADVANTAGE_MIN = "critic/advantages/min"
SKIPPED_STEPS = "actor/skipped_steps"
GRAD_NORM_NONFINITE = "actor/grad_norm_nonfinite"

# Rollout signal
SIGNAL_MEAN = "rollout/signal_mean"
ROLLOUT_ENTROPY = "rollout/entropy_mean"

# Throughput and timing
TOKENS_PER_S = "perf/tokens_per_s"
STEP_TIME = "timing_s/step"
ROLLOUT_TIME = "timing_s/rollout"
UPDATE_TIME = "timing_s/update"
TDS_TIME = "timing_s/tds"
GENERATED_TOKENS = "perf/generated_tokens"

# T2PO (t2po.md §9)
TTI_TAU = "t2po/tti/tau"  # τ in use: fixed, or the self-calibrated value (mean over the step's turns)
TTI_INTERVENTIONS_PER_TURN = "t2po/tti/interventions_per_turn"
TTI_INTERVENTION_RATE = "t2po/tti/intervention_rate"
TTI_BUDGET_RATE = "t2po/tti/budget_rate"
TTI_STAGNATION_RATE = "t2po/tti/stagnation_rate"
TTI_THINK_TOKENS_MEAN = "t2po/tti/think_tokens_mean"
TTI_THINK_LEN_AT_INTERVENTION = "t2po/tti/think_len_at_intervention_mean"
TTI_TOKENS_SAVED_UPPER = "t2po/tti/tokens_saved_upper"
TTI_UNCLOSED_THINK_RATE = "t2po/tti/unclosed_think_rate"
TURN_SCORE_MEAN = "t2po/turn_score/mean"
TURN_SCORE_STD = "t2po/turn_score/std"
TURN_SCORE_MISSING_RATE = "t2po/turn_score/missing_rate"
TDS_ELIGIBLE = "t2po/tds/eligible"
TDS_ETA = "t2po/tds/eta"  # η in use: fixed, or the step's mean of the self-calibrated per-turn values
TDS_RESAMPLE_RATE = "t2po/tds/resample_rate"
TDS_RESAMPLES_PER_TURN = "t2po/tds/resamples_per_turn"
TDS_EXHAUSTED_RATE = "t2po/tds/exhausted_rate"
TDS_EXTRA_GEN_TOKENS = "t2po/tds/extra_gen_tokens"
TDS_DELTA_MEAN = "t2po/tds/delta/mean"
TDS_DELTA_P10 = "t2po/tds/delta/p10"
TDS_DELTA_P50 = "t2po/tds/delta/p50"
TDS_DELTA_P90 = "t2po/tds/delta/p90"
TDS_DELTA_ZERO_RATE = "t2po/tds/delta_zero_rate"
TDS_DELTA_IN_BAND_RATE = "t2po/tds/delta_in_band_rate"
TDS_DELTA_ABOVE_ETA_RATE = "t2po/tds/delta_above_eta_rate"
TDS_ACCEPT_ATTEMPT_HIST = "t2po/tds/accept_attempt_hist"
"""Prefix: ``{prefix}/{k}`` is the fraction of eligible env-turns accepted at attempt k (0…max_resamples)."""
TURN_SCORE_BY_TURN = "t2po/turn_score/by_turn"
"""Prefix: ``{prefix}/{t}`` is the mean accepted turn score at turn index t."""

# A2TGPO (a2tgpo.md §9 names, written by algo.a2tgpo / algo.turn_clip; true IG values, errata 20).
# The ``A2TGPO_*`` prefixes take ``/mean``, ``/std``, ``/min``, ``/max`` and ``/by_turn/{t}`` (t 1-based).
A2TGPO_IG_RAW = "a2tgpo/ig_raw"
A2TGPO_IG_NORM = "a2tgpo/ig_norm"
A2TGPO_CLIP_SCALE = "a2tgpo/clip_scale"
A2TGPO_ADV = "a2tgpo/adv"
A2TGPO_OUTCOME_NORM = "a2tgpo/outcome_norm"
A2TGPO_IG_RAW_MEAN = f"{A2TGPO_IG_RAW}/mean"
A2TGPO_IG_RAW_STD = f"{A2TGPO_IG_RAW}/std"
A2TGPO_IG_NORM_MEAN = f"{A2TGPO_IG_NORM}/mean"
A2TGPO_IG_NORM_STD = f"{A2TGPO_IG_NORM}/std"
A2TGPO_ADV_MEAN = f"{A2TGPO_ADV}/mean"
A2TGPO_IG_RAW_GROUP_STD_MEDIAN = "a2tgpo/ig_raw_group_std_median"
A2TGPO_SINGLETON_TURN_GROUPS = "a2tgpo/singleton_turn_groups"
A2TGPO_TURNS_PER_TRAJ_MEAN = "a2tgpo/turns_per_traj/mean"
A2TGPO_ZERO_CALL_RATE = "a2tgpo/zero_call_rate"
A2TGPO_PG_CLIPFRAC_UPPER = "a2tgpo/pg_clipfrac_upper"
A2TGPO_PG_CLIPFRAC_LOWER = "a2tgpo/pg_clipfrac_lower"
A2TGPO_IG_FORWARD_TIME = "timing_s/ig_forward"

VAL_PREFIX = "val/"


def val(key: str) -> str:
    """The validation name of a metric key."""
    return VAL_PREFIX + key

# Early-warning diagnostics (diag/signals.py math, written by the trainer; rules in tracking/early_warning.py)
DIAG_REWARD_SPREAD = "diag/reward_spread"
"""Mean over task groups of the population std of episode rewards."""
DIAG_ZERO_SPREAD_GROUPS = "diag/zero_spread_groups"
"""Fraction of task groups whose episode rewards are all equal."""
DIAG_ENTROPY_ADV_COV = "diag/entropy_adv_cov"
"""Token mean of (A − Ā)(log π − mean log π) over response tokens (arXiv 2505.22617)."""
DIAG_LOGP_MISMATCH = "diag/logp_mismatch"
"""Token mean of |log π_rollout − log π_trainer|."""
DIAG_LOGP_MULT_ERROR = "diag/logp_mult_error"
"""Token mean of exp|log π_rollout − log π_trainer| (NeMo-RL ``token_mult_prob_error``; investigate > 1.05)."""
DIAG_TEMPLATE_MI = "diag/template_mi"
"""Template collapse (RAGEN-2): mean of log p(r_i|x_i) − log mean_j p(r_i|x_j), length-normalised."""
DIAG_TEMPLATE_RETRIEVAL_ACC = "diag/template_retrieval_acc"
"""Template collapse: share of sampled responses whose own prompt scores them highest."""
DIAG_GRAD_NORM_Z = "diag/grad_norm_z"
"""Robust z-score (median/MAD) of the gradient norm against the previous steps' window."""
DIAG_CLIP_FRAC_LOW = "diag/clip_frac_low"
"""Share of response tokens with A < 0 and ratio below 1 − ε_low (clipped on the low side)."""
DIAG_CLIP_FRAC_HIGH = "diag/clip_frac_high"
"""Share of response tokens with A > 0 and ratio above 1 + ε_high (clipped on the high side)."""
DIAG_KEYS = (
    DIAG_REWARD_SPREAD, DIAG_ZERO_SPREAD_GROUPS, DIAG_ENTROPY_ADV_COV, DIAG_LOGP_MISMATCH, DIAG_LOGP_MULT_ERROR,
    DIAG_TEMPLATE_MI, DIAG_TEMPLATE_RETRIEVAL_ACC, DIAG_GRAD_NORM_Z, DIAG_CLIP_FRAC_LOW, DIAG_CLIP_FRAC_HIGH,
)
"""Every diag/* key, in the order the report plots them."""
