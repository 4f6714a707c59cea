"""The one shared Rich console: human output to stderr, machine output (``--json``, ids) to stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(obj: Any) -> None:
    """Machine-readable output on stdout."""
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")
    sys.stdout.flush()


def hint(text: str) -> None:
    """The next command to run, after a success."""
    err.print(f"[dim]next:[/dim] [bold]{text}[/bold]")
