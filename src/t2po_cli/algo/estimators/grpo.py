"""GRPO: one episode-level advantage per trajectory, normalised within its task group (gigpo.md §8).

``cross_step_stats`` (the released ``compute_mean_std_cross_steps``, default) takes the group statistics over
every turn row of the group; false is "vanilla" GRPO with one sample per trajectory (its mean row score,
errata 5).
"""

from __future__ import annotations

from dataclasses import dataclass

from t2po_cli.algo.registry import Estimator, EstimatorInputs, EstimatorOutput
from t2po_cli.checks import choice

NORMS = ("mean_norm", "mean_std_norm")
"""Group normalisations: subtract the mean (``mean_norm``) or also divide by the std (``mean_std_norm``)."""


@dataclass
class GRPOParams:
    """``algo.grpo``: GRPO settings."""

    norm: str = "mean_std_norm"
    """``mean_norm`` (w/o std) or ``mean_std_norm`` (w/ std)."""
    cross_step_stats: bool = True
    """Group statistics over every turn row of the task group (true, released) or one per trajectory."""

    def validate(self, key: str) -> None:
        choice(self.norm, NORMS, f"{key}.norm")


def advantages(inputs: EstimatorInputs, p: GRPOParams) -> EstimatorOutput:
    from t2po_cli.algo.advantages import advantage_stats, episode_advantage, row_scores

    rows = inputs.rows
    scores = row_scores(rows.episode_reward, rows.invalid, inputs.penalty)
    adv = episode_advantage(scores, rows.group_id, rows.traj_id, p.norm, p.cross_step_stats)
    return EstimatorOutput(adv, adv, advantage_stats(adv))


ESTIMATOR = Estimator(
    name="grpo", params=GRPOParams, advantages=advantages, min_group_size=2,
    summary="episode-level group-normalised advantage",
)
