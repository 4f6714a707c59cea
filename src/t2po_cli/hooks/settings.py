"""The T2PO switches: the ``t2po`` section of the run config (t2po.md §3-§7), validated here.

``hooks.factory.build_hooks`` turns these settings into the token hook (TTI) and the turn hook (TDS).
Torch-free: the config layer imports this module to build and check its schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from t2po_cli.checks import choice, in_range, positive
from t2po_cli.errors import ConfigError
from t2po_cli.hooks.calibration import AUTO

COMPAT = ("intended", "released")
"""``t2po.compat``: follow the method's intent, or reproduce the released code's quirks (t2po.md §8)."""
VARIANTS = ("on", "off", "tti", "tds")
"""``t2po.variant``: which switch set a recipe selected (recorded for reports)."""


@dataclass
class TTIConfig:
    """Token-level thinking intervention (t2po.md §3)."""

    enabled: bool = False
    """Run the hook that forces ``</think>``."""
    tau: float | str = 1e-4
    """τ, the stagnation threshold: a step with |M_t − M_{t−1}| <= τ counts towards ``patience`` (t2po.md §3.3;
    the released code calls it ε). ``--tau`` on the CLI and in sweeps. ``auto``: τ is the ``tau_quantile``
    quantile of the recent per-token |ΔM| of training rollouts (hooks/calibration.py; 1e-4 before any)."""
    tau_quantile: float = 0.05
    """With ``tau=auto``: the (low) quantile of the running per-token |ΔM| distribution taken as τ."""
    window: int = 8192
    """With ``tau=auto``: how many recent per-token |ΔM| values the running distribution keeps."""
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
    eta: float | str = 0.3
    """Upper edge of the resample band 0 < Δ < eta. ``auto``: chosen at every turn from the recent eligible Δ so
    that a fraction ``target_rate`` of them falls in the band (hooks/calibration.py)."""
    target_rate: float = 0.2
    """With ``eta=auto``: the resample rate (share of eligible env-turns regenerated) η is tuned to."""
    window: int = 512
    """With ``eta=auto``: how many recent eligible Δ (this turn's included) η is computed from."""
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

    def validate(self, key: str = "t2po") -> None:
        """Raise ``ConfigError`` on the first bad value (one line naming the key and the fix)."""
        choice(self.compat, COMPAT, f"{key}.compat")
        choice(self.variant, VARIANTS, f"{key}.variant")
        in_range(self.alpha, 0.0, 1.0, f"{key}.alpha")
        for name, value in ((f"{key}.tti.tau", self.tti.tau), (f"{key}.tds.eta", self.tds.eta)):
            if isinstance(value, str):
                if value != AUTO:
                    raise ConfigError(f"{name}={value!r} is neither a number nor 'auto'; set {name}=auto or a number")
                if self.compat == "released":
                    raise ConfigError(f"{name}=auto is not part of the released code; with {key}.compat=released "
                                      f"set {name} to a number")
        if not isinstance(self.tti.tau, str):
            positive(self.tti.tau, f"{key}.tti.tau", allow_zero=True)
        in_range(self.tti.tau_quantile, 0.0, 1.0, f"{key}.tti.tau_quantile")
        positive(self.tti.window, f"{key}.tti.window")
        if self.tti.patience is not None:
            positive(self.tti.patience, f"{key}.tti.patience")
        if self.tti.max_think_tokens is not None:
            positive(self.tti.max_think_tokens, f"{key}.tti.max_think_tokens")
        if not isinstance(self.tds.eta, str):
            positive(self.tds.eta, f"{key}.tds.eta")
        in_range(self.tds.target_rate, 0.0, 1.0, f"{key}.tds.target_rate", lo_open=True, hi_open=True)
        positive(self.tds.window, f"{key}.tds.window")
        positive(self.tds.max_resamples, f"{key}.tds.max_resamples", allow_zero=True)
        positive(self.tds.skip_tokens, f"{key}.tds.skip_tokens", allow_zero=True)
