"""User recipes are data: ``_target_`` (Hydra instantiation) is rejected and never instantiated."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from t2po_cli.config.compose import compose_config
from t2po_cli.errors import ConfigError
from t2po_cli.paths import repo_root

SRC = Path(__file__).resolve().parents[2] / "src" / "t2po_cli"


def test_source_never_instantiates_config() -> None:
    offenders = [str(p) for p in SRC.rglob("*.py") if re.search(r"\binstantiate\s*\(|hydra\.utils", p.read_text())]
    assert offenders == []


@pytest.mark.parametrize(("rel", "text"), [
    ("model/tiny.yaml", "_target_: os.system\n_args_: ['touch PWNED']\n"),
    ("trainer/ci.yaml", "steps: 2\nwarmstart: {_target_: os.system}\n"),
    ("experiment/webshop_gigpo_t2po.yaml", "# @package _global_\n_target_: os.system\n"),
])
def test_recipe_with_target_is_rejected(rel: str, text: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(repo_root() / "recipes", recipes)
    (recipes / rel).write_text(text)
    monkeypatch.setenv("T2PO_RECIPES", str(recipes))
    monkeypatch.chdir(tmp_path)
    group, name = rel.split("/")[0], Path(rel).stem
    with pytest.raises(ConfigError) as info:
        compose_config(["trainer=ci", f"{group}={name}"])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("override", ["+_target_=os.system", "+trainer._target_=os.system",
                                      "+model._partial_=true"])
def test_override_with_target_is_rejected(override: str) -> None:
    with pytest.raises(ConfigError):
        compose_config([override])


def test_resolved_config_with_target_is_rejected(tmp_path: Path) -> None:
    from t2po_cli.config.compose import load_run_config
    from t2po_cli.errors import RunFolderError

    path = tmp_path / "resolved_config.yaml"
    path.write_text(compose_config(["trainer=ci"]).yaml + "_target_: os.system\n")
    with pytest.raises(RunFolderError):
        load_run_config(path)
