"""The live early warning: after every step, run the early-warning rules on the rows logged so far and decide
what ``trainer.on_collapse`` does about a new warning (issue 17).

The rules are ``tracking/early_warning.py`` (stdlib only), the same code ``t2po report`` runs, so a warning
fires at the same step live and afterwards. This module holds the run-time state the loop needs for it
(rows, gradient norms, rollbacks, the learning-rate scale) — derived state, never config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from t2po_cli.tracking import keys as K
from t2po_cli.tracking.early_warning import Warning, WarningThresholds, new_warnings

CONTINUE, STOP, ROLLBACK = "continue", "stop", "rollback"


@dataclass
class Watch:
    """Run-time state of the live early warning.

    Attributes:
        rows: every metrics row logged so far (tracking/jsonl.py format), truncated with the file on resume
            and rollback.
        lr_scale: product of the rollback factors applied so far (1.0 = none); saved in checkpoints.
        rollbacks: rollbacks done so far; saved in checkpoints.
        events: every warning reported so far with the action taken (status.json ``warnings``).
        thresholds: the rules' thresholds (``diagnostics.warnings``; defaults when None).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    lr_scale: float = 1.0
    rollbacks: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    thresholds: WarningThresholds | None = None

    def grad_norms(self, window: int) -> list[float]:
        """The last ``window`` train gradient norms logged (the history of ``diag/grad_norm_z``)."""
        out = [float(r["metrics"][K.GRAD_NORM]) for r in self.rows
               if r.get("split") == "train" and isinstance(r["metrics"].get(K.GRAD_NORM), int | float)]
        return out[-window:] if window else []

    def truncate_after(self, step: int) -> None:
        self.rows = [r for r in self.rows if int(r["step"]) <= step]

    def check(self, step: int) -> list[Warning]:
        """Warnings whose first firing is at ``step`` (the rows of ``step`` must already be in ``rows``)."""
        return new_warnings(self.rows, step, self.thresholds)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"lr_scale": self.lr_scale, "rollbacks": self.rollbacks}

    def restore(self, state: dict[str, Any]) -> None:
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.rollbacks = int(state.get("rollbacks", 0))


def decide(on_collapse: str, rollbacks: int, max_rollbacks: int, checkpoint_step: int | None) -> str:
    """What a new warning does.

    Args:
        on_collapse: ``trainer.on_collapse``.
        rollbacks: rollbacks already done in this run.
        max_rollbacks: ``trainer.max_rollbacks``.
        checkpoint_step: the newest checkpoint saved before the warning's step, or None.

    Returns:
        ``continue``, ``stop`` or ``rollback``. A rollback with no checkpoint to go back to, or past the
        limit, stops instead: the user asked not to train on after a warning.
    """
    if on_collapse == CONTINUE:
        return CONTINUE
    if on_collapse == ROLLBACK and checkpoint_step is not None and rollbacks < max_rollbacks:
        return ROLLBACK
    return STOP


def event(w: Warning, action: str) -> dict[str, Any]:
    """A warning as recorded in status.json."""
    return {**w.to_dict(), "action": action}
