"""Build the T2PO hooks of one rollout phase from the run config (t2po.md §3.4, §5.1, §6).

Both switches off gives ``(None, None)``: the engine and collector then run exactly the baseline path.
Build once per phase and keep the hooks for the whole run: under ``compat=released`` the token-hook
factory owns worker state that must persist across generate calls (§3.7, §4.2).
"""

from __future__ import annotations

from typing import Literal

from t2po_cli.hooks.calibration import AUTO, TauCalibrator
from t2po_cli.hooks.settings import T2POConfig
from t2po_cli.hooks.tds import DynamicalSampler
from t2po_cli.hooks.tti import ReleasedState, ThinkHookFactory, TTIParams

TAU_WARMUP = 1e-4
"""τ of the first training generate call under ``t2po.tti.tau=auto`` (no |ΔM| seen yet): the paper's ε."""


def build_hooks(
    tp: T2POConfig,
    think_ids: tuple[int, int] | None,
    phase: Literal["train", "val"],
    max_response_tokens: int,
    *,
    env_max_think_tokens: int | None = None,
    released_state: ReleasedState | None = None,
    tau_calibrator: TauCalibrator | None = None,
) -> tuple[ThinkHookFactory | None, DynamicalSampler | None]:
    """The token-hook factory and the turn hook of one phase.

    * TTI forces in training, and in validation only when ``t2po.tti.in_validation``.
    * TDS runs in training only (§5.1: validation uses the plain loop).
    * With TDS on and TTI off, the token hook still runs to compute turn scores but never forces; it
      consumes no random numbers (hooks never sample).

    Args:
        tp: the validated ``t2po`` section (never mutated).
        think_ids: ``resolve_think_ids(tokenizer)``; may be None only when TTI is off.
        phase: ``train`` or ``val``.
        max_response_tokens: the per-turn response budget of this phase.
        env_max_think_tokens: the env's default think budget (``env.max_think_tokens``), used when
            ``t2po.tti.max_think_tokens`` is null (§7).
        released_state: under ``compat=released``, pass the train factory's ``released_state`` when
            building the validation hooks: the released processor is one object per worker for both.
        tau_calibrator: with ``t2po.tti.tau=auto``, pass the train factory's ``calibrator`` when building
            the validation hooks: validation then uses the training τ and does not update it.

    Returns:
        ``(token_hook_factory or None, turn_hook or None)``.
    """
    tti_on = tp.tti.enabled and (phase == "train" or tp.tti.in_validation)
    tds_on = tp.tds.enabled and phase == "train"
    if not (tti_on or tds_on):
        return None, None
    tau_auto = tp.tti.tau == AUTO
    params = TTIParams(
        think_ids=think_ids,
        max_response_tokens=max_response_tokens,
        tti_enabled=tti_on,
        tau=TAU_WARMUP if tau_auto else float(tp.tti.tau),
        patience=tp.tti.patience,
        max_think_tokens=tp.tti.max_think_tokens if tp.tti.max_think_tokens is not None else env_max_think_tokens,
        skip_tokens=tp.tds.skip_tokens,
        compat=tp.compat,
    )
    calibrator = None
    if tau_auto and tti_on:
        calibrator = tau_calibrator or TauCalibrator(tp.tti.tau_quantile, tp.tti.window, TAU_WARMUP)
    factory = ThinkHookFactory(params, released_state, calibrator=calibrator, learn=phase == "train")
    sampler = None
    if tds_on:
        eta = None if tp.tds.eta == AUTO else float(tp.tds.eta)
        sampler = DynamicalSampler(eta, tp.tds.max_resamples, tp.compat, target_rate=tp.tds.target_rate,
                                   window=tp.tds.window)
    return factory, sampler
