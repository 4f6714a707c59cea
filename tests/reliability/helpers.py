"""Shared helpers for the reliability and security suites: CLI subprocesses, free ports, run folders."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

# A 2-step tiny-model run; tests add trainer.steps / save_every as they need.
CI_OVERRIDES = ["trainer=ci", "tracking.mlflow=false"]
NON_METRIC_PREFIXES = ("timing_s/", "perf/")


def t2po(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600,
         ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m t2po_cli ARGS`` to completion (one torch thread: 2 shared cores)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "t2po_cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def t2po_popen(args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
               log: Path | None = None) -> subprocess.Popen[str]:
    """Start ``python -m t2po_cli ARGS`` in its own process group (so a kill reaches only it)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "t2po_cli", *args], cwd=cwd, env=full_env, stdout=out,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def health_ok(port: int) -> bool:
    """True when ``http://127.0.0.1:PORT/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def kill_tree(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Signal the process group we started (by its id), then reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


def wait_for(predicate: Any, *, timeout: float, interval: float = 0.2, proc: subprocess.Popen[Any] | None = None,
             ) -> bool:
    """Poll ``predicate`` until true; False on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(predicate())
        time.sleep(interval)
    return False


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def only_run(root: Path) -> Path:
    """The single run folder under ``root`` (found by its resolved config, pinned code excluded)."""
    found = [p.parent for p in root.rglob("resolved_config.yaml") if "code" not in p.relative_to(root).parts]
    assert len(found) == 1, found
    return found[0]


def metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of a run's metrics.jsonl, in file order."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def comparable(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """(step, split) → metrics without wall-clock keys (timing and throughput differ between runs)."""
    return {
        (r["step"], r["split"]): {
            k: v for k, v in r["metrics"].items() if not k.removeprefix("val/").startswith(NON_METRIC_PREFIXES)
        }
        for r in rows
    }


def assert_one_line_error(rc: int, stderr: str) -> None:
    """Exit 2, exactly one non-empty stderr line starting ``error:``, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), stderr
