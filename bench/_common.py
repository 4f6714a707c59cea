"""Shared bench plumbing: alternating timing, medians, JSON output and a printed table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def alternate(contenders: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Run each contender once per repetition, in rotating order (so drift and noisy neighbours hit all).

    A contender returns the amount of work it did (tokens, 1 for "one call"); we record seconds and work.
    Returns name → list of work/second rates.
    """
    names = list(contenders)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            t0 = time.perf_counter()
            work = contenders[name]()
            rates[name].append(work / (time.perf_counter() - t0))
    return rates


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def machine() -> dict[str, Any]:
    """Where the numbers come from (they mean nothing without it)."""
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg_1m": os.getloadavg()[0]}


def write(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    """A plain markdown table (the README quotes it as is)."""
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
