"""Where the project's files are: the source checkout, its recipes and sweeps, the cache (ground floor).

Every layer may import this module; it imports only the standard library and ``t2po_cli.errors``.
"""

from __future__ import annotations

import os
from pathlib import Path

from t2po_cli.errors import ConfigError

ROOT_CONFIG = "train"
"""The root recipe (``recipes/train.yaml``) every run composes from."""


def repo_root() -> Path:
    """The source checkout this package runs from (an editable install), or the current directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "recipes").is_dir() and (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def recipes_dir() -> Path:
    """Folder of the Hydra recipes: ``$T2PO_RECIPES`` or ``<repo>/recipes``."""
    env = os.environ.get("T2PO_RECIPES")
    path = Path(env) if env else repo_root() / "recipes"
    if not (path / f"{ROOT_CONFIG}.yaml").is_file():
        raise ConfigError(
            f"recipe folder {path} has no {ROOT_CONFIG}.yaml; set T2PO_RECIPES to the project's recipes/ folder"
        )
    return path


def sweeps_dir() -> Path:
    """Folder of the shipped sweep files."""
    return repo_root() / "sweeps"


def cache_root() -> Path:
    """Where built models, warm starts and command logs are cached: ``$T2PO_CACHE`` or ``~/.cache/t2po``."""
    return Path(os.environ.get("T2PO_CACHE") or Path.home() / ".cache" / "t2po")
