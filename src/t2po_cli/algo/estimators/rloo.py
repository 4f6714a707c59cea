"""RLOO: leave-one-out baseline over the turn rows of a task group, as in the released code base (errata 4)."""

from __future__ import annotations

from dataclasses import dataclass

from t2po_cli.algo.registry import Estimator, EstimatorInputs, EstimatorOutput


@dataclass
class RLOOParams:
    """``algo.rloo``: RLOO settings."""

    cross_step_stats: bool = True
    """Leave-one-out over every turn row of the group (true, released) or over trajectories, each
    represented by its first row (the released ``compute_mean_std_cross_steps=False``)."""


def advantages(inputs: EstimatorInputs, p: RLOOParams) -> EstimatorOutput:
    from t2po_cli.algo.advantages import advantage_stats, rloo_advantages, row_scores

    rows = inputs.rows
    scores = row_scores(rows.episode_reward, rows.invalid, inputs.penalty)
    adv = rloo_advantages(scores, rows.group_id, rows.traj_id, rows.turn, p.cross_step_stats)
    return EstimatorOutput(adv, adv, advantage_stats(adv))


ESTIMATOR = Estimator(
    name="rloo", params=RLOOParams, advantages=advantages, min_group_size=2,
    summary="leave-one-out baseline over the group's turn rows",
)
