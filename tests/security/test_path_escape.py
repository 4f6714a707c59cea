"""Run, experiment and sweep names cannot escape the runs folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2po_cli.cli.app import main
from t2po_cli.config.compose import compose_config
from t2po_cli.errors import ConfigError, UserError
from t2po_cli.run_folder import check_name

ESCAPES = ["../x", "../../etc", "/tmp/abs", "a/b", "a\\b", "..", ".", ".hidden", "x/../../y", "~", "~/x", "",
           "a\x00b", "a\nb", "x" * 200]


@pytest.mark.parametrize("name", ESCAPES)
def test_check_name_rejects(name: str) -> None:
    with pytest.raises(UserError):
        check_name(name, "run name")


@pytest.mark.parametrize("key", ["run_name", "experiment_name"])
@pytest.mark.parametrize("name", ["../x", "/tmp/abs", "a/b", "..", "x/../../y"])
def test_config_rejects_escaping_names(key: str, name: str) -> None:
    with pytest.raises(ConfigError):
        compose_config([f"{key}={name}"])


@pytest.mark.parametrize("override", ["run_name=../x", "run_name=/tmp/t2po-escape", "experiment_name=../up"])
def test_train_dry_run_refuses_and_creates_nothing(override: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dry-run", override]) == 2
    assert main(["train", override]) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b"])
def test_sweep_name_cannot_escape(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: '{name}'\ngrid: {{trainer.steps: [1, 2]}}\n")
    assert main(["sweep", str(sweep)]) == 2
    assert main(["sweep", "--name", name, "--seeds", "0,1"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
