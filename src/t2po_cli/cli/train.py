"""``t2po train``: compose recipes, create a run folder, and run (or submit) the training job."""

from __future__ import annotations

from pathlib import Path

import typer

from t2po_cli.errors import UserError

T2PO_SWITCHES = ("on", "off", "tti", "tds")


def flag_overrides(
    *,
    env: str | None = None,
    algo: str | None = None,
    model: str | None = None,
    t2po: str | None = None,
    recipe: str | None = None,
    seed: int | None = None,
    launcher: str | None = None,
    profile: str | None = None,
    tracking_uri: str | None = None,
    nproc: int | None = None,
) -> list[str]:
    """Translate the convenience flags into Hydra overrides (flags first, KEY=VALUE after them)."""
    out: list[str] = []
    if recipe:
        out.append(f"experiment={recipe}")
    if env:
        out.append(f"env={env}")
    if algo:
        out.append(f"algo={algo}")
    if model:
        out.append(f"model={model}")
    if t2po:
        if t2po not in T2PO_SWITCHES:
            raise UserError(f"--t2po {t2po!r} is not one of {', '.join(T2PO_SWITCHES)}; e.g. --t2po off")
        out.append(f"t2po={t2po}")
    if seed is not None:
        out.append(f"trainer.seed={seed}")
    if launcher:
        out.append(f"launcher.name={launcher}")
    if profile:
        out.append(f"launcher.profile={profile}")
    if tracking_uri:
        out.append(f"tracking.tracking_uri={tracking_uri}")
    if nproc is not None:
        out.append(f"launcher.nproc={nproc}")
    return out


def train_cmd(
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE overrides, e.g. t2po.tds.eta=0.1 trainer.steps=10."),
    env: str = typer.Option(None, "--env", "-e", help="Environment family (`t2po envs list`), e.g. webshop."),
    algo: str = typer.Option(None, "--algo", "-a", help="Algorithm: gigpo, grpo, rloo, ppo or a2tgpo."),
    model: str = typer.Option(None, "--model", "-m", help="Model recipe, e.g. tiny, smollm2-135m, qwen3-4b."),
    t2po: str = typer.Option(None, "--t2po", help="T2PO switches: on, off, tti or tds."),
    recipe: str = typer.Option(None, "--recipe", "-r", help="Experiment recipe (recipes/experiment/NAME.yaml)."),
    seed: int = typer.Option(None, "--seed", help="Seed (trainer.seed)."),
    run_dir: Path = typer.Option(None, "--run-dir", help="Create the run in exactly this (new or empty) folder."),
    resume: Path = typer.Option(None, "--resume", help="Continue a stopped run from its last checkpoint."),
    launcher: str = typer.Option(None, "--launcher", help="local (default) or slurm."),
    profile: str = typer.Option(None, "--profile", help="Slurm profile from slurm/NAME.yaml."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: sqlite under runs/)."),
    nproc: int = typer.Option(None, "--nproc", help="Ranks on this machine (torchrun), e.g. --nproc 2 "
                              "trainer.distributed.strategy=ddp; with --resume: the new number of ranks."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and run folder; create nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the result (run folder, metrics) as JSON on stdout."),
) -> None:
    """Train a policy: compose recipes, create a run folder, run it with the T2PO hooks, track it.

    Example: t2po train --env webshop            (then: t2po report runs/webshop)

    Example: t2po train --env webshop --nproc 2 trainer.distributed.strategy=ddp
    """
    from t2po_cli.jobs.launch import launch_train, resume_train

    if resume is not None:
        if overrides or any(v is not None for v in (env, algo, model, t2po, recipe, seed, run_dir)):
            raise UserError("--resume takes no other recipe flags or overrides; the run folder fixes its config")
        resume_train(resume, json_out=json_out, nproc=nproc)
        return
    ovs = flag_overrides(
        env=env, algo=algo, model=model, t2po=t2po, recipe=recipe, seed=seed,
        launcher=launcher, profile=profile, tracking_uri=tracking_uri, nproc=nproc,
    ) + list(overrides or [])
    launch_train(ovs, run_dir=run_dir, dry_run=dry_run, json_out=json_out)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
