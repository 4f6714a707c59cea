"""PPO: a value head and turn-level GAE over each trajectory's rows (gigpo.md §8, "PPO (critic)")."""

from __future__ import annotations

from dataclasses import dataclass

from t2po_cli.algo.registry import Estimator, EstimatorInputs, EstimatorOutput
from t2po_cli.checks import in_range, positive


@dataclass
class PPOParams:
    """``algo.ppo``: the critic and GAE settings."""

    gamma: float = 0.95
    """γ of GAE over turns."""
    gae_lambda: float = 0.95
    """λ of GAE over turns."""
    value_coef: float = 0.5
    """Value loss coefficient."""
    value_lr: float = 1e-3
    """Value head learning rate."""

    def validate(self, key: str) -> None:
        in_range(self.gamma, 0.0, 1.0, f"{key}.gamma")
        in_range(self.gae_lambda, 0.0, 1.0, f"{key}.gae_lambda")
        positive(self.value_coef, f"{key}.value_coef", allow_zero=True)
        positive(self.value_lr, f"{key}.value_lr")


def advantages(inputs: EstimatorInputs, p: PPOParams) -> EstimatorOutput:
    from t2po_cli.algo.advantages import advantage_stats, gae_advantages

    rows = inputs.rows
    if inputs.values is None:
        raise ValueError("ppo needs per-row values (the value head's output)")
    # §2: the invalid penalty sits on the row's own reward; GAE then propagates it like any reward.
    rewards = rows.step_reward.float() - inputs.penalty * rows.invalid.float()
    adv, returns = gae_advantages(rewards, inputs.values, rows.traj_id, rows.turn, p.gamma, p.gae_lambda)
    return EstimatorOutput(adv, returns, advantage_stats(adv))


ESTIMATOR = Estimator(
    name="ppo", params=PPOParams, advantages=advantages, min_group_size=1, needs_values=True,
    summary="critic + turn-level GAE",
)
