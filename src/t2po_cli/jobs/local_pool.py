"""Local sweep launcher: a pool of at most ``max_parallel`` worker processes, one per pre-created run folder.

Each worker is a fresh Python process (``python -m t2po_cli.jobs.local_pool RUN_DIR``) that runs the same
entry as ``t2po train --resume``: the trainer reads the run folder and resumes from its last checkpoint.
The worker runs the code pinned in ``<run>/code`` (``PYTHONPATH``), exactly like a Slurm job, and writes
stdout and stderr to ``<run>/logs/local.log``. Workers start in their own session, so cancelling one
signals its whole process group and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LOG_NAME = "local.log"
POLL_S = 0.5


@dataclass
class Worker:
    """One point's worker process and its outcome."""

    run_dir: Path
    state: str = "pending"
    """pending, running, finished, failed or cancelled."""
    pid: int | None = None
    returncode: int | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = Path(self.run_dir) / "logs" / LOG_NAME


def worker_env(run_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: pinned code first on PYTHONPATH, one thread per worker unless set."""
    env = dict(os.environ if base is None else base)
    code = str(Path(run_dir).resolve() / "code")
    env["PYTHONPATH"] = code + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["T2PO_RUN_DIR"] = str(Path(run_dir).resolve())
    env.setdefault("OMP_NUM_THREADS", "1")  # N workers on few cores: OpenMP spinning costs 2-10x
    return env


def start_worker(worker: Worker) -> subprocess.Popen[bytes]:
    """Start one worker process writing to ``<run>/logs/local.log``."""
    worker.log.parent.mkdir(parents=True, exist_ok=True)
    with open(worker.log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "t2po_cli.jobs.local_pool", str(Path(worker.run_dir).resolve())],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=worker_env(worker.run_dir),
            start_new_session=True,
        )
    worker.pid = proc.pid
    worker.state = "running"
    return proc


def run_pool(
    run_dirs: list[Path],
    max_parallel: int,
    on_change: Callable[[list[Worker]], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[Worker]:
    """Run every run folder with at most ``max_parallel`` concurrent workers; blocks until all are done.

    Args:
        run_dirs: pre-created run folders.
        max_parallel: concurrent workers (>= 1).
        on_change: called with all workers whenever one starts or ends (e.g. to rewrite sweep.json).
        cancelled: polled; when it returns True, running workers are terminated and pending ones skipped.

    Returns:
        The workers with their final states, return codes and log paths.
    """
    workers = [Worker(Path(d)) for d in run_dirs]
    procs: dict[int, subprocess.Popen[bytes]] = {}
    queue = list(range(len(workers)))
    notify = on_change or (lambda _w: None)
    try:
        while queue or procs:
            if cancelled is not None and cancelled():
                _cancel_all(workers, procs, queue)
                notify(workers)
                break
            while queue and len(procs) < max(1, max_parallel):
                i = queue.pop(0)
                procs[i] = start_worker(workers[i])
                notify(workers)
            for i, proc in list(procs.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del procs[i]
                workers[i].returncode = rc
                workers[i].state = "finished" if rc == 0 else "failed"
                notify(workers)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        _cancel_all(workers, procs, queue)
        notify(workers)
        raise
    return workers


def _cancel_all(workers: list[Worker], procs: dict[int, subprocess.Popen[bytes]], queue: list[int]) -> None:
    for i, proc in procs.items():
        terminate_group(proc.pid)
        try:
            workers[i].returncode = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            workers[i].returncode = proc.wait()
        workers[i].state = "cancelled"
    for i in queue:
        workers[i].state = "cancelled"
    procs.clear()
    queue.clear()


def terminate_group(pid: int) -> None:
    """SIGTERM a worker's process group (it was started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def is_our_worker(pid: int, run_dir: Path) -> bool:
    """True when ``pid`` is still the worker for ``run_dir`` (guards against a recycled PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"t2po_cli.jobs.local_pool" in cmdline and str(Path(run_dir).resolve()).encode() in cmdline


def main(argv: list[str] | None = None) -> int:
    """Worker entry: train (or resume) one run folder in this process."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m t2po_cli.jobs.local_pool RUN_DIR\n")
        return 2
    from t2po_cli.config.compose import load_run_config
    from t2po_cli.jobs.entry import run_job, run_ranks
    from t2po_cli.run_folder import RunFolder

    # A multi-rank sweep point (launcher.nproc > 1) starts its ranks through torchrun from this worker.
    nproc = load_run_config(RunFolder.open(args[0]).config_path).launcher.nproc
    summary = run_ranks(args[0], nproc) if nproc > 1 else run_job(args[0])
    sys.stdout.write(f"t2po worker finished: {summary}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
