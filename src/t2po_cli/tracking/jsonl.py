"""metrics.jsonl: the source of truth for every metric of a run.

One JSON object per line::

    {"step": 3, "split": "train", "wall_time": 1732212345.1, "metrics": {"episode/success_rate": 0.25, ...}}

``split`` is ``train`` or ``val``; (step, split) is unique within a file. Rows are appended and flushed
with fsync, so a killed process loses at most the row it was writing; a torn last line is ignored on read
and dropped on resume. On resume from a checkpoint at step S, rows with step > S are dropped first
(``truncate_after``), so a resumed run never duplicates a row.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from t2po_cli.errors import RunFolderError


def _clean(value: Any) -> Any:
    """JSON-safe scalar: non-finite floats become strings ("nan", "inf") so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


class MetricsWriter:
    """Append-only writer for a run's metrics.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> dict[str, Any]:
        """Append one row and fsync it. Returns the row as written."""
        row = {
            "step": int(step),
            "split": split,
            "wall_time": time.time(),
            "metrics": {k: _clean(v) for k, v in sorted(metrics.items())},
        }
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return row

    def truncate_after(self, step: int) -> int:
        """Drop rows with ``step > step`` and any torn line (resume). Returns the number of rows dropped."""
        if not self.path.exists():
            return 0
        keep: list[str] = []
        dropped = 0
        seen: set[tuple[int, str]] = set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                key = (int(row["step"]), str(row["split"]))
            except (ValueError, KeyError, TypeError):
                dropped += 1
                continue
            if key[0] > step or key in seen:
                dropped += 1
                continue
            seen.add(key)
            keep.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep), encoding="utf-8")
        os.replace(tmp, self.path)
        return dropped


def read_metrics(path: Path, *, strict: bool = False) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl.

    Args:
        path: the file.
        strict: raise on a malformed line instead of skipping it (a torn last line is always skipped).

    Raises:
        RunFolderError: the file is missing, or (strict) a line in the middle is not a valid row.
    """
    if not Path(path).is_file():
        raise RunFolderError(f"{path} not found; the run has logged no metrics yet")
    return list(iter_metrics(path, strict=strict))


def iter_metrics(path: Path, *, strict: bool = False) -> Iterator[dict[str, Any]]:
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "step" not in row or "metrics" not in row:
                raise ValueError("not a metrics row")
            row.setdefault("split", "train")
        except ValueError:
            if strict and i < len(lines) - 1:
                raise RunFolderError(
                    f"{path} line {i + 1} is not a metrics row; repair or delete that line"
                ) from None
            continue
        row["metrics"] = {k: _parse(v) for k, v in row["metrics"].items()}
        yield row


def _parse(v: Any) -> Any:
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    return v
