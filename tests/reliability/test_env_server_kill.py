"""An env server killed mid-run: a clear one-line error (exit 2), and the run stays resumable."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reliability.helpers import (
    CI_OVERRIDES,
    free_port,
    health_ok,
    kill_tree,
    t2po,
    t2po_popen,
    wait_for,
)

pytestmark = pytest.mark.slow


def _serve(port: int, cwd: Path) -> subprocess.Popen[str]:
    proc = t2po_popen(["serve", "webshop", "--port", str(port)], cwd=cwd, log=cwd / f"serve-{port}.log")

    assert wait_for(lambda: health_ok(port), timeout=60, proc=proc), (cwd / f"serve-{port}.log").read_text()
    return proc


def test_killed_env_server_fails_cleanly_and_resumes(tmp_path: Path) -> None:
    port = free_port()
    server = _serve(port, tmp_path)
    run = tmp_path / "run"
    args = ["train", "--run-dir", str(run), *CI_OVERRIDES, "trainer.steps=4", "trainer.save_every=1",
            "env.backend=real", f"env.url=http://127.0.0.1:{port}", "env.retries=1", "env.timeout_s=5"]
    log = tmp_path / "train.log"
    train = t2po_popen(args, cwd=tmp_path, log=log)
    try:
        assert wait_for(lambda: (run / "checkpoints" / "step_1" / "state.json").is_file(), timeout=600, proc=train), \
            log.read_text()[-2000:]
        kill_tree(server)
        rc = train.wait(timeout=300)
    finally:
        kill_tree(train)
        kill_tree(server)
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert rc == 2, text[-3000:]
    assert "Traceback" not in text and len(errors) == 1, text[-3000:]
    assert "unavailable" in errors[0]
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    assert (run / "checkpoints" / "step_1" / "trainable.pt").is_file()

    server = _serve(port, tmp_path)  # same port: the run's config names this URL
    try:
        r = t2po(["train", "--resume", str(run)], cwd=tmp_path)
    finally:
        kill_tree(server)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_unreachable_env_server_is_one_line(tmp_path: Path) -> None:
    """No server at all: bounded retries, then exit 2 with one error line (the run folder stays resumable)."""
    port = free_port()
    r = t2po(["train", "--run-dir", str(tmp_path / "run"), *CI_OVERRIDES, "env.backend=real",
              f"env.url=http://127.0.0.1:{port}", "env.retries=1", "env.timeout_s=2"], cwd=tmp_path)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1, r.stderr[-3000:]

