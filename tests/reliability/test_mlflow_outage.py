"""An MLflow server stopped mid-run does not stop training; ``t2po sync`` delivers every row exactly once."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from reliability.helpers import free_port, health_ok, kill_tree, metric_rows, t2po, t2po_popen, wait_for

pytestmark = pytest.mark.slow


def _start_mlflow(store: Path, port: int, log: Path) -> subprocess.Popen[str]:
    exe = shutil.which("mlflow")
    out = open(log, "a")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [exe or "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--default-artifact-root", str(store / "art")],
        stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )

    if not wait_for(lambda: health_ok(port), timeout=120, interval=0.5, proc=proc):
        kill_tree(proc)
        pytest.fail(f"mlflow server did not start: {log.read_text()[-2000:]}")
    return proc


def _delivered(run: Path) -> int:
    try:
        return len(json.loads((run / "mlflow_sync.json").read_text())["delivered"])
    except (OSError, ValueError, KeyError):
        return 0


def test_server_outage_then_sync_delivers_everything_once(tmp_path: Path) -> None:
    if shutil.which("mlflow") is None:
        pytest.skip("the mlflow executable is not installed")
    import mlflow

    store, port = tmp_path / "store", free_port()
    store.mkdir()
    uri = f"http://127.0.0.1:{port}"
    server = _start_mlflow(store, port, tmp_path / "mlflow.log")
    run = tmp_path / "run"
    train = t2po_popen(["train", "--run-dir", str(run), "--tracking-uri", uri, "trainer=ci", "trainer.steps=4"],
                       cwd=tmp_path, log=tmp_path / "train.log")
    try:
        assert wait_for(lambda: _delivered(run) >= 1, timeout=600, proc=train), \
            (tmp_path / "train.log").read_text()[-2000:]
        kill_tree(server)  # the outage: rows logged from here on stay pending
        assert train.wait(timeout=900) == 0, (tmp_path / "train.log").read_text()[-3000:]
    finally:
        kill_tree(train)
        kill_tree(server)
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    rows = metric_rows(run)
    assert _delivered(run) < len(rows), "the outage lost nothing to deliver; nothing was tested"

    server = _start_mlflow(store, port, tmp_path / "mlflow.log")
    try:
        r = t2po(["sync", str(run)], cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        r2 = t2po(["sync", str(run)], cwd=tmp_path)  # idempotent: a second sync delivers nothing new
        assert r2.returncode == 0 and "0 new rows" in r2.stderr, r2.stderr[-2000:]
        client = mlflow.MlflowClient(tracking_uri=uri)
        run_id = json.loads((run / "mlflow_sync.json").read_text())["run_id"]
        for key in ("episode/success_rate", "val/episode/success_rate"):
            split = "val" if key.startswith("val/") else "train"
            want = sorted(row["step"] for row in rows if row["split"] == split)
            got = sorted(m.step for m in client.get_metric_history(run_id, key))
            assert got == want, (key, got, want)  # none lost, none duplicated
        assert client.get_run(run_id).info.status == "FINISHED"
    finally:
        kill_tree(server)
