"""GiGPO: episode-level group advantage plus anchor-state step advantage, A = A^E + w·A^S (gigpo.md §3-7)."""

from __future__ import annotations

from dataclasses import dataclass

from t2po_cli.algo.estimators.grpo import NORMS
from t2po_cli.algo.registry import Estimator, EstimatorInputs, EstimatorOutput
from t2po_cli.checks import choice, in_range


@dataclass
class GiGPOParams:
    """``algo.gigpo``: GiGPO settings."""

    norm: str = "mean_std_norm"
    """Group normalisation of both levels: ``mean_norm`` or ``mean_std_norm``."""
    cross_step_stats: bool = True
    """Episode level: statistics over every turn row of the task group (true) or one per trajectory."""
    gamma: float = 0.95
    """γ of the discounted step returns (§4)."""
    step_advantage_w: float = 1.0
    """w, the weight of the step-level advantage."""
    similarity_grouping: bool = False
    """Cluster anchor observations by difflib similarity instead of exact match (§5)."""
    similarity_threshold: float = 0.95
    """Similarity threshold in (0, 1)."""

    def validate(self, key: str) -> None:
        choice(self.norm, NORMS, f"{key}.norm")
        in_range(self.gamma, 0.0, 1.0, f"{key}.gamma")
        in_range(self.similarity_threshold, 0.0, 1.0, f"{key}.similarity_threshold", lo_open=True, hi_open=True)


def advantages(inputs: EstimatorInputs, p: GiGPOParams) -> EstimatorOutput:
    from t2po_cli.algo.advantages import advantage_stats, gigpo_advantages

    adv, _ = gigpo_advantages(inputs.rows, p, inputs.penalty)
    return EstimatorOutput(adv, adv, advantage_stats(adv))


ESTIMATOR = Estimator(
    name="gigpo", params=GiGPOParams, advantages=advantages, min_group_size=2,
    summary="episode advantage + anchor-state step advantage",
)
