"""The job entry point: the only place under ``jobs/`` that imports the trainer.

``RunJob`` is what submitit pickles: it holds only the run folder path (design rule 9). On preemption or
time-out submitit calls ``checkpoint()``, which requeues the same job; the trainer then resumes from the
last checkpoint in the run folder, so a requeued run continues instead of restarting.
"""

from __future__ import annotations

from typing import Any


def run_job(run_dir: str) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir`` in this process. Returns the final summary metrics."""
    from pathlib import Path

    from t2po_cli.capture import capture_third_party
    from t2po_cli.console import ConsoleProgress
    from t2po_cli.run_folder import RunFolder
    from t2po_cli.trainer.loop import train_run

    # Third-party log lines, bars and warnings go to the run folder's logs/train.log, not the console.
    with capture_third_party(RunFolder(Path(run_dir)).train_log):
        return train_run(run_dir, progress=ConsoleProgress())


class RunJob:
    """A picklable, checkpointable training job for submitit."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = str(run_dir)

    def __call__(self) -> dict[str, Any]:
        return run_job(self.run_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue this same job; the trainer resumes from the run folder's last checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(RunJob(self.run_dir))
