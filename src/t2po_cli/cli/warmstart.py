"""``t2po warmstart``: build (or show) the cached warm-start checkpoint of a recipe."""

from __future__ import annotations

import typer


def warmstart_cmd(
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE overrides, e.g. trainer.warmstart.steps=600."),
    env: str = typer.Option(None, "--env", "-e", help="Environment whose expert trajectories are imitated."),
    model: str = typer.Option(None, "--model", "-m", help="Model recipe, e.g. tiny or smollm2-135m."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a cached checkpoint exists."),
    json_out: bool = typer.Option(False, "--json", help="Print the checkpoint path and summary as JSON."),
) -> None:
    """Fine-tune a model on expert trajectories of an embedded env (the RFT cold start RL starts from).

    Example: t2po warmstart --env alfworld --model tiny trainer.warmstart.steps=600
    """
    import json
    import shutil

    from t2po_cli.cli.train import flag_overrides
    from t2po_cli.config.compose import compose_config
    from t2po_cli.console import ConsoleProgress, emit_json, err, hint
    from t2po_cli.trainer.warmstart import ensure_warmstart, warmstart_dir

    cfg = compose_config(flag_overrides(env=env, model=model) + list(overrides or [])).config
    target = warmstart_dir(cfg)
    if force and target.exists():
        shutil.rmtree(target)
    cfg_on = cfg if cfg.trainer.warmstart.enabled else None
    if cfg_on is None:
        from dataclasses import replace

        cfg = replace(cfg, trainer=replace(cfg.trainer, warmstart=replace(cfg.trainer.warmstart, enabled=True)))
    from t2po_cli.capture import capture_third_party
    from t2po_cli.paths import cache_root

    with capture_third_party(cache_root() / "logs" / "warmstart.log"):
        path = ensure_warmstart(cfg, progress=ConsoleProgress())
    summary = json.loads((path / "warmstart.json").read_text()) if path and (path / "warmstart.json").is_file() else {}
    if json_out:
        emit_json({"checkpoint": str(path), **summary})
    else:
        err.print(f"warm-start checkpoint: [bold]{path}[/bold] {summary}")
    hint(f"t2po eval --env {cfg.env.name} --model {cfg.model.name}   or   t2po train --env {cfg.env.name}")


def register(app: typer.Typer) -> None:
    app.command("warmstart")(warmstart_cmd)
