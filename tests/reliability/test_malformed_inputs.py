"""Malformed user input of every kind exits 2 with one ``error:`` line, no traceback, and writes nothing.

Runs the CLI in-process (``main(argv)``) for speed; each case builds its broken input in a fresh tmp folder
and the whole folder is snapshotted before and after, so "writes nothing new" covers run folders, reports,
MLflow stores and temp files alike.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from reliability.helpers import assert_one_line_error
from t2po_cli.cli.app import main
from t2po_cli.paths import repo_root

Setup = Callable[[Path, pytest.MonkeyPatch], list[str]]

# Overrides that must fail validation before a run folder exists (no --dry-run: the real command).
BAD_OVERRIDES = [
    "trainer.steps=abc", "trainer.steps=-1", "trainer.steps=", "trainer.steps=1e400", "trainer.lr=nan",
    "trainer.lr=inf", "t2po.tds.eta=-inf", "nokey=1", "+trainer.newkey=1", "trainer", "~trainer.steps", "=5",
    "model=nonexistent", "model=[1,2]", "model={a:1}", "trainer.lr=[1,2]", "trainer.steps={a:1}",
    "trainer.steps=${oops}", "trainer.seed=${oc.env:T2PO_SURELY_UNSET_VAR}", "'trainer.steps=1",
    "trainer.steps=1)", "trainer.steps=choice(1,2)", "trainer.train_sampling=5", "env.name=mars",
    "trainer.group_size=1", "run_name=../x", "run_name=/tmp/abs", "run_name=a/b", "experiment_name=../up",
    "+_target_=os.system", "trainer._target_=os.system", "\n",
]


def _override(ov: str) -> Setup:
    return lambda tmp, mp: ["train", ov]


def _recipes_with(rel: str, text: str | None) -> Callable[[Path, pytest.MonkeyPatch], Path]:
    """A tmp copy of recipes/ with ``rel`` replaced by ``text`` (None deletes it), selected by T2PO_RECIPES."""

    def make(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
        dst = tmp / "recipes"
        shutil.copytree(repo_root() / "recipes", dst)
        target = dst / rel
        if text is None:
            target.unlink()
        else:
            target.write_text(text)
        mp.setenv("T2PO_RECIPES", str(dst))
        return dst

    return make


def _recipe(rel: str, text: str | None, argv: list[str]) -> Setup:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        _recipes_with(rel, text)(tmp, mp)
        return argv

    return setup


def _sweep(text: str) -> Setup:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        (tmp / "bad_sweep.yaml").write_text(text)
        return ["sweep", str(tmp / "bad_sweep.yaml")]

    return setup


def _run_folder(config: str | None, *, status: str | None = None) -> Callable[[Path], Path]:
    """A hand-made run folder: ``config`` is the resolved_config.yaml text (None = file missing)."""

    def make(tmp: Path) -> Path:
        run = tmp / "runs" / "exp" / "run"
        (run / "checkpoints").mkdir(parents=True)
        if config is not None:
            (run / "resolved_config.yaml").write_text(config)
        if status is not None:
            (run / "status.json").write_text(f'{{"state": "{status}"}}')
        return run

    return make


def _valid_config(tmp: Path) -> str:
    from t2po_cli.config.compose import compose_config

    return compose_config(["trainer=ci", "tracking.mlflow=false", f"runs_root={tmp / 'runs'}"]).yaml


def _resume(config: str | None, status: str | None = None) -> Setup:
    return lambda tmp, mp: ["train", "--resume", str(_run_folder(config, status=status)(tmp))]


def _resume_valid_finished(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    return ["train", "--resume", str(_run_folder(_valid_config(tmp), status="finished")(tmp))]


def _resume_truncated_checkpoint(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    """A step_1 checkpoint whose trainable.pt was cut short (disk full, killed copy)."""
    import torch

    run = _run_folder(_valid_config(tmp), status="failed")(tmp)
    ck = run / "checkpoints" / "step_1"
    ck.mkdir()
    torch.save({"policy": {"w": torch.zeros(64, 64)}}, ck / "trainable.pt")
    raw = (ck / "trainable.pt").read_bytes()
    (ck / "trainable.pt").write_bytes(raw[: len(raw) // 3])
    torch.save({"policy": {}}, ck / "optimizer.pt")
    (ck / "state.json").write_text('{"step": 1}')
    return ["train", "--resume", str(run)]


def _report_metrics(text: str) -> Setup:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
        run = _run_folder(_valid_config(tmp), status="finished")(tmp)
        (run / "metrics.jsonl").write_text(text)
        return ["report", str(run), "--out", str(tmp / "report")]

    return setup


GOOD_ROW = '{"step": 0, "split": "val", "wall_time": 1.0, "metrics": {"episode/success_rate": 0.5}}\n'

CASES: dict[str, Setup] = {f"override {ov!r}": _override(ov) for ov in BAD_OVERRIDES}
CASES.update({
    "recipe: invalid YAML": _recipe("model/tiny.yaml", "name: [unclosed\n", ["train"]),
    "recipe: unknown key": _recipe("trainer/ci.yaml", "bogus_knob: 1\n", ["train", "trainer=ci"]),
    "recipe: wrong type": _recipe("trainer/ci.yaml", "steps: many\n", ["train", "trainer=ci"]),
    "recipe: a list, not a mapping": _recipe("env/webshop.yaml", "- a\n- b\n", ["train"]),
    "recipe: _target_ os.system": _recipe("model/tiny.yaml", "_target_: os.system\n", ["train"]),
    "recipe: defaults names a missing recipe": _recipe(
        "experiment/webshop_gigpo_t2po.yaml", "# @package _global_\ndefaults:\n  - override /model: nope\n",
        ["train", "experiment=webshop_gigpo_t2po"]),
    "recipe folder without train.yaml": _recipe("train.yaml", None, ["train"]),
    "sweep: missing file": lambda tmp, mp: ["sweep", str(tmp / "nope.yaml")],
    "sweep: invalid YAML": _sweep("name: [x\n"),
    "sweep: a list": _sweep("- a\n"),
    "sweep: empty file": _sweep(""),
    "sweep: unknown key": _sweep("name: s\ngrid: {trainer.steps: [1]}\nbogus: 1\n"),
    "sweep: missing name": _sweep("grid: {trainer.steps: [1, 2]}\n"),
    "sweep: name escapes": _sweep("name: ../x\ngrid: {trainer.steps: [1, 2]}\n"),
    "sweep: grid value not a list": _sweep("name: s\ngrid: {trainer.steps: 3}\n"),
    "sweep: seeds not integers": _sweep("name: s\ngrid: {trainer.steps: [1]}\nseeds: [a, b]\n"),
    "sweep: point fails validation": _sweep("name: s\ngrid: {trainer.steps: [1, -1]}\n"),
    "sweep: unknown override key": _sweep("name: s\ngrid: {trainer.nope: [1, 2]}\n"),
    "resume: missing folder": lambda tmp, mp: ["train", "--resume", str(tmp / "missing")],
    "resume: no resolved_config.yaml": _resume(None),
    "resume: corrupt resolved_config.yaml": _resume("trainer: [unclosed\n  - : :\n"),
    "resume: resolved config not a mapping": _resume("- 1\n- 2\n"),
    "resume: resolved config unknown key": _resume("bogus: 1\n"),
    "resume: resolved config wrong type": _resume("trainer: {steps: lots}\n"),
    "resume: finished run": _resume_valid_finished,
    "resume: truncated trainable.pt": _resume_truncated_checkpoint,
    "sync: missing folder": lambda tmp, mp: ["sync", str(tmp / "missing")],
    "report: missing folder": lambda tmp, mp: ["report", str(tmp / "missing")],
    "report: corrupt metrics line": _report_metrics(GOOD_ROW + "{not json\n" + GOOD_ROW.replace("0,", "1,", 1)),
    "report: binary metrics": _report_metrics("\x00\x01\x02garbage\n" + GOOD_ROW),
})


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_malformed_input_exits_2_with_one_line(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("T2PO_RECIPES", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv = CASES[case](tmp_path, monkeypatch)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    assert_one_line_error(rc, captured.err)
    assert _snapshot(tmp_path) == before, "a failed command must write nothing"


def test_at_least_40_cases() -> None:
    assert len(CASES) >= 40
