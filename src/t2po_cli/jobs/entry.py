"""The job entry point: the only place under ``jobs/`` that imports the trainer.

``RunJob`` is what submitit pickles: it holds only the run folder path (design rule 9). On preemption or
time-out submitit calls ``checkpoint()``, which requeues the same job; the trainer then resumes from the
last checkpoint in the run folder, so a requeued run continues instead of restarting. A multi-rank Slurm job
runs one ``RunJob`` per task: each task exports its rank and the rendezvous address (submitit's
``TorchDistributedEnvironment``) and joins the process group.

``run_ranks`` starts N ranks on this machine through torchrun's own launcher (``torch.distributed.run`` in
process: ``elastic_launch``); each rank runs ``python -m t2po_cli.jobs.entry RUN_DIR``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUMMARY = "summary.json"
"""Rank 0's final summary, written under ``<run>/logs/`` for the launcher of a multi-rank job."""


def run_job(run_dir: str) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir`` in this process (one rank when ``WORLD_SIZE`` is set).

    Returns the final summary metrics.
    """
    from t2po_cli.capture import capture_third_party
    from t2po_cli.console import ConsoleProgress, NullProgress
    from t2po_cli.run_folder import RunFolder
    from t2po_cli.trainer.loop import train_run

    folder = RunFolder(Path(run_dir))
    if "WORLD_SIZE" not in os.environ:
        # Third-party log lines, bars and warnings go to the run folder's logs/train.log, not the console.
        with capture_third_party(folder.train_log):
            return train_run(run_dir, progress=ConsoleProgress())
    from t2po_cli.trainer.distributed import rank_log

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    with rank_log(folder.path / "logs", rank, world_size) as log, capture_third_party(log):
        summary = train_run(run_dir, progress=ConsoleProgress() if rank == 0 else NullProgress())
    if rank == 0:
        (folder.path / "logs" / SUMMARY).write_text(json.dumps(summary))
    return summary


def run_ranks(run_dir: str, nproc: int) -> dict[str, Any]:
    """Run ``nproc`` ranks of the run on this machine (torchrun, one CPU thread each). Returns rank 0's summary.

    A rank that dies or hangs (past ``trainer.distributed.timeout_s``) ends every rank; the error names the
    first rank that failed and its log.

    Raises:
        RankFailed: a rank failed; the run folder keeps its checkpoints for ``--resume``.
    """
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from t2po_cli.capture import capture_third_party
    from t2po_cli.run_folder import RunFolder

    folder = RunFolder(Path(run_dir))
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
        rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1, start_method="spawn",
    )
    # Rollouts are Python-bound: one intra-op thread per rank, so N ranks share N cores without spinning.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        with capture_third_party(folder.train_log), _torch_logs_to(folder.train_log):
            elastic_launch(config, sys.executable)("-u", "-m", "t2po_cli.jobs.entry", str(folder.path))
    except ChildFailedError as e:
        error = rank_failure(e.failures, folder.path / "logs")
        # A rank killed by a signal cannot record its own failure: the launcher does.
        folder.write_status("failed", error=str(error))
        raise error from None
    return json.loads((folder.path / "logs" / SUMMARY).read_text())


@contextlib.contextmanager
def _torch_logs_to(path: Path) -> Iterator[None]:
    """torch.distributed's records (the launcher's) go to ``path`` instead of torch's own stderr handler."""
    import logging

    from t2po_cli.capture import FORMAT

    logger = logging.getLogger("torch.distributed")
    saved, propagate = list(logger.handlers), logger.propagate
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    for h in saved:
        logger.removeHandler(h)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.propagate = propagate
        for h in saved:
            logger.addHandler(h)


def rank_failure(failures: dict[int, Any], logs: Path) -> Exception:
    """The one-line error for torchrun's failed ranks: the earliest failure, its cause and its log."""
    import signal

    from t2po_cli.errors import RankFailed

    # The agent SIGTERMs the surviving ranks once one has failed: those are consequences, not the cause.
    rank, failure = min(failures.items(),
                        key=lambda kv: (kv[1].exitcode == -signal.SIGTERM, kv[1].timestamp, kv[0]))
    code = failure.exitcode
    cause = f"killed by {failure.signal_name()}" if code < 0 else f"exit code {code}"
    if "Timed out" in str(getattr(failure, "message", "")):
        cause += ": a collective timed out waiting for another rank (hung or dead; see the other ranks' logs)"
    return RankFailed(f"rank {rank} failed ({cause}); see {logs / f'rank{rank}.log'}; continue with --resume")


class RunJob:
    """A picklable, checkpointable training job for submitit (one per Slurm task for multi-rank jobs)."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = str(run_dir)

    def __call__(self) -> dict[str, Any]:
        import submitit

        try:
            tasks = submitit.JobEnvironment().num_tasks
        except RuntimeError:  # called outside a submitit job (tests, a plain call): one process
            tasks = 1
        if tasks > 1:
            # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the Slurm allocation.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            os.environ.setdefault("OMP_NUM_THREADS", "1")
        return run_job(self.run_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue this same job; the trainer resumes from the run folder's last checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(RunJob(self.run_dir))


def _rank_main(run_dir: str) -> int:
    """One rank under torchrun. A failure exits 1 without a console traceback: the traceback is in
    ``logs/rank{r}.log`` and in torchrun's error file, whose message ``rank_failure`` summarises."""
    from torch.distributed.elastic.multiprocessing.errors import record

    try:
        record(run_job)(run_dir)
    except BaseException:
        return 1
    return 0


if __name__ == "__main__":  # python -m t2po_cli.jobs.entry RUN_DIR
    sys.exit(_rank_main(sys.argv[1]))
