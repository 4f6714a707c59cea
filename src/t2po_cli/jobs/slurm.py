"""Slurm launcher: typed profiles (``slurm/NAME.yaml``), single jobs and sweep job arrays through submitit.

A profile holds the cluster-specific sbatch settings; everything else (what to train) lives in the run
folder. Queued jobs run the code pinned in the run folder's ``code/`` (design rule 10): a setup line puts
``<run>/code`` first on ``PYTHONPATH``, ahead of the editable install, so a job that starts an hour later
still runs what was submitted. For a job array one setup block serves every task, so it picks the task's
run folder by ``SLURM_ARRAY_TASK_ID``.

Slurm facts this relies on are in infra.md §2-§3 (accounting via slurmdbd, so ``sacct`` and submitit's
job states work; ``batch()`` turns submissions into ONE array).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2po_cli.errors import BackendUnavailable, UserError

if TYPE_CHECKING:
    from t2po_cli.config.schema import RunConfig
    from t2po_cli.run_folder import RunFolder

SUBMIT_RECORD = "slurm_job.json"


@dataclass(frozen=True)
class SlurmProfile:
    """One cluster's sbatch settings. Unknown keys in the YAML file are errors."""

    @property
    def world_size(self) -> int:
        """Ranks of one run: one Slurm task per rank."""
        return self.nodes * self.tasks_per_node

    name: str
    """Profile name (the file stem)."""
    description: str = ""
    """What this profile is for (shown by --dry-run)."""
    partition: str | None = None
    """``--partition``; null = the cluster default."""
    account: str | None = None
    """``--account``; null = the user's default account."""
    qos: str | None = None
    """``--qos``; null = the default QOS."""
    nodes: int = 1
    """Nodes per run (``--nodes``)."""
    tasks_per_node: int = 1
    """Tasks per node (``--ntasks-per-node``): one task per rank, so a run has nodes × tasks_per_node ranks
    (> 1 needs ``trainer.distributed.strategy`` ddp or fsdp)."""
    gpus_per_node: int = 0
    """GPUs per node (``--gpus-per-node``); 0 requests none. Formerly ``gpus`` (still read, with a warning)."""
    cpus_per_task: int = 1
    """``--cpus-per-task``."""
    mem_gb: float = 4.0
    """Memory per job in GB (``--mem``)."""
    timeout_min: int = 60
    """Wall-clock limit per job in minutes (``--time``); a checkpointable job is requeued at the limit."""
    array_parallelism: int = 16
    """Sweeps: array tasks allowed to run at once (``--array=0-N%P``)."""
    setup: tuple[str, ...] = field(default_factory=tuple)
    """Shell lines run before the job (module loads, conda activate, exports)."""


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "description": (str,),
    "partition": (str, type(None)),
    "account": (str, type(None)),
    "qos": (str, type(None)),
    "nodes": (int,),
    "tasks_per_node": (int,),
    "gpus_per_node": (int,),
    "cpus_per_task": (int,),
    "mem_gb": (int, float),
    "timeout_min": (int,),
    "array_parallelism": (int,),
    "setup": (list,),
}


def profiles_dir() -> Path:
    """Folder of the profiles: ``$T2PO_SLURM_PROFILES`` or ``<repo>/slurm``."""
    from t2po_cli.paths import repo_root

    env = os.environ.get("T2PO_SLURM_PROFILES")
    return Path(env) if env else repo_root() / "slurm"


def list_profiles() -> list[str]:
    """Names of the shipped profiles."""
    d = profiles_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def parse_profile(name: str, data: object, source: str) -> SlurmProfile:
    """Check a profile mapping against the schema.

    Raises:
        UserError: not a mapping, an unknown key, or a value of the wrong type (one line each).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source} must be a mapping of profile keys; see slurm/local-ci.yaml")
    from t2po_cli.config.legacy import rename_profile_keys

    data = rename_profile_keys(data, source)
    known = [f.name for f in fields(SlurmProfile) if f.name != "name"]
    for key, value in data.items():
        if key not in known:
            raise UserError(f"{source}: unknown key '{key}'; allowed keys: {', '.join(known)}")
        ok = _FIELD_TYPES[key]
        if not isinstance(value, ok) or (isinstance(value, bool) and bool not in ok):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in ok)
            raise UserError(f"{source}: {key}={value!r} must be {want}")
    values = dict(data)
    setup = values.pop("setup", [])
    if not all(isinstance(line, str) for line in setup):
        raise UserError(f"{source}: setup must be a list of shell lines (strings)")
    prof = SlurmProfile(name=name, setup=tuple(setup), **values)
    for key in ("cpus_per_task", "timeout_min", "array_parallelism", "nodes", "tasks_per_node"):
        if getattr(prof, key) < 1:
            raise UserError(f"{source}: {key}={getattr(prof, key)} must be >= 1")
    if prof.gpus_per_node < 0 or prof.mem_gb <= 0:
        raise UserError(f"{source}: gpus_per_node must be >= 0 and mem_gb > 0")
    return prof


def load_profile(name: str) -> SlurmProfile:
    """Load ``slurm/NAME.yaml`` (or a path to a YAML file).

    Raises:
        UserError: the profile does not exist or does not match the schema.
    """
    import yaml

    path = Path(name)
    if not (name.endswith((".yaml", ".yml")) and path.is_file()):
        path = profiles_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_profiles()) or "none"
        raise UserError(f"no Slurm profile '{name}' (known: {known}); add slurm/{name}.yaml or pick one")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({type(e).__name__}); fix the file") from None
    return parse_profile(path.stem, data, str(path))


def pin_setup_lines(run_dirs: list[Path]) -> list[str]:
    """Shell lines that put the task's pinned ``code/`` first on PYTHONPATH.

    One run: a plain export. An array: a bash array of run folders indexed by ``SLURM_ARRAY_TASK_ID``
    (submitit's ``batch()`` numbers tasks in submission order).
    """
    if len(run_dirs) == 1:
        run = shlex.quote(str(run_dirs[0]))
        return [f"export T2PO_RUN_DIR={run}", 'export PYTHONPATH="$T2PO_RUN_DIR/code${PYTHONPATH:+:$PYTHONPATH}"']
    items = " ".join(shlex.quote(str(d)) for d in run_dirs)
    return [
        f"T2PO_RUN_DIRS=({items})",
        'export T2PO_RUN_DIR="${T2PO_RUN_DIRS[${SLURM_ARRAY_TASK_ID:-0}]}"',
        'export PYTHONPATH="$T2PO_RUN_DIR/code${PYTHONPATH:+:$PYTHONPATH}"',
    ]


def executor_parameters(profile: SlurmProfile, job_name: str, setup: list[str]) -> dict[str, Any]:
    """submitit AutoExecutor parameters for a profile (shared names + ``slurm_``-prefixed ones)."""
    params: dict[str, Any] = {
        "name": job_name,
        "timeout_min": profile.timeout_min,
        "mem_gb": profile.mem_gb,
        "cpus_per_task": profile.cpus_per_task,
        "nodes": profile.nodes,
        "tasks_per_node": profile.tasks_per_node,
        "slurm_array_parallelism": profile.array_parallelism,
        "slurm_setup": [*profile.setup, *setup],
    }
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    for key in ("partition", "account", "qos"):
        value = getattr(profile, key)
        if value:
            params[f"slurm_{key}"] = value
    return params


def describe_submission(cfg: RunConfig, *, array_size: int | None = None, logs: str | None = None) -> str:
    """The sbatch script submitit would write for this config (``--dry-run``), header and setup lines.

    Args:
        cfg: a composed config with ``launcher.profile`` set.
        array_size: number of sweep points submitted as one array; None for a single run.
        logs: the log folder (default: a placeholder run folder under the experiment).
    """
    from submitit.slurm.slurm import _make_sbatch_string

    logs = logs or str(Path(cfg.runs_root).resolve() / str(cfg.experiment_name) / "<run>" / "logs")
    profile = load_profile(str(cfg.launcher.profile))
    placeholder = [Path("<run>")] if not array_size else [Path(f"<point-{i}>") for i in range(array_size)]
    params = executor_parameters(profile, f"t2po-{cfg.experiment_name}", pin_setup_lines(placeholder))
    slurm_kw = {
        "job_name": params["name"],
        "time": params["timeout_min"],
        "mem": _mem(profile.mem_gb),
        "cpus_per_task": profile.cpus_per_task,
        "nodes": profile.nodes,
        "ntasks_per_node": profile.tasks_per_node,
        "gpus_per_node": params.get("gpus_per_node"),
        "partition": profile.partition,
        "account": profile.account,
        "qos": profile.qos,
        "setup": params["slurm_setup"],
        "array_parallelism": profile.array_parallelism,
        "map_count": array_size,
    }
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {logs}"
    script = _make_sbatch_string(command=command, folder=logs, **slurm_kw)
    head = f"# Slurm profile {profile.name}: {profile.description}".rstrip(": ")
    ranks = profile.nodes * profile.tasks_per_node
    world = (f"# world: {ranks} rank{'s' if ranks > 1 else ''} ({profile.nodes} node(s) × {profile.tasks_per_node} "
             f"task(s), one task per rank), strategy {cfg.trainer.distributed.strategy}")
    return f"{head}\n{world}\n{script}"


def _mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def require_slurm() -> None:
    """Raise a one-line error when this machine cannot submit Slurm jobs."""
    missing = [tool for tool in ("sbatch", "sacct", "scancel") if shutil.which(tool) is None]
    if missing:
        raise BackendUnavailable(
            f"Slurm tools not found ({', '.join(missing)}); run on a login node, or use --launcher local"
        )


def make_executor(folder: Path, profile: SlurmProfile, job_name: str, setup: list[str]) -> Any:
    """A submitit AutoExecutor pinned to Slurm (never silently local)."""
    import submitit

    require_slurm()
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**executor_parameters(profile, job_name, setup))
    return executor


def submit_run(folder: RunFolder) -> str:
    """Submit one checkpointable ``RunJob`` for a run folder; logs go to ``<run>/logs``.

    Returns:
        The Slurm job id.
    """
    from t2po_cli.config.compose import load_run_config
    from t2po_cli.jobs.entry import RunJob

    run = folder.path.resolve()
    cfg = load_run_config(run / "resolved_config.yaml")
    profile = load_profile(str(cfg.launcher.profile))
    executor = make_executor(run / "logs", profile, f"t2po-{run.name}", pin_setup_lines([run]))
    job = executor.submit(RunJob(str(run)))
    record_submission(run, job)
    return str(job.job_id)


def submit_array(run_dirs: list[Path], profile: SlurmProfile, logs: Path, job_name: str) -> list[Any]:
    """Submit one ``RunJob`` per run folder as ONE Slurm job array (``executor.batch()``, infra.md §3).

    Returns:
        The submitit jobs, in the order of ``run_dirs`` (ids ``ARRAY_i``).
    """
    from t2po_cli.jobs.entry import RunJob

    runs = [Path(d).resolve() for d in run_dirs]
    executor = make_executor(logs, profile, job_name, pin_setup_lines(runs))
    with executor.batch():
        jobs = [executor.submit(RunJob(str(run))) for run in runs]
    for run, job in zip(runs, jobs, strict=True):
        record_submission(run, job)
    return jobs


def record_submission(run: Path, job: Any) -> None:
    """Write ``slurm_job.json`` into the run folder and link the job's logs into ``<run>/logs``."""
    import json

    paths = job.paths
    info = {"job_id": str(job.job_id), "stdout": str(paths.stdout), "stderr": str(paths.stderr)}
    (run / SUBMIT_RECORD).write_text(json.dumps(info, indent=1))
    logs = run / "logs"
    logs.mkdir(exist_ok=True)
    for name, target in (("slurm.out", paths.stdout), ("slurm.err", paths.stderr)):
        link = logs / name
        if Path(target).parent != logs and not link.exists() and not link.is_symlink():
            link.symlink_to(target)


def job_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm states by job id from ``sacct`` (array tasks as ``A_i``); missing ids are absent.

    sacct lags squeue by about a second (infra.md §2.7.2): callers poll.
    """
    if not job_ids:
        return {}
    require_slurm()
    base = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(base)],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as e:
        raise BackendUnavailable(
            f"sacct failed ({type(e).__name__}); is slurmdbd running? try `sacct -j {base[0]}`"
        ) from None
    states: dict[str, str] = {}
    for line in out.splitlines():
        jid, _, state = line.partition("|")
        states[jid.strip()] = state.strip().split(" ")[0]
    return states


def cancel_jobs(job_ids: list[str]) -> None:
    """``scancel`` the given jobs (an array id cancels every task of the array)."""
    if not job_ids:
        return
    require_slurm()
    subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=30, check=False)
