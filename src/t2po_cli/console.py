"""The shared Rich console and progress reporting (ground floor).

Human output goes to stderr, machine output (``--json``, ids) to stdout. Long work reports through a
``Progress`` object handed down by the caller, never by printing: the trainer and the warm start call
``start``/``update``/``note``/``stop``, and the command that started them decides how that looks
(``ConsoleProgress``: a Rich bar on a terminal, a throttled line per ~10 % or 30 s otherwise; ``NullProgress``:
nothing, for library use and tests).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)

NON_TTY_EVERY_FRACTION = 0.1
"""Without a terminal, print a progress line at most every 10 % of the total ..."""
NON_TTY_EVERY_S = 30.0
"""... or every 30 s, whichever comes first (and always the last step)."""


def emit_json(obj: Any) -> None:
    """Machine-readable output on stdout."""
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")
    sys.stdout.flush()


def hint(text: str) -> None:
    """The next command to run, after a success."""
    err.print(f"[dim]next:[/dim] [bold]{text}[/bold]")


class Progress(Protocol):
    """Where long work reports (the trainer loop, the warm start, evaluation)."""

    def start(self, label: str, total: int, completed: int = 0) -> None:
        """Begin a task of ``total`` units, ``completed`` of them already done (a resumed run)."""
        ...

    def update(self, completed: int, info: str = "") -> None:
        """``completed`` units are done; ``info`` is a short status (e.g. ``loss 0.412``)."""
        ...

    def note(self, text: str) -> None:
        """One line worth telling the user now (what is being built, a warning, a resume)."""
        ...

    def alert(self, text: str) -> None:
        """An early warning the user must not miss: one line (a yellow Rich panel on a terminal)."""
        ...

    def stop(self) -> None:
        """The task ended (also on errors)."""
        ...


class NullProgress:
    """Reports nothing."""

    def start(self, label: str, total: int, completed: int = 0) -> None:
        pass

    def update(self, completed: int, info: str = "") -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def alert(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


class ConsoleProgress:
    """A Rich progress bar on stderr when it is a terminal; otherwise throttled plain lines.

    Without a terminal (CI logs, Slurm output, pipes) a line ``label: 30/300 (10%) loss 0.41  eta 5m10s`` is
    printed at most every ``NON_TTY_EVERY_FRACTION`` of the total or ``NON_TTY_EVERY_S`` seconds, and at the
    end, so a 300-step warm start prints about ten lines, not three hundred.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or err
        self._bar: Any = None
        self._task: Any = None
        self._label, self._total, self._start_done = "", 0, 0
        self._t0 = self._last_t = 0.0
        self._last_done = 0

    def start(self, label: str, total: int, completed: int = 0) -> None:
        self._label, self._total, self._start_done = label, total, completed
        self._t0 = self._last_t = time.monotonic()
        self._last_done = completed
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=self.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, completed=completed, info="")

    def update(self, completed: int, info: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, info=info)
            return
        now = time.monotonic()
        step = max(1, round(self._total * NON_TTY_EVERY_FRACTION))
        due = completed - self._last_done >= step or now - self._last_t >= NON_TTY_EVERY_S
        if not (due or completed >= self._total):
            return
        self._last_t, self._last_done = now, completed
        pct = 100.0 * completed / self._total if self._total else 100.0
        line = f"{self._label}: {completed}/{self._total} ({pct:.0f}%)"
        if info:
            line += f"  {info}"
        eta = self.eta_seconds(completed, now)
        if eta is not None and completed < self._total:
            line += f"  eta {format_duration(eta)}"
        self.console.print(line, markup=False, highlight=False)

    def eta_seconds(self, completed: int, now: float | None = None) -> float | None:
        """Seconds left at the average pace so far (None before the first unit of this session)."""
        done = completed - self._start_done
        if done <= 0:
            return None
        elapsed = (now if now is not None else time.monotonic()) - self._t0
        return elapsed / done * (self._total - completed)

    def note(self, text: str) -> None:
        target = self._bar.console if self._bar is not None else self.console
        target.print(text, markup=False, highlight=False)

    def alert(self, text: str) -> None:
        target = self._bar.console if self._bar is not None else self.console
        if target.is_terminal:
            from rich.panel import Panel
            from rich.text import Text

            target.print(Panel(Text(text), title="early warning", border_style="yellow", expand=False))
        else:
            target.print(text, markup=False, highlight=False)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def format_duration(seconds: float) -> str:
    """``95`` → ``1m35s``, ``3725`` → ``1h02m``, ``42`` → ``42s``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
