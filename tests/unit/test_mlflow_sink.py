"""MLflow sink against a temporary sqlite store (explicit artifact location, infra.md §5.2): delivery,
an outage leaving rows pending, `t2po sync` delivering exactly the missing rows, and the secret filter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2po_cli.tracking import mlflow_sink as ms
from t2po_cli.tracking.jsonl import MetricsWriter, read_metrics

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, Path]:
    """One sqlite store for the module: its first use runs migrations (about 5 s)."""
    root = tmp_path_factory.mktemp("mlstore")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    return uri, root


def _run(tmp_path: Path, uri: str, name: str, exp_id: str | None = None) -> tuple[Path, object]:
    from omegaconf import OmegaConf

    from t2po_cli.config.compose import compose_config
    from t2po_cli.run_folder import create_run_folder

    composed = compose_config([f"runs_root={tmp_path}", f"tracking.tracking_uri={uri}", "trainer=ci",
                               f"experiment_name={name}"])
    node = OmegaConf.create(composed.yaml)
    if exp_id:
        node.tracking.experiment_id = exp_id
    folder = create_run_folder(runs_root=tmp_path, experiment=name, run_name="r", resolved_yaml=OmegaConf.to_yaml(node),
                               overrides=composed.overrides, pin=False)
    from t2po_cli.config.compose import load_run_config

    return folder.path, load_run_config(folder.config_path)


def _rows(run: Path, steps: range) -> list[dict]:
    w = MetricsWriter(run / "metrics.jsonl")
    for s in steps:
        w.write(s, "train", {"episode/success_rate": s / 10, "actor/pg_loss": -s})
        if s % 2 == 0:
            w.write(s, "val", {"episode/success_rate": s / 20})
    return read_metrics(run / "metrics.jsonl")


def _history(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in mlflow.MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


def test_deliver_uses_the_handed_experiment_id_and_parent(tmp_path: Path, store) -> None:
    uri, root = store
    exp_id = ms.ensure_experiment(uri, "handoff", artifact_root=root / "artifacts")
    assert ms.ensure_experiment(uri, "handoff", artifact_root=root / "artifacts") == exp_id  # idempotent
    parent = mlflow.MlflowClient(tracking_uri=uri).create_run(exp_id, run_name="sweep").info.run_id
    # The run folder's experiment_name differs: the id handed over must win (jobs never look up by name).
    run, cfg = _run(tmp_path, uri, "elsewhere", exp_id=exp_id)
    ms.write_parent_link(run, parent)
    sink = ms.MlflowSink(run, cfg)
    assert sink.deliver(_rows(run, range(1, 4))) is True and sink.finish() is True
    got = mlflow.MlflowClient(tracking_uri=uri).get_run(sink.state["run_id"])
    assert got.info.experiment_id == exp_id and got.info.status == "FINISHED"
    assert got.data.tags["mlflow.parentRunId"] == parent
    assert _history(uri, got.info.run_id, "episode/success_rate") == [1, 2, 3]
    assert _history(uri, got.info.run_id, "val/episode/success_rate") == [2]
    assert mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("elsewhere") is None


def test_outage_then_sync_delivers_missing_rows_once(tmp_path: Path, store, monkeypatch, capsys) -> None:
    from t2po_cli.cli.app import main

    uri, _ = store
    run, cfg = _run(tmp_path, uri, "outage")
    rows = _rows(run, range(1, 3))
    sink = ms.MlflowSink(run, cfg)
    assert sink.deliver(rows) is True
    run_id = sink.state["run_id"]

    # The server goes down: every call fails, delivery reports False and the rows stay pending.
    def down(*_a, **_k):
        raise ConnectionError("server down")

    monkeypatch.setattr(sink._client, "log_batch", down)
    more = _rows(run, range(3, 6))
    assert sink.deliver(more[len(rows):]) is False
    assert sink.deliver([]) is False  # within the back-off window: no attempt, still pending
    monkeypatch.undo()

    assert main(["sync", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"][0]["delivered"] == 4 and out["runs"][0]["already"] == 3  # train 3,4,5 + val 4
    assert _history(uri, run_id, "episode/success_rate") == [1, 2, 3, 4, 5]
    assert _history(uri, run_id, "val/episode/success_rate") == [2, 4]
    assert main(["sync", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["delivered"] == 0


def test_lost_bookkeeping_resends_without_duplicates(tmp_path: Path, store) -> None:
    uri, _ = store
    run, cfg = _run(tmp_path, uri, "crash")
    rows = _rows(run, range(1, 4))
    sink = ms.MlflowSink(run, cfg)
    sink.sync(rows)
    # A crash between MLflow accepting a batch and mlflow_sync.json being written: the rows are re-sent.
    state = json.loads((run / ms.SYNC_STATE).read_text())
    state["delivered"] = []
    (run / ms.SYNC_STATE).write_text(json.dumps(state))
    assert ms.MlflowSink(run, cfg).sync(rows) == len(rows)
    assert _history(uri, state["run_id"], "episode/success_rate") == [1, 2, 3]


def test_sync_reports_an_unreachable_server_in_one_line(tmp_path: Path, store, monkeypatch, capsys) -> None:
    from t2po_cli.cli.app import main

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri, _ = store
    run, _cfg = _run(tmp_path, uri, "down")
    _rows(run, range(1, 2))
    assert main(["sync", str(run), "--tracking-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "not synced" in err and "Traceback" not in err


def test_secrets_never_logged(tmp_path: Path, store, monkeypatch) -> None:
    uri, _ = store
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert ms.is_secret("HF_TOKEN") and ms.is_secret("AWS_SECRET_ACCESS_KEY") and ms.is_secret("DB_PASSWORD")
    assert ms.env_tags({"SLURM_JOB_ID": "1", "HF_TOKEN": "x"}) == {"env.SLURM_JOB_ID": "1"}
    assert not ms.is_secret_param("t2po.tds.skip_tokens") and ms.is_secret_param("env.api_key")
    assert ms.redact("http://user:pw@host:5000/x") == "http://***@host:5000/x"
    run, cfg = _run(tmp_path, uri, "secrets")
    sink = ms.MlflowSink(run, cfg, tags={"MY_API_TOKEN": "s3cr3t", "team": "rl"})
    assert sink.deliver(_rows(run, range(1, 2)))
    data = mlflow.MlflowClient(tracking_uri=uri).get_run(sink.state["run_id"]).data
    assert "MY_API_TOKEN" not in data.tags and data.tags["team"] == "rl" and data.tags["env.SLURM_JOB_ID"] == "42"
    assert "s3cr3t" not in json.dumps(data.params) + json.dumps(data.tags)
    assert data.params["t2po.tds.skip_tokens"] == str(cfg.t2po.tds.skip_tokens)


@pytest.mark.parametrize(("state", "status"), [("finished", "FINISHED"), ("failed", "FAILED"), ("stopped", "KILLED"),
                                               ("running", "RUNNING")])
def test_sync_marks_the_mlflow_run_by_the_folder_state(tmp_path: Path, store, capsys, state: str,
                                                       status: str) -> None:
    # A run stopped by trainer.on_collapse=stop ended early and can be resumed: KILLED, not left RUNNING;
    # a run still running stays RUNNING.
    from t2po_cli.cli.app import main
    from t2po_cli.run_folder import RunFolder

    uri, _ = store
    run, _cfg = _run(tmp_path, uri, f"state_{state}")
    _rows(run, range(1, 3))
    RunFolder.open(run).write_status(state, step=2)
    assert main(["sync", str(run), "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["runs"][0]["run_id"]
    assert mlflow.MlflowClient(tracking_uri=uri).get_run(run_id).info.status == status
