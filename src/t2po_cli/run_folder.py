"""Self-describing run folders that are never overwritten.

Layout of ``<runs_root>/<experiment>/<run-name>/``::

    resolved_config.yaml   the composed, validated config (source of truth for resume)
    overrides.txt          one override per line, as given
    command.txt            the command line that created the run
    git.json               {"sha", "dirty", "branch"}; dirty.diff holds the uncommitted diff
    code/                  the t2po_cli package and recipes as they were at creation (pinned code)
    metrics.jsonl          one JSON row per logged step (tracking/jsonl.py)
    checkpoints/step_N/    adapter/weights, optimizer, RNG states, data cursor
    status.json            {"state": created|running|finished|failed, ...}
    logs/                  launcher stdout/stderr; train.log holds third-party log records and warnings
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from t2po_cli.errors import RunFolderError, UserError

RESOLVED_CONFIG = "resolved_config.yaml"
OVERRIDES = "overrides.txt"
COMMAND = "command.txt"
GIT = "git.json"
METRICS = "metrics.jsonl"
STATUS = "status.json"
CHECKPOINTS = "checkpoints"
CODE = "code"
LOGS = "logs"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def check_name(name: str, what: str) -> str:
    """Reject names that could escape the runs folder or break file systems.

    Raises:
        UserError: the name contains a path separator, ``..``, or characters outside ``[A-Za-z0-9._+-]``.
    """
    if not _SAFE_NAME.match(name) or ".." in name:
        raise UserError(
            f"{what} {name!r} is not a safe folder name; use letters, digits, '.', '_', '+', '-' "
            "(no '/', no '..', at most 128 characters)"
        )
    return name


def git_state(repo: Path) -> dict[str, object]:
    """SHA, dirty flag and branch of the checkout at ``repo`` (``sha=None`` outside git)."""

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        sha = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
        branch = run("rev-parse", "--abbrev-ref", "HEAD")
        diff = run("diff", "HEAD") if dirty else ""
    except (subprocess.SubprocessError, FileNotFoundError, OSError):
        return {"sha": None, "dirty": None, "branch": None, "diff": ""}
    return {"sha": sha, "dirty": dirty, "branch": branch, "diff": diff}


@dataclass(frozen=True)
class RunFolder:
    """A run folder on disk."""

    path: Path

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def config_path(self) -> Path:
        return self.path / RESOLVED_CONFIG

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def code(self) -> Path:
        return self.path / CODE

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def train_log(self) -> Path:
        """Third-party log records and warnings of the run (``capture.capture_third_party``)."""
        return self.path / LOGS / "train.log"

    def write_status(self, state: str, **extra: object) -> None:
        """Atomically record the run's state."""
        tmp = self.path / (STATUS + ".tmp")
        tmp.write_text(json.dumps({"state": state, **extra}, indent=1))
        os.replace(tmp, self.path / STATUS)

    def read_status(self) -> dict[str, object]:
        try:
            return json.loads((self.path / STATUS).read_text())
        except (OSError, ValueError):
            return {"state": "unknown"}

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """Open an existing run folder.

        Raises:
            RunFolderError: the folder or its resolved config is missing.
        """
        p = Path(path)
        if not p.is_dir():
            raise RunFolderError(f"run folder {p} does not exist; pass a folder created by `t2po train`")
        if not (p / RESOLVED_CONFIG).is_file():
            raise RunFolderError(f"{p} has no {RESOLVED_CONFIG}; it is not a t2po run folder")
        return cls(p)


def unique_path(parent: Path, name: str) -> Path:
    """``parent/name``, or ``parent/name-1``, ``-2``… if taken. Never returns an existing path."""
    candidate = parent / name
    i = 1
    while candidate.exists():
        candidate = parent / f"{name}-{i}"
        i += 1
    return candidate


def _check_writable(folder: Path) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UserError(f"cannot write to {probe}; choose another folder with --run-dir or runs_root=PATH")


def pin_code(dest: Path, repo: Path) -> None:
    """Copy the package source and recipes, so a queued job runs the code that was submitted."""
    pkg = Path(__file__).resolve().parent  # this module sits at the package root
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(pkg, dest / "t2po_cli", ignore=ignore)
    for extra in ("recipes", "sweeps", "slurm"):
        src = repo / extra
        if src.is_dir():
            shutil.copytree(src, dest / extra, ignore=ignore)
    (dest / "pyproject.toml").write_text((repo / "pyproject.toml").read_text()) if (
        repo / "pyproject.toml"
    ).is_file() else None


def create_run_folder(
    *,
    runs_root: Path,
    experiment: str,
    run_name: str,
    resolved_yaml: str,
    overrides: tuple[str, ...] | list[str],
    command: list[str] | None = None,
    explicit_dir: Path | None = None,
    pin: bool = True,
) -> RunFolder:
    """Create a fresh run folder; a clash gets a new name, nothing is overwritten.

    Args:
        runs_root: root of all runs.
        experiment: experiment folder name.
        run_name: desired run folder name.
        resolved_yaml: the resolved config as YAML.
        overrides: overrides as given on the command line.
        command: argv that created the run (default: ``sys.argv``).
        explicit_dir: ``--run-dir``: use exactly this folder, which must not exist or be empty.
        pin: copy the code into ``code/``.
    """
    from t2po_cli.paths import repo_root

    check_name(experiment, "experiment name")
    check_name(run_name, "run name")
    if explicit_dir is not None:
        path = Path(explicit_dir)
        if path.exists() and any(path.iterdir()):
            raise UserError(f"--run-dir {path} exists and is not empty; runs are never overwritten, pick a new folder")
    else:
        path = unique_path(Path(runs_root) / experiment, run_name)
    _check_writable(path)
    tmp = path.with_name(f".{path.name}.creating")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        (tmp / RESOLVED_CONFIG).write_text(resolved_yaml)
        (tmp / OVERRIDES).write_text("".join(f"{o}\n" for o in overrides))
        argv = command if command is not None else sys.argv
        (tmp / COMMAND).write_text(" ".join(_quote(a) for a in argv) + "\n")
        repo = repo_root()
        state = git_state(repo)
        diff = state.pop("diff")
        (tmp / GIT).write_text(json.dumps(state, indent=1))
        if diff:
            (tmp / "dirty.diff").write_text(str(diff))
        if pin:
            pin_code(tmp / CODE, repo)
        (tmp / CHECKPOINTS).mkdir()
        (tmp / LOGS).mkdir()
        folder = RunFolder(tmp)
        folder.write_status("created")
        if path.exists():  # explicit empty dir
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RunFolder(path)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def default_run_name(env: str, algo: str, variant: str, seed: int) -> str:
    """``<env>_<algo>_t2po-<variant>_s<seed>``."""
    return f"{env}_{algo}_t2po-{variant}_s{seed}"


def find_runs(paths: list[Path]) -> list[RunFolder]:
    """Run folders at or below the given paths (a run, a sweep or an experiment folder)."""
    found: list[RunFolder] = []
    for p in paths:
        if (p / RESOLVED_CONFIG).is_file():
            found.append(RunFolder(p))
            continue
        if not p.is_dir():
            raise RunFolderError(f"{p} does not exist; pass run or sweep folders")
        for cfg in sorted(p.rglob(RESOLVED_CONFIG)):
            if CODE not in cfg.parts[len(p.parts) :]:
                found.append(RunFolder(cfg.parent))
    return found
