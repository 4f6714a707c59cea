"""Evaluation: validation success, score, turns and tokens per episode of a run's policy or a recipe's
starting policy (the warm-start checkpoint)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from t2po_cli.config.schema import RunConfig
from t2po_cli.console import Progress
from t2po_cli.tracking import keys as K

if TYPE_CHECKING:
    from t2po_cli.trainer.loop import Session


def evaluate_session(s: Session, episodes: int, step: int = 0) -> dict[str, float]:
    """Run ``episodes`` validation episodes (group size 1, validation sampling, no TDS)."""
    from t2po_cli.trainer.loop import run_rollout, val_tasks
    from t2po_cli.trainer.rollout_metrics import rollout_metrics

    cfg = replace(s.cfg, trainer=replace(s.cfg.trainer, val_tasks=episodes),
                  env=replace(s.cfg.env, num_val_tasks=max(episodes, s.cfg.env.num_val_tasks)))
    s_eval = replace(s, cfg=cfg)
    ro = run_rollout(s_eval, "val", step, val_tasks(cfg, s.family), group_size=1)
    m = rollout_metrics(ro, cfg)
    return summarize(m, episodes)


def summarize(m: dict[str, float], episodes: int) -> dict[str, float]:
    return {
        "episodes": episodes,
        "success_rate": m[K.SUCCESS_RATE],
        "score": m[K.SCORE_MEAN],
        "reward": m[K.REWARD_MEAN],
        "mean_turns": m[K.EPISODE_LENGTH],
        "tokens_per_episode": m[K.TOKENS_PER_EPISODE],
        "valid_action_ratio": m[K.VALID_ACTION_RATIO],
        # Only when the thinking intervention ran (absent with TTI off).
        **({"tti_interventions_per_turn": m[K.TTI_INTERVENTIONS_PER_TURN]}
           if K.TTI_INTERVENTIONS_PER_TURN in m else {}),
    }


def evaluate_run(run_dir: str | Path, episodes: int, tti: bool | None = None,
                 progress: Progress | None = None) -> dict[str, float]:
    """Evaluate the newest checkpoint of a run (the warm-start policy if it has none).

    ``tti`` forces the thinking intervention on or off during this evaluation (None: as the run was trained).
    """
    from t2po_cli.trainer import checkpoint as ckpt
    from t2po_cli.trainer.loop import build_session

    s = build_session(run_dir, tti=tti, progress=progress, distributed=False)
    found = ckpt.list_checkpoints(s.folder.checkpoints)
    step = 0
    if found:
        modules = {"policy": s.policy.model}
        if s.policy.value_head is not None:
            modules["value_head"] = s.policy.value_head
        ckpt.load_weights(found[-1], modules)
        step = found[-1].step
    out = evaluate_session(s, episodes, step)
    return {"checkpoint_step": step, "tti": s.cfg.t2po.tti.enabled, **out}


def evaluate_recipe(cfg: RunConfig, episodes: int, scratch: Path, progress: Progress | None = None
                    ) -> dict[str, float]:
    """Evaluate the starting policy of a recipe (after warm start), in a scratch run folder."""
    import yaml

    from t2po_cli.config.compose import config_to_dict
    from t2po_cli.run_folder import create_run_folder
    from t2po_cli.trainer.loop import build_session

    folder = create_run_folder(
        runs_root=scratch, experiment="eval", run_name=f"{cfg.env.name}_{cfg.model.name}",
        resolved_yaml=yaml.safe_dump(config_to_dict(replace(cfg, tracking=replace(cfg.tracking, mlflow=False)))),
        overrides=(), pin=False,
    )
    s = build_session(folder.path, progress=progress, distributed=False)
    return evaluate_session(s, episodes)
