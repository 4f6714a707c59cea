"""Third-party output goes to a log file, not the console (ground floor).

MLflow, transformers, peft, torch, Hydra and friends print INFO log lines, progress bars ("Loading
weights", "Writing model shards") and warnings. None of that is for the user of ``t2po train``: while a
capture is active, log records of every library and every ``warnings.warn`` go to one log file (the run
folder's ``logs/train.log``, or ``$T2PO_CACHE/logs/<command>.log`` for commands without a run folder), and the
libraries' own progress bars are switched off. The console keeps t2po's own lines.

    with capture_third_party(buffered=True) as cap:    # before the run folder exists (MLflow set-up)
        ...
        cap.move_to(folder.logs / "train.log")          # earlier records are written there first

A capture that is already active is reused (``move_to`` redirects it), so an in-process job started by the
CLI and the job entry point share one file. Everything is restored on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_ENV = {
    "MLFLOW_CONFIGURE_LOGGING": "false",  # MLflow adds no stderr handler; its records reach ours
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",  # tqdm >= 4.66 reads TQDM_* defaults from the environment
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
"""Environment switches set (when unset) while a capture is active; child processes inherit them."""

_active: OutputCapture | None = None


class _BufferHandler(logging.Handler):
    """Keeps records until the capture knows its file."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class OutputCapture:
    """The active capture: where third-party records go now."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handler: logging.Handler = self._file_handler(path) if path is not None else _BufferHandler()

    @staticmethod
    def _file_handler(path: Path) -> logging.Handler:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(FORMAT))
        return handler

    def move_to(self, path: Path) -> None:
        """Write the records so far to ``path`` (appending) and send later ones there."""
        if self.path is not None and Path(path).resolve() == self.path.resolve():
            return
        new = self._file_handler(Path(path))
        old = self._handler
        if isinstance(old, _BufferHandler):
            for record in old.records:
                new.emit(record)
        root = logging.getLogger()
        root.removeHandler(old)
        old.close()
        root.addHandler(new)
        self._handler, self.path = new, Path(path)

    def _install(self) -> dict[str, object]:
        root = logging.getLogger()
        saved = {"level": root.level, "handlers": list(root.handlers), "env": {k: os.environ.get(k) for k in QUIET_ENV}}
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        # Records of every library go to our handler only (stderr handlers of the root logger are removed).
        for h in list(root.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                root.removeHandler(h)
        root.addHandler(self._handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        _quiet_transformers()
        return saved

    def _restore(self, saved: dict[str, object]) -> None:
        root = logging.getLogger()
        root.removeHandler(self._handler)
        self._handler.close()
        for h in saved["handlers"]:  # type: ignore[attr-defined]
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(saved["level"])  # type: ignore[arg-type]
        logging.captureWarnings(False)
        for key, value in saved["env"].items():  # type: ignore[attr-defined]
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _quiet_transformers() -> None:
    """transformers keeps its own stderr handler and bars; route its records to the root logger instead.

    Only when transformers is installed; importing its logging module does not import torch.
    """
    try:
        from transformers.utils import logging as tl
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    tl.disable_default_handler()
    tl.enable_propagation()
    tl.disable_progress_bar()
    with contextlib.suppress(ImportError):
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@contextlib.contextmanager
def capture_third_party(path: Path | None = None) -> Iterator[OutputCapture]:
    """Send third-party log records and warnings to ``path`` (None: keep them until ``move_to``).

    Nested use reuses the active capture and only redirects it when ``path`` is given.
    """
    global _active
    if _active is not None:
        if path is not None:
            _active.move_to(path)
        yield _active
        return
    cap = OutputCapture(path)
    saved = cap._install()
    _active = cap
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # every warning is logged once per location, none is lost
            yield cap
    finally:
        _active = None
        cap._restore(saved)
