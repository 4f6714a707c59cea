"""``t2po eval``: validation success, score, turns and tokens per episode."""

from __future__ import annotations

from pathlib import Path

import typer

from t2po_cli.errors import UserError


def eval_cmd(
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE overrides (with --env/--model)."),
    run: Path = typer.Option(None, "--run", help="Evaluate this run folder's newest checkpoint."),
    env: str = typer.Option(None, "--env", "-e", help="Environment (evaluate a recipe's starting policy)."),
    model: str = typer.Option(None, "--model", "-m", help="Model recipe (with --env)."),
    episodes: int = typer.Option(32, "--episodes", "-n", min=1, help="Validation episodes."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    tti: str = typer.Option(None, "--tti", help="With --run: thinking intervention on|off for this evaluation "
                            "(default: as the run was trained). Separates inference-time TTI from training."),
) -> None:
    """Evaluate a run's policy, or a recipe's warm-started starting policy, on validation tasks.

    Example: t2po eval --run runs/webshop/webshop_gigpo_t2po-on_s0 --episodes 64 --json
    """
    import tempfile

    from t2po_cli.console import ConsoleProgress, emit_json, err, hint

    if (run is None) == (env is None):
        raise UserError("give either --run RUN_DIR or --env ENV [--model M]; e.g. t2po eval --env webshop")
    if tti is not None and tti not in ("on", "off"):
        raise UserError(f"--tti {tti!r} is not on or off; e.g. t2po eval --run RUN --tti off")
    from t2po_cli.capture import capture_third_party
    from t2po_cli.paths import cache_root

    if run is not None:
        if overrides or model:
            raise UserError("--run takes no --model or overrides; the run folder fixes its config")
        from t2po_cli.run_folder import RunFolder
        from t2po_cli.trainer.evaluate import evaluate_run

        folder = RunFolder.open(run)  # a missing folder is a one-line error, before anything is written
        # Third-party log lines and warnings go to the run's logs/eval.log, not the console.
        with capture_third_party(folder.logs / "eval.log"):
            result = evaluate_run(run, episodes, None if tti is None else tti == "on", progress=ConsoleProgress())
    else:
        if tti is not None:
            raise UserError("--tti goes with --run; with --env use the override t2po.tti.enabled=true|false")
        from t2po_cli.cli.train import flag_overrides
        from t2po_cli.config.compose import compose_config
        from t2po_cli.trainer.evaluate import evaluate_recipe

        cfg = compose_config(flag_overrides(env=env, model=model) + list(overrides or [])).config
        with tempfile.TemporaryDirectory(prefix="t2po-eval-") as scratch, \
                capture_third_party(cache_root() / "logs" / "eval.log"):
            result = evaluate_recipe(cfg, episodes, Path(scratch), progress=ConsoleProgress())
    if json_out:
        emit_json(result)
    else:
        for k, v in result.items():
            err.print(f"{k:>20}: {v:.4g}" if isinstance(v, float) else f"{k:>20}: {v}")
    hint("t2po report RUN_DIR   for curves and collapse analysis")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
