"""The T2PO switches: the ``t2po`` section of the run config (t2po.md §3-§7), validated here.

``hooks.factory.build_hooks`` turns these settings into the token hook (TTI) and the turn hook (TDS).
Torch-free: the config layer imports this module to build and check its schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from t2po_cli.checks import choice, in_range, positive

COMPAT = ("intended", "released")
"""``t2po.compat``: follow the method's intent, or reproduce the released code's quirks (t2po.md §8)."""
VARIANTS = ("on", "off", "tti", "tds")
"""``t2po.variant``: which switch set a recipe selected (recorded for reports)."""


@dataclass
class TTIConfig:
    """Token-level thinking intervention (t2po.md §3)."""

    enabled: bool = False
    """Run the hook that forces ``</think>``."""
    tau: float = 1e-4
    """τ, the stagnation threshold: a step with |M_t − M_{t−1}| <= τ counts towards ``patience`` (t2po.md §3.3;
    the released code calls it ε). ``--tau`` on the CLI and in sweeps."""
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

    def validate(self, key: str = "t2po") -> None:
        """Raise ``ConfigError`` on the first bad value (one line naming the key and the fix)."""
        choice(self.compat, COMPAT, f"{key}.compat")
        choice(self.variant, VARIANTS, f"{key}.variant")
        in_range(self.alpha, 0.0, 1.0, f"{key}.alpha")
        positive(self.tti.tau, f"{key}.tti.tau", allow_zero=True)
        if self.tti.patience is not None:
            positive(self.tti.patience, f"{key}.tti.patience")
        if self.tti.max_think_tokens is not None:
            positive(self.tti.max_think_tokens, f"{key}.tti.max_think_tokens")
        positive(self.tds.eta, f"{key}.tds.eta")
        positive(self.tds.max_resamples, f"{key}.tds.max_resamples", allow_zero=True)
        positive(self.tds.skip_tokens, f"{key}.tds.skip_tokens", allow_zero=True)
