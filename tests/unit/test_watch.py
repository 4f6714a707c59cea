"""trainer.on_collapse decisions (trainer/watch.py::decide) and the watch's gradient-norm history."""

from __future__ import annotations

from t2po_cli.tracking import keys as K
from t2po_cli.trainer.watch import CONTINUE, ROLLBACK, STOP, Watch, decide


def test_decide() -> None:
    assert decide("continue", 0, 2, 5) == CONTINUE
    assert decide("stop", 0, 2, 5) == STOP
    assert decide("rollback", 0, 2, 5) == ROLLBACK
    assert decide("rollback", 1, 2, 5) == ROLLBACK
    assert decide("rollback", 2, 2, 5) == STOP  # limit reached
    assert decide("rollback", 0, 2, None) == STOP  # nothing to roll back to
    assert decide("rollback", 0, 0, 5) == STOP


def test_watch_history_and_state() -> None:
    w = Watch(rows=[
        {"step": 0, "split": "val", "metrics": {K.GRAD_NORM: 9.0}},
        {"step": 1, "split": "train", "metrics": {K.GRAD_NORM: 1.0}},
        {"step": 2, "split": "train", "metrics": {K.GRAD_NORM: "nan"}},
        {"step": 3, "split": "train", "metrics": {K.GRAD_NORM: 3.0}},
    ])
    assert w.grad_norms(5) == [1.0, 3.0]
    assert w.grad_norms(1) == [3.0]
    w.truncate_after(1)
    assert [r["step"] for r in w.rows] == [0, 1]
    w.restore({"lr_scale": 0.25, "rollbacks": 2})
    assert w.checkpoint_state() == {"lr_scale": 0.25, "rollbacks": 2}
    w.restore({})
    assert (w.lr_scale, w.rollbacks) == (1.0, 0)


def test_alert_is_a_panel_on_a_terminal_and_one_line_otherwise() -> None:
    import io

    from rich.console import Console

    from t2po_cli.console import ConsoleProgress

    line = "warning: step 12 diag/reward_spread fell to 0.02 (30% of its peak 0.07) — collapse may follow"
    tty = io.StringIO()
    ConsoleProgress(Console(file=tty, force_terminal=True, width=120)).alert(line)
    assert "early warning" in tty.getvalue() and "╭" in tty.getvalue() and "fell to 0.02" in tty.getvalue()
    plain = io.StringIO()
    ConsoleProgress(Console(file=plain, force_terminal=False, width=200)).alert(line)
    assert plain.getvalue() == line + "\n"


def test_watch_applies_the_configured_thresholds() -> None:
    # diag/grad_norm_z of 5 fires the default rule (limit 4) and not one configured at 6
    # (diagnostics.warnings.grad_z_max); the report reads the same key from a run's logged config.
    from t2po_cli.config.schema import WarningThresholds
    from t2po_cli.report.build import run_warning_thresholds
    from t2po_cli.report.load import RunData

    rows = [{"step": s, "split": "train", "metrics": {K.DIAG_GRAD_NORM_Z: 0.5}} for s in range(1, 6)]
    rows.append({"step": 6, "split": "train", "metrics": {K.DIAG_GRAD_NORM_Z: 5.0}})
    assert [w.rule for w in Watch(rows=rows).check(6)] == ["grad_norm_z"]
    assert Watch(rows=rows, thresholds=WarningThresholds(grad_z_max=6.0)).check(6) == []

    run = RunData("r", "r", {"diagnostics.warnings.grad_z_max": "6.0", "diagnostics.warnings.min_history": 3})
    th = run_warning_thresholds(run)
    assert (th.grad_z_max, th.min_history, th.spread_frac) == (6.0, 3, WarningThresholds().spread_frac)


def test_rollback_keeps_checkpoints_back_past_the_longest_warning_window() -> None:
    # Longest default window: entropy_adv_cov's 4 points; + the step whose weights first showed it + the warning
    # step = 6 steps back → ceil(6 / save_every) + 1 checkpoints; without rollback the default 2.
    from dataclasses import replace

    from t2po_cli.config.schema import RunConfig
    from t2po_cli.trainer.loop import _checkpoints_to_keep

    cfg = RunConfig()

    def keep(**trainer: object) -> int:
        return _checkpoints_to_keep(replace(cfg, trainer=replace(cfg.trainer, **trainer)))

    assert keep(on_collapse="continue", save_every=1) == 2
    assert keep(on_collapse="rollback", save_every=1) == 7
    assert keep(on_collapse="rollback", save_every=2) == 4
    assert keep(on_collapse="rollback", save_every=10) == 2
    assert keep(on_collapse="rollback", save_every=0) == 2
