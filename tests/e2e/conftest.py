"""End-to-end fixtures: small runs of the tiny model (``trainer=ci``) in an isolated runs root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2po_cli.config.compose import compose_config
from t2po_cli.run_folder import RunFolder, create_run_folder

VOLATILE_PREFIXES = ("timing_s/", "perf/")


def make_run(root: Path, overrides: list[str], name: str = "run") -> RunFolder:
    """A run folder for ``overrides`` on top of the CI trainer recipe, MLflow off."""
    composed = compose_config(["trainer=ci", "tracking.mlflow=false", f"runs_root={root}", *overrides])
    return create_run_folder(
        runs_root=root, experiment="e2e", run_name=name, resolved_yaml=composed.yaml,
        overrides=composed.overrides, command=["pytest"], pin=False,
    )


def stable_rows(run: RunFolder) -> list[tuple[int, str, dict[str, float]]]:
    """(step, split, metrics without wall-clock keys) of every row."""
    rows = []
    for line in run.metrics_path.read_text().splitlines():
        row = json.loads(line)
        metrics = {
            k: v for k, v in row["metrics"].items() if not k.removeprefix("val/").startswith(VOLATILE_PREFIXES)
        }
        rows.append((row["step"], row["split"], metrics))
    return rows


def train_until_checkpoint(run: RunFolder, step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train ``run`` and let its process "die" (KeyboardInterrupt) right after the step-``step`` checkpoint."""
    from t2po_cli.trainer import loop

    real_save = loop._save

    def save_then_die(s, at):
        real_save(s, at)
        if at == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.train_run(run.path)
    monkeypatch.setattr(loop, "_save", real_save)


@pytest.fixture
def e2e_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs"
