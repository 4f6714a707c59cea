"""A²TGPO: information-gain turn advantages with turn-group normalisation and adaptive turn-level clipping.

The settings below are the ``algo.a2tgpo`` config section; keys left null take the preset's value
(a2tgpo.md §8: explicit keys win). The presets are data (``PRESETS``); ``resolved()`` applies them. The
torch math lives in ``algo.a2tgpo`` (advantages) and ``algo.turn_clip`` (the loss that replaces PPO-clip).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from t2po_cli.algo.registry import Estimator, EstimatorInputs, EstimatorOutput
from t2po_cli.checks import choice, in_range
from t2po_cli.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # default: structure from the paper, numbers from the released scripts (§8).
    "default": {"ig_baseline": "query", "ig_measure": "after_observation", "ig_drop_zero": False,
                "ig_weight": 0.3, "loss_agg": "token-mean", "norm_var_eps": 1e-8, "turn_spans": "explicit"},
    # paper: rows 2, 5, 6 from the paper (λ = 1, per-trajectory loss mean, ε_var = 0). Row 1 (ig_form) is
    # never taken from a preset: set ig_form=linear yourself for the paper's Eq. 3.
    "paper": {"ig_baseline": "query", "ig_measure": "after_observation", "ig_drop_zero": False,
              "ig_weight": 1.0, "loss_agg": "seq-mean-token-mean", "norm_var_eps": 0.0, "turn_spans": "explicit"},
    # released: every row from the released column; rows 7-9 exist only in the trajectory token layout.
    "released": {"ig_baseline": "first_turn", "ig_measure": "released_cuts", "ig_drop_zero": True,
                 "ig_weight": 0.3, "loss_agg": "token-mean", "norm_var_eps": 1e-8, "turn_spans": "advantage_runs"},
}
"""§8 presets: the value of every preset-able (nullable) key per preset."""


@dataclass
class A2TGPOParams:
    """``algo.a2tgpo``: A²TGPO settings (a2tgpo.md; the comments give the §8 row)."""

    preset: str = "default"
    """``default`` (paper structure, released numbers), ``paper`` or ``released`` (§8)."""
    ig_form: str = "log"
    """Row 1, IG form: ``log`` (ℓ_t − ℓ_{t−1}, released) or ``linear`` (p_t − p_{t−1}, paper Eq. 3).
    Always explicit (never taken from the preset)."""
    ig_context: str = "next_prompt"
    """§2.4 layout of the scoring context: ``next_prompt`` (one row per turn, what the trainer rolls out) or
    ``trajectory`` (one growing assistant sequence, the released layout)."""
    ig_baseline: str | None = None
    """Row 3: ``query`` (turn 1 measured against the query-only prompt) or ``first_turn`` (the first point
    only seeds the baseline); null = preset."""
    ig_measure: str | None = None
    """Row 4: ``after_observation`` or ``released_cuts`` (trajectory layout only); null = preset."""
    ig_drop_zero: bool | None = None
    """Row 8: drop IG values of exactly 0 as the release does; null = preset."""
    ig_weight: float | None = None
    """Row 2: λ, weight of the accumulated IG term in Â = λ·D/√n + R̂; null = preset (0.3; paper 1.0)."""
    gamma: float = 1.0
    """Row 12: γ of the discounted IG accumulation."""
    variance_rescale: bool = True
    """§5: divide the accumulated IG by √n (false = the paper's ablation without D/√n)."""
    loss_agg: str | None = None
    """Row 5: ``token-mean`` or ``seq-mean-token-mean`` (per trajectory, then over trajectories); null = preset."""
    norm_var_eps: float | None = None
    """Row 6: ε_var inside the population std of the turn groups; null = preset (1e-8; paper 0)."""
    norm_eps: float = 1e-6
    """Row 6: ε added to σ in the turn-group and outcome normalisations."""
    turn_spans: str | None = None
    """Row 7: ``explicit`` (recorded at rollout) or ``advantage_runs`` (released inference); null = preset."""
    log_ratio_clamp: float | None = 10.0
    """Row 10: upper clamp of the turn-level mean log-ratio; null = off."""
    clip_adaptive: bool = True
    """§6: scale the clip range by c = 1 + β(2σ(îg) − 1); false sets c ≡ 1 (the β = 0 ablation)."""
    clip_beta: float = 0.3
    """Row 11: β of the adaptive clip scale."""
    clip_eps_low: float = 3e-3
    """§6: ε_low of the turn-level ratio (GSPO scale)."""
    clip_eps_high: float = 4e-3
    """§6: ε_high of the turn-level ratio."""

    def resolved(self) -> A2TGPOParams:
        """A copy with every null key taken from the preset (explicit keys win, §8)."""
        if self.preset not in PRESETS:
            raise ConfigError(f"algo.a2tgpo.preset={self.preset!r} is not one of {', '.join(PRESETS)}")
        table = PRESETS[self.preset]
        return replace(self, **{f.name: table[f.name] for f in fields(self)
                                if getattr(self, f.name) is None and f.name in table})

    def validate(self, key: str) -> None:
        choice(self.preset, PRESETS, f"{key}.preset")
        choice(self.ig_form, ("log", "linear"), f"{key}.ig_form")
        choice(self.ig_context, ("next_prompt", "trajectory"), f"{key}.ig_context")
        for name, options in (
            ("ig_baseline", ("query", "first_turn")),
            ("ig_measure", ("after_observation", "released_cuts")),
            ("loss_agg", ("token-mean", "seq-mean-token-mean")),
            ("turn_spans", ("explicit", "advantage_runs")),
        ):
            if getattr(self, name) is not None:
                choice(getattr(self, name), options, f"{key}.{name}")
        in_range(self.gamma, 0.0, 1.0, f"{key}.gamma")
        r = self.resolved()
        # The trainer rolls out next_prompt rows (one row per turn); the released token layout (released_cuts
        # measurement points, spans inferred from advantage runs) needs the trajectory context (§2.4).
        if r.ig_context == "next_prompt" and (r.ig_measure == "released_cuts" or r.turn_spans == "advantage_runs"):
            raise ConfigError(
                f"{key}.ig_measure={r.ig_measure} / {key}.turn_spans={r.turn_spans} need the trajectory layout, "
                f"which this trainer does not roll out; set {key}.ig_measure=after_observation "
                f"{key}.turn_spans=explicit"
            )


def advantages(inputs: EstimatorInputs, p: A2TGPOParams) -> EstimatorOutput:
    from t2po_cli.algo.a2tgpo import compute_a2tgpo_advantages
    from t2po_cli.algo.losses import broadcast_to_tokens
    from t2po_cli.algo.turn_clip import turn_clip_loss

    if inputs.gold_logps is None:
        raise ValueError("a2tgpo needs the gold answer's log-prob per row (the IG probe)")
    res = compute_a2tgpo_advantages(inputs.rows, inputs.gold_logps, p)
    traj = inputs.rows.traj_id

    def policy_loss(chunk: list[int], logps, old_logps, adv, mask):
        scale = broadcast_to_tokens(res.clip_scale[chunk].float(), mask)
        return turn_clip_loss(logps, old_logps, adv, scale, mask, p, traj_ids=traj[chunk])

    return EstimatorOutput(res.advantages, res.advantages, dict(res.stats), policy_loss=policy_loss,
                           warning=res.warning)


ESTIMATOR = Estimator(
    name="a2tgpo", params=A2TGPOParams, advantages=advantages, min_group_size=2, needs_gold_answers=True,
    summary="information-gain turn advantages, adaptive turn-level clip",
)
