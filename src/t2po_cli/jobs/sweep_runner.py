"""Sweeps end to end: validate every point, create the sweep folder, run it locally or as ONE Slurm array.

Layout of ``runs/<experiment>/sweep-<name>-<timestamp>/``::

    sweep.json      spec, launcher, MLflow ids, and per point: overrides, run folder, job id, state, log
    <point>/        one run folder per point, created before anything runs (jobs/run_folder.py)
    logs/           Slurm: submitit's array logs (each run's logs/ links to its own)

MLflow (infra.md §5.4): the CLI creates or gets the experiment ONCE, creates the sweep's parent run, and
writes the experiment id into every point's resolved config and the parent run id into its
``mlflow_sync.json``; jobs never call ``set_experiment``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2po_cli.config.sweep import SweepPoint, SweepSpec, validate_sweep
from t2po_cli.errors import RunFolderError, UserError

SWEEP_FILE = "sweep.json"
CANCEL_MARKER = "CANCELLED"
TERMINAL = ("finished", "failed", "cancelled")
# sacct states → sweep states (infra.md §3; "CANCELLED by 0" is split on the space first).
SLURM_STATES = {
    "PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
    "CONFIGURING": "pending", "RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "running",
    "COMPLETED": "finished", "CANCELLED": "cancelled", "FAILED": "failed", "TIMEOUT": "failed",
    "OUT_OF_MEMORY": "failed", "NODE_FAIL": "failed", "PREEMPTED": "pending", "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
}


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep, ready to be created: every point composed and checked."""

    spec: SweepSpec
    points: list[tuple[SweepPoint, Any]]
    launcher: str
    profile: str | None
    max_parallel: int
    path: Path

    @property
    def configs(self) -> list[Any]:
        return [c.config for _, c in self.points]


def sweep_extra_overrides(
    spec: SweepSpec, launcher: str, profile: str | None, max_parallel: int, tracking_uri: str | None
) -> list[str]:
    """Overrides every point gets from the sweep and the command line."""
    extra = [f"experiment_name={spec.experiment_name}", f"launcher.name={launcher}",
             f"launcher.max_parallel={max_parallel}"]
    if profile:
        extra.append(f"launcher.profile={profile}")
    if tracking_uri:
        extra.append(f"tracking.tracking_uri={tracking_uri}")
    return extra


def plan_sweep(
    spec: SweepSpec, *, launcher: str = "local", profile: str | None = None, max_parallel: int = 1,
    tracking_uri: str | None = None,
) -> SweepPlan:
    """Compose and validate every point (nothing is created). Raises ``UserError`` on the first bad point."""
    from t2po_cli.run_folder import unique_path

    if launcher not in ("local", "slurm"):
        raise UserError(f"--launcher {launcher!r} is not one of local, slurm; e.g. --launcher local")
    if max_parallel < 1:
        raise UserError(f"--max-parallel {max_parallel} must be >= 1")
    ranks = 1
    if launcher == "slurm":
        from t2po_cli.jobs.slurm import load_profile

        if not profile:
            raise UserError("--launcher slurm needs a profile; add --profile NAME (see slurm/*.yaml)")
        ranks = load_profile(profile).world_size
    extra = sweep_extra_overrides(spec, launcher, profile, max_parallel, tracking_uri)
    points = validate_sweep(spec, extra)
    if ranks > 1:
        from t2po_cli.config.validate import validate_world

        for _, composed in points:  # multi-rank points: one Slurm task per rank
            validate_world(composed.config, ranks)
    roots = {c.config.runs_root for _, c in points}
    if len(roots) != 1:
        raise UserError(f"sweep {spec.name}: points use different runs_root values ({sorted(roots)}); set one")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = unique_path(Path(roots.pop()) / spec.experiment_name, f"sweep-{spec.name}-{stamp}")
    return SweepPlan(spec, points, launcher, profile, max_parallel, path.resolve())


# ------------------------------------------------------------------------------------------ sweep.json
def read_sweep(path: Path) -> dict[str, Any]:
    """Load a sweep folder's ``sweep.json``.

    Raises:
        RunFolderError: not a sweep folder.
    """
    try:
        return json.loads((Path(path) / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        raise RunFolderError(f"{path} has no readable {SWEEP_FILE}; pass a folder created by `t2po sweep`") from None


def write_sweep(path: Path, data: dict[str, Any]) -> None:
    """Atomically rewrite ``sweep.json``."""
    tmp = Path(path) / (SWEEP_FILE + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, Path(path) / SWEEP_FILE)


# -------------------------------------------------------------------------------------------- MLflow
def open_mlflow_parent(plan: SweepPlan) -> dict[str, Any]:
    """Create the experiment once and the sweep's parent run. Best effort: on failure, ids are None."""
    from t2po_cli.console import err
    from t2po_cli.tracking.mlflow_sink import ensure_experiment, redact, resolve_uri

    cfg = plan.configs[0]
    info: dict[str, Any] = {"enabled": bool(cfg.tracking.mlflow), "tracking_uri": None,
                            "experiment_id": None, "parent_run_id": None}
    if not cfg.tracking.mlflow:
        return info
    uri = resolve_uri(cfg)
    info["tracking_uri"] = uri
    try:
        import mlflow
        from mlflow.entities import Param

        Path(cfg.runs_root).mkdir(parents=True, exist_ok=True)
        exp_id = ensure_experiment(uri, plan.spec.experiment_name, Path(cfg.runs_root) / "mlartifacts")
        client = mlflow.MlflowClient(tracking_uri=uri)
        tags = {"t2po.sweep": plan.spec.name, "t2po.sweep_dir": str(plan.path), "t2po.launcher": plan.launcher}
        parent = client.create_run(exp_id, run_name=plan.path.name, tags=tags)
        params = {"sweep.points": str(len(plan.points)), "sweep.seeds": str(list(plan.spec.seeds))}
        params.update({f"sweep.grid.{k}": ",".join(v) for k, v in plan.spec.grid.items()})
        params.update({f"sweep.ablation.{k}": " ".join(v)[:500] for k, v in plan.spec.ablations.items()})
        client.log_batch(parent.info.run_id, params=[Param(k, v) for k, v in list(params.items())[:100]])
        info.update(experiment_id=exp_id, parent_run_id=parent.info.run_id)
    except Exception as e:  # tracking is best effort: the jobs still run, `t2po sync` delivers later
        err.print(f"[yellow]warning:[/yellow] MLflow at {redact(uri)} unavailable ({type(e).__name__}); "
                  "metrics stay in metrics.jsonl, deliver later with `t2po sync DIR`")
    return info


def close_mlflow_parent(data: dict[str, Any]) -> None:
    """Mark the parent run terminated once every point is terminal (FINISHED only if all finished)."""
    ml = data.get("mlflow") or {}
    if not ml.get("parent_run_id") or ml.get("parent_closed"):
        return
    states = [p["state"] for p in data["points"]]
    if not all(s in TERMINAL for s in states):
        return
    try:
        import mlflow

        status = "FINISHED" if all(s == "finished" for s in states) else "FAILED"
        client = mlflow.MlflowClient(tracking_uri=ml["tracking_uri"])
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints "View run ..." on stdout (machine output)
            client.set_terminated(ml["parent_run_id"], status=status)
        ml["parent_closed"] = True
    except Exception:  # retried by the next `t2po sweep status`
        pass


# ------------------------------------------------------------------------------------------- create
def create_sweep(plan: SweepPlan, command: list[str] | None = None) -> dict[str, Any]:
    """Create the sweep folder, the MLflow parent run and every point's run folder; write sweep.json."""
    from omegaconf import OmegaConf

    from t2po_cli.run_folder import create_run_folder
    from t2po_cli.tracking.mlflow_sink import write_parent_link

    plan.path.mkdir(parents=True)
    ml = open_mlflow_parent(plan)
    data: dict[str, Any] = {
        "name": plan.spec.name, "description": plan.spec.description, "experiment": plan.spec.experiment_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "launcher": plan.launcher, "profile": plan.profile,
        "max_parallel": plan.max_parallel, "mlflow": ml, "array_job_id": None, "driver_pid": None,
        "spec": {"base": list(plan.spec.base), "grid": {k: list(v) for k, v in plan.spec.grid.items()},
                 "seeds": list(plan.spec.seeds), "ablations": {k: list(v) for k, v in plan.spec.ablations.items()}},
        "points": [],
    }
    for point, composed in plan.points:
        node = OmegaConf.create(composed.yaml)
        node.run_name = point.name
        if ml["experiment_id"]:
            node.tracking.experiment_id = ml["experiment_id"]
            node.tracking.tracking_uri = ml["tracking_uri"]
        folder = create_run_folder(
            runs_root=plan.path.parent.parent, experiment=plan.spec.experiment_name, run_name=point.name,
            resolved_yaml=OmegaConf.to_yaml(node), overrides=composed.overrides, command=command,
            explicit_dir=plan.path / point.name,
        )
        if ml["parent_run_id"]:
            write_parent_link(folder.path, ml["parent_run_id"])
        data["points"].append({
            "index": point.index, "name": point.name, "overrides": list(point.overrides),
            "run_dir": str(folder.path), "job_id": None, "state": "created",
            "log": str(folder.path / "logs"), "returncode": None,
        })
    write_sweep(plan.path, data)
    return data


# -------------------------------------------------------------------------------------------- launch
def submit_slurm(path: Path, data: dict[str, Any]) -> str:
    """Submit every point as ONE Slurm job array; returns the array job id."""
    from t2po_cli.jobs.slurm import load_profile, submit_array

    profile = load_profile(str(data["profile"]))
    runs = [Path(p["run_dir"]) for p in data["points"]]
    jobs = submit_array(runs, profile, Path(path) / "logs", f"t2po-sweep-{data['name']}")
    for point, job in zip(data["points"], jobs, strict=True):
        point.update(job_id=str(job.job_id), state="pending", log=str(job.paths.stderr),
                     stdout=str(job.paths.stdout))
    data["array_job_id"] = str(jobs[0].job_id).split("_")[0]
    write_sweep(path, data)
    return data["array_job_id"]


def run_local(path: Path, data: dict[str, Any], on_update: Any = None) -> dict[str, Any]:
    """Run every point in a local worker pool (blocking); sweep.json follows each state change."""
    from t2po_cli.jobs.local_pool import LOG_NAME, run_pool

    data["driver_pid"] = os.getpid()
    for point in data["points"]:
        point["log"] = str(Path(point["run_dir"]) / "logs" / LOG_NAME)
    write_sweep(path, data)

    def sync_states(workers: list[Any]) -> None:
        for point, worker in zip(data["points"], workers, strict=True):
            point.update(state=worker.state, job_id=str(worker.pid) if worker.pid else None,
                         returncode=worker.returncode)
        write_sweep(path, data)
        if on_update is not None:
            on_update(data)

    run_pool([Path(p["run_dir"]) for p in data["points"]], int(data["max_parallel"]),
             on_change=sync_states, cancelled=lambda: (Path(path) / CANCEL_MARKER).exists())
    data["driver_pid"] = None
    close_mlflow_parent(data)
    write_sweep(path, data)
    return data


# ---------------------------------------------------------------------------------- status and cancel
def _alive(pid: Any) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, ValueError):
        return False


def _slurm_state(job_id: str | None, states: dict[str, str]) -> str | None:
    if not job_id:
        return None
    if job_id in states:
        return SLURM_STATES.get(states[job_id], "pending")
    array = job_id.split("_")[0]
    # Tasks that have not started yet are one sacct row such as "123_[2-5%8]" (or the bare array id).
    if any(k.startswith(f"{array}_[") or k == array for k in states):
        return "pending"
    return None


def progress(run_dir: Path) -> dict[str, Any]:
    """Step, total steps and last success rate of a run folder (cheap: reads the files, no compose)."""
    import yaml

    from t2po_cli.tracking import keys
    from t2po_cli.tracking.jsonl import iter_metrics

    run = Path(run_dir)
    out: dict[str, Any] = {"step": None, "steps": None, "success_rate": None}
    try:
        cfg = yaml.safe_load((run / "resolved_config.yaml").read_text())
        out["steps"] = int(cfg["trainer"]["steps"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        pass
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for row in iter_metrics(metrics):
            if row["split"] == "train":
                out["step"] = row["step"]
                out["success_rate"] = row["metrics"].get(keys.SUCCESS_RATE, out["success_rate"])
    return out


def refresh_sweep(path: Path) -> dict[str, Any]:
    """Re-read every point's state (Slurm via sacct, local via the driver and the run's status.json)."""
    from t2po_cli.run_folder import RunFolder

    data = read_sweep(path)
    states: dict[str, str] = {}
    if data["launcher"] == "slurm" and data.get("array_job_id"):
        from t2po_cli.jobs.slurm import job_states

        states = job_states([p["job_id"] for p in data["points"] if p.get("job_id")])
    driver_alive = _alive(data.get("driver_pid"))
    for point in data["points"]:
        run_state = str(RunFolder(Path(point["run_dir"])).read_status().get("state"))
        if data["launcher"] == "slurm":
            point["state"] = _slurm_state(point.get("job_id"), states) or point["state"]
        elif point["state"] not in TERMINAL and not driver_alive and data.get("driver_pid"):
            # The driver process is gone: trust what the run itself recorded.
            point["state"] = run_state if run_state in ("finished", "failed") else "failed"
        point.update(progress(Path(point["run_dir"])))
    close_mlflow_parent(data)
    write_sweep(path, data)
    return data


def cancel_sweep(path: Path) -> list[str]:
    """Cancel every unfinished point. Returns the names of the points that were cancelled.

    Slurm: ``scancel`` of the array job (every task). Local: a marker file the driver polls; if the driver is
    gone, the recorded worker PIDs (checked to still be our workers) are terminated here.
    """
    from t2po_cli.jobs.local_pool import is_our_worker, terminate_group

    data = read_sweep(path)
    todo = [p for p in data["points"] if p["state"] not in TERMINAL]
    if data["launcher"] == "slurm":
        from t2po_cli.jobs.slurm import cancel_jobs

        if data.get("array_job_id"):
            cancel_jobs([str(data["array_job_id"])])
    else:
        (Path(path) / CANCEL_MARKER).touch()
        if not _alive(data.get("driver_pid")):
            for p in todo:
                if p.get("job_id") and is_our_worker(int(p["job_id"]), Path(p["run_dir"])):
                    terminate_group(int(p["job_id"]))
                p["state"] = "cancelled"
            write_sweep(path, data)
    return [p["name"] for p in todo]


def failed_points(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Points that failed, each with its log path."""
    return [p for p in data["points"] if p["state"] == "failed"]


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


def last_log_line(log: str | Path) -> str:
    """The most telling line of a log for a one-line failure report: the last exception line, else the
    last line that is not launcher noise (srun prints "task 0: Exited with exit code 1" after the error)."""
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    rest = [ln for ln in lines if not ln.startswith(("srun:", "slurmstepd:"))]
    pick = errors or rest or lines
    return pick[-1][:200] if pick else ""
