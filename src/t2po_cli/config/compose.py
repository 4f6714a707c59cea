"""Compose recipes into a typed, validated ``RunConfig`` with Hydra's compose API.

Typer owns the command line; Hydra only composes. The schema is registered in Hydra's ConfigStore as
``run_schema`` and every recipe composes on top of it, so an unknown key in a recipe file or an override
fails at composition with Hydra's own hint (``+key=`` for additions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2po_cli.config.schema import RunConfig
from t2po_cli.errors import ConfigError
from t2po_cli.paths import ROOT_CONFIG, recipes_dir

RECIPE_GROUPS = ("model", "trainer", "algo", "env", "t2po", "experiment")


def list_recipes() -> dict[str, list[str]]:
    """Recipe names per group, sorted."""
    root = recipes_dir()
    return {g: sorted(p.stem for p in (root / g).glob("*.yaml")) for g in RECIPE_GROUPS}


@dataclass(frozen=True)
class ComposedRun:
    """A composed, validated run config together with how it was asked for."""

    config: RunConfig
    overrides: tuple[str, ...]
    yaml: str


_SCHEMA_REGISTERED = False


def _register_schema() -> None:
    global _SCHEMA_REGISTERED
    if _SCHEMA_REGISTERED:
        return
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    _SCHEMA_REGISTERED = True


_HYDRA_NOISE = re.compile(r"\s*(Set the environment variable HYDRA_FULL_ERROR=1.*)$", re.S)


def _one_line(err: BaseException) -> str:
    full_key = re.search(r"full_key: (\S+)", str(err))
    if full_key and "not in" in str(err).splitlines()[0]:
        key = full_key.group(1)
        return f"unknown key '{key}' (not in the schema); check the spelling with `t2po cat train --resolved`"
    msg = _HYDRA_NOISE.sub("", str(err)).strip()
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0]
        msg = f"{msg}: {first}" if first not in msg else msg
    msg = msg.split("Config search path")[0]
    msg = " ".join(line.strip() for line in msg.splitlines() if line.strip())
    if "full_key:" in msg:
        msg = msg.split("    full_key:")[0].strip()
        msg = re.sub(r"\s+full_key:.*", "", msg)
    return msg


def _reject_targets(node: Any, where: str) -> None:
    """Refuse Hydra ``_target_`` keys anywhere: recipes are data, never instructions to build objects.

    We never pass user config to Hydra's object instantiation; this check keeps it that way should anyone
    add a call later, since a recipe with ``_target_: os.system`` would then run arbitrary code.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if str(key) in ("_target_", "_partial_", "_args_", "_recursive_", "_convert_"):
                raise ConfigError(f"'{path}': Hydra instantiation keys are not allowed in t2po recipes; remove it")
            _reject_targets(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _reject_targets(value, f"{where}[{i}]")


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> ComposedRun:
    """Compose ``recipes/train.yaml`` with overrides into a validated ``RunConfig``.

    Args:
        overrides: Hydra overrides, e.g. ``["env=alfworld", "t2po.tds.eta=0.1", "+experiment=x"]``.

    Returns:
        The typed config and its resolved YAML.

    Raises:
        ConfigError: unknown key, wrong type, missing recipe, or a failed cross-field check.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError as yaml_errors

    from t2po_cli.config.legacy import rewrite_overrides
    from t2po_cli.config.validate import validate_config

    _register_schema()
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} is not KEY=VALUE; write e.g. trainer.steps=10")
    hydra_overrides = rewrite_overrides(overrides)  # deprecated keys → current names (config/legacy.py)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3", job_name="t2po"):
            cfg = compose(config_name=ROOT_CONFIG, overrides=hydra_overrides)
        _reject_targets(OmegaConf.to_container(cfg), "")
        # Re-merge onto the schema in struct mode: Hydra's `+key=` bypasses struct, our schema does not.
        strict = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.to_container(cfg))
        if strict.experiment_name is None:
            strict.experiment_name = strict.env.name
        obj: RunConfig = OmegaConf.to_object(strict)  # type: ignore[assignment]
        cfg = strict
        yaml = OmegaConf.to_yaml(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(f"invalid configuration: {_one_line(err)}") from None
    except yaml_errors as err:
        # A recipe file that is not YAML (found by tests/reliability/test_malformed_inputs.py).
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"a recipe under {recipes_dir()} is not valid YAML{where} "
                          f"({type(err).__name__}: {getattr(err, 'problem', '') or ''}); fix that file") from None
    except (TypeError, KeyError, AttributeError, IndexError) as err:
        # Hydra's defaults-list code assumes well-typed group values: `model=[1,2]` or `model={a:1}` raise
        # TypeError deep inside it (found by tests/reliability/test_override_fuzz.py). Still a user mistake.
        raise ConfigError(f"invalid configuration: {_one_line(err) or type(err).__name__}; check the overrides "
                          "(recipe groups such as model= take a recipe name)") from None
    finally:
        GlobalHydra.instance().clear()
    validate_config(obj)
    return ComposedRun(config=obj, overrides=tuple(overrides), yaml=yaml)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain nested dict of a RunConfig."""
    from dataclasses import asdict

    return asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict to dotted keys (for MLflow params and report grouping)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_run_config(path: Path) -> RunConfig:
    """Load a run folder's ``resolved_config.yaml`` back into a typed config (schema-checked).

    Raises:
        RunFolderError: the file is missing or does not match the schema.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from t2po_cli.errors import RunFolderError

    if not path.is_file():
        raise RunFolderError(f"{path} not found; is this a t2po run folder?")
    from t2po_cli.config.legacy import migrate_tree

    try:
        base = OmegaConf.structured(RunConfig)
        tree = OmegaConf.to_container(OmegaConf.load(path))
        if not isinstance(tree, dict):
            raise RunFolderError(f"{path} is not a mapping; re-create the run")
        # Run folders written before a key rename still load (config/legacy.py).
        merged = OmegaConf.merge(base, migrate_tree(tree))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except (OmegaConfBaseException, ValueError, AttributeError, TypeError) as err:
        raise RunFolderError(f"{path} is not a valid resolved config ({_one_line(err)}); re-create the run") from None
    except Exception as err:  # yaml scanner errors and friends
        raise RunFolderError(f"{path} could not be parsed ({type(err).__name__}); re-create the run") from None
