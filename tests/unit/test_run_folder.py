"""Run folders: self-describing, never overwritten, names cannot escape the runs root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2po_cli.config.compose import compose_config
from t2po_cli.errors import UserError
from t2po_cli.run_folder import RunFolder, create_run_folder, find_runs
from t2po_cli.tracking.jsonl import MetricsWriter, read_metrics


def _make(root: Path, name: str = "r", **kw) -> RunFolder:
    composed = compose_config(["env=alfworld"])
    return create_run_folder(
        runs_root=root, experiment="exp", run_name=name, resolved_yaml=composed.yaml,
        overrides=composed.overrides, command=["t2po", "train"], pin=kw.pop("pin", False), **kw,
    )


def test_layout_and_no_overwrite(tmp_path: Path) -> None:
    a = _make(tmp_path)
    b = _make(tmp_path)
    assert a.path.name == "r" and b.path.name == "r-1"
    for f in ("resolved_config.yaml", "overrides.txt", "command.txt", "git.json", "status.json"):
        assert (a.path / f).is_file(), f
    assert json.loads((a.path / "git.json").read_text()).keys() >= {"sha", "dirty"}
    assert (a.path / "command.txt").read_text() == "t2po train\n"
    assert RunFolder.open(a.path).read_status()["state"] == "created"
    assert [r.path for r in find_runs([tmp_path])] == [a.path, b.path]


def test_pinned_code_is_copied(tmp_path: Path) -> None:
    run = _make(tmp_path, pin=True)
    assert (run.code / "t2po_cli" / "cli" / "app.py").is_file()
    assert (run.code / "recipes" / "train.yaml").is_file()


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", "", "x" * 200, "/abs", "name with space"])
def test_names_cannot_escape(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UserError):
        _make(tmp_path, name=bad)
    assert not any(tmp_path.rglob("resolved_config.yaml"))


def test_explicit_dir_must_be_new_or_empty(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="not empty"):
        _make(tmp_path, explicit_dir=target)
    assert (target / "keep.txt").read_text() == "precious"


def test_metrics_truncate_after_drops_later_and_torn_rows(tmp_path: Path) -> None:
    w = MetricsWriter(tmp_path / "metrics.jsonl")
    for step in range(4):
        w.write(step, "train", {"episode/success_rate": step / 10})
    w.write(2, "val", {"episode/success_rate": 0.5})
    with open(w.path, "a") as fh:
        fh.write('{"step": 9, "split": "tr')  # torn last line from a killed writer
    assert len(read_metrics(w.path)) == 5  # torn line ignored on read
    dropped = w.truncate_after(2)
    rows = read_metrics(w.path)
    assert dropped == 2  # step 3 and the torn line
    assert [(r["step"], r["split"]) for r in rows] == [(0, "train"), (1, "train"), (2, "train"), (2, "val")]


def test_nonfinite_metrics_stay_valid_json(tmp_path: Path) -> None:
    w = MetricsWriter(tmp_path / "m.jsonl")
    w.write(0, "train", {"actor/grad_norm": float("nan")})
    json.loads(w.path.read_text())  # valid JSON
    value = read_metrics(w.path)[0]["metrics"]["actor/grad_norm"]
    assert value != value  # NaN comes back as NaN
