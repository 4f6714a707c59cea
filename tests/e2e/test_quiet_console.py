"""`t2po train` shows t2po's own lines only: third-party log records, bars and warnings go to the run log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

OURS = re.compile(
    r"^(run folder: |train: |warm start|building the warm start|resumed from|finished |next: |step \d+: )"
)
"""The lines t2po itself prints during a training run (ConsoleProgress lines, notes, hints)."""
NOISE = re.compile(r"INFO|WARNING|Warning|warn\(|it/s|Loading weights|Writing model shards|%\|")


def test_train_prints_only_its_own_lines_and_logs_the_rest(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "t2po_cli", "train", "--env", "webshop", "--model", "tiny", "--json", "trainer=ci",
         # MLflow on: a fresh sqlite store under runs/
         "trainer.steps=2", "env.max_turns=3", f"runs_root={tmp_path / 'runs'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=1200,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines, "nothing reported"
    strangers = [line for line in lines if not OURS.match(line) or NOISE.search(line)]
    assert strangers == []
    # The records were captured, not lost: MLflow created its tables, and they are in the run's log.
    log = (tmp_path / json.loads(r.stdout)["run_dir"] / "logs" / "train.log").read_text()
    assert "mlflow" in log and "Creating initial MLflow database tables" in log


def test_progress_without_a_terminal_is_throttled() -> None:
    from io import StringIO

    from rich.console import Console

    from t2po_cli.console import ConsoleProgress

    buf = StringIO()
    p = ConsoleProgress(Console(file=buf, force_terminal=False, width=200))
    p.start("warm start", 300)
    for step in range(1, 301):
        p.update(step, f"loss {1 / step:.3f}")
    p.stop()
    lines = buf.getvalue().splitlines()
    # every 10 % (30 steps), plus nothing else: 10 lines for 300 steps, the last one at 300/300
    assert len(lines) == 10 and lines[-1].startswith("warm start: 300/300 (100%)")
    assert "eta " in lines[0] and "eta" not in lines[-1]
