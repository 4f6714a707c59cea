"""Launch a training run: validate, create the run folder, then run in-process or submit to Slurm."""

from __future__ import annotations

import sys
from pathlib import Path

from t2po_cli.config.compose import ComposedRun, compose_config
from t2po_cli.config.schema import RunConfig
from t2po_cli.errors import UserError
from t2po_cli.run_folder import RunFolder, create_run_folder, default_run_name, unique_path


def planned_run_path(composed: ComposedRun, run_dir: Path | None) -> Path:
    """The folder a run would be created in (no side effects)."""
    cfg = composed.config
    if run_dir is not None:
        return Path(run_dir)
    name = cfg.run_name or default_run_name(cfg.env.name, cfg.algo.name, cfg.t2po.variant, cfg.trainer.seed)
    return unique_path(Path(cfg.runs_root) / str(cfg.experiment_name), name)


def launch_train(
    overrides: list[str], *, run_dir: Path | None = None, dry_run: bool = False, json_out: bool = False
) -> Path | None:
    """Compose, validate and run (or submit) one training job.

    Returns:
        The run folder (None for a dry run).
    """
    from t2po_cli.console import err

    composed = compose_config(overrides)
    cfg = composed.config
    if cfg.launcher.name == "slurm":
        from t2po_cli.config.validate import validate_world
        from t2po_cli.jobs.slurm import load_profile

        validate_world(cfg, load_profile(str(cfg.launcher.profile)).world_size)  # one Slurm task per rank
    target = planned_run_path(composed, run_dir)
    if dry_run:
        sys.stdout.write(composed.yaml)
        if cfg.launcher.name == "slurm":
            from t2po_cli.jobs.slurm import describe_submission

            err.print(describe_submission(cfg))
        else:
            err.print(describe_layout(cfg.launcher.nproc, cfg.trainer.distributed.strategy))
        err.print(f"[dim]dry run:[/dim] would create run folder [bold]{target}[/bold]")
        return None
    from t2po_cli.capture import capture_third_party

    # MLflow's set-up logs before the run folder exists: keep its records and write them to the folder's log.
    with capture_third_party() as captured:
        folder = _create(composed, target, run_dir)
        captured.move_to(folder.train_log)
        err.print(f"run folder: [bold]{folder.path}[/bold]")
        return _run_or_submit(folder, cfg, json_out)


def _create(composed: ComposedRun, target: Path, run_dir: Path | None) -> RunFolder:
    from t2po_cli.tracking.mlflow_sink import prepare_experiment

    cfg = composed.config
    yaml = prepare_experiment(composed)
    return create_run_folder(
        runs_root=Path(cfg.runs_root),
        experiment=str(cfg.experiment_name),
        run_name=target.name,
        resolved_yaml=yaml,
        overrides=composed.overrides,
        explicit_dir=run_dir,
    )


def _run_or_submit(folder: RunFolder, cfg: RunConfig, json_out: bool) -> Path:
    from t2po_cli.console import emit_json, hint

    if cfg.launcher.name == "slurm":
        from t2po_cli.jobs.slurm import submit_run

        job_id = submit_run(folder)
        if json_out:
            emit_json({"run_dir": str(folder.path), "job_id": job_id})
        else:
            sys.stdout.write(f"{job_id}\n")
        hint(f"t2po report {folder.path}   (after the job finishes; squeue -j {job_id})")
        return folder.path
    summary = _run_local(folder.path, cfg.launcher.nproc)
    if json_out:
        emit_json({"run_dir": str(folder.path), **summary})
    hint(f"t2po report {folder.path}   or   t2po eval --run {folder.path}")
    return folder.path


def _run_local(run: Path, nproc: int) -> dict:
    """Train in this process (one rank), or start ``nproc`` ranks through torchrun."""
    from t2po_cli.jobs.entry import run_job, run_ranks

    return run_ranks(str(run), nproc) if nproc > 1 else run_job(str(run))


def describe_layout(nproc: int, strategy: str) -> str:
    """The world layout ``--dry-run`` prints for the local launcher."""
    if strategy == "none":
        return "world: 1 process (trainer.distributed.strategy=none)"
    ranks = ", ".join(f"rank {r} (local {r})" for r in range(nproc))
    return (f"world: {nproc} rank{'s' if nproc > 1 else ''} on this machine (torchrun), strategy {strategy}, "
            f"backend gloo on CPU / nccl on CUDA, 1 CPU thread per rank: {ranks}")


def resume_train(run_dir: Path, *, json_out: bool = False, nproc: int | None = None) -> None:
    """Continue a stopped run from its last checkpoint, with ``nproc`` ranks (default: as it was launched).

    A ddp/fsdp run may resume with another number of ranks (its checkpoints are sharded with
    ``torch.distributed.checkpoint``); the run's config is not changed.
    """
    from t2po_cli.config.validate import validate_world
    from t2po_cli.console import emit_json, hint

    folder = RunFolder.open(run_dir)
    state = folder.read_status().get("state")
    if state == "finished":
        raise UserError(f"run {run_dir} already finished; start a new run instead of --resume")
    # Check the config before saying anything: a user error must stay the only line on stderr. The trainer
    # prints "resumed from checkpoint step N" once the checkpoint has loaded.
    from t2po_cli.config.compose import load_run_config

    cfg = load_run_config(folder.config_path)
    ranks = cfg.launcher.nproc if nproc is None else nproc
    validate_world(cfg, ranks)
    from t2po_cli.trainer import checkpoint as ckpt

    found = ckpt.list_checkpoints(folder.checkpoints)
    if found:
        ckpt.read_checkpoint(found[-1])
    summary = _run_local(folder.path, ranks)
    if json_out:
        emit_json({"run_dir": str(folder.path), **summary})
    hint(f"t2po report {folder.path}")
