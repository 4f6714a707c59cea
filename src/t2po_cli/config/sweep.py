"""Sweep files and their expansion into points; every point is composed and validated before submission.

A sweep file ``sweeps/NAME.yaml`` (named after the question it answers)::

    name: tau_sensitivity
    description: How sensitive is T2PO to the TTI stagnation threshold tau?
    base: [env=webshop, t2po=on]            # overrides applied to every point
    grid:                                   # the Cartesian product of these values
      t2po.tti.tau: [1.0e-4, 1.0e-3, 1.0e-2]
    seeds: [0, 1, 2]                        # trainer.seed; [] = leave the seed alone
    ablations:                              # optional named override sets, crossed with the grid
      full: [t2po=on]
      baseline: [t2po=off]

Points = ablations × grid × seeds (each factor counts as one when absent). Unknown keys are errors.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2po_cli.errors import ConfigError, UserError

SWEEP_KEYS = ("name", "description", "experiment", "base", "grid", "seeds", "ablations")


def short_key(key: str) -> str:
    """A key's name in point names: its last dotted segment (``t2po.tti.tau`` → ``tau``)."""
    return key.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep: what to vary and what to hold fixed."""

    name: str
    """Sweep name (a safe folder name); the sweep folder is ``sweep-<name>-<timestamp>``."""
    description: str = ""
    """The question the sweep answers."""
    experiment: str | None = None
    """Experiment folder and MLflow experiment; null = the sweep name."""
    base: tuple[str, ...] = ()
    """Overrides for every point."""
    grid: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Override key → values (already rendered as override text)."""
    seeds: tuple[int, ...] = ()
    """``trainer.seed`` values; empty = no seed override."""
    ablations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Named override sets, crossed with the grid."""

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name


@dataclass(frozen=True)
class SweepPoint:
    """One training run of a sweep."""

    index: int
    name: str
    overrides: tuple[str, ...]


def render_value(key: str, value: Any) -> str:
    """Override text for a YAML value.

    YAML 1.1 reads unquoted ``on``/``off`` as booleans; for the ``t2po`` recipe group they mean the
    recipes ``on``/``off`` (the group's option names), so map them back instead of failing obscurely.
    """
    if isinstance(value, bool):
        if key == "t2po":
            return "on" if value else "off"
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float | str):
        return str(value)
    raise ConfigError(f"sweep value {value!r} for '{key}' is not a scalar; use numbers or strings")


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of KEY=VALUE strings, e.g. [env=webshop, trainer.steps=10]")
    for v in value:
        if "=" not in v:
            raise ConfigError(f"{where}: '{v}' is not KEY=VALUE; write e.g. trainer.steps=10")
    return tuple(value)


def parse_sweep(data: Any, source: str = "sweep") -> SweepSpec:
    """Check a sweep mapping against the schema.

    Raises:
        ConfigError: unknown key, wrong type or empty grid values (one line naming the file and the fix).
    """
    from t2po_cli.run_folder import check_name

    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping with keys {', '.join(SWEEP_KEYS)}")
    for key in data:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{source}: unknown key '{key}'; allowed keys: {', '.join(SWEEP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str):
        raise ConfigError(f"{source}: 'name' is required (a folder-safe string), e.g. name: tau_sensitivity")
    try:
        check_name(name, "sweep name")
        if data.get("experiment") is not None:
            check_name(str(data["experiment"]), "experiment name")
    except UserError as e:
        raise ConfigError(f"{source}: {e}") from None
    grid_in = data.get("grid") or {}
    if not isinstance(grid_in, dict):
        raise ConfigError(f"{source}: grid must map override keys to lists of values")
    grid: dict[str, tuple[str, ...]] = {}
    for key, values in grid_in.items():
        if not isinstance(key, str) or "=" in key or not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: grid entry '{key}' must map a key to a non-empty list, e.g. [0.1, 0.3]")
        grid[key] = tuple(render_value(key, v) for v in values)
    seeds = data.get("seeds") or []
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{source}: seeds must be a list of integers, e.g. [0, 1, 2]")
    abl_in = data.get("ablations") or {}
    if not isinstance(abl_in, dict):
        raise ConfigError(f"{source}: ablations must map names to override lists")
    ablations: dict[str, tuple[str, ...]] = {}
    for abl, ovs in abl_in.items():
        abl_name = render_value("ablation", abl)
        try:
            check_name(abl_name, "ablation name")
        except UserError as e:
            raise ConfigError(f"{source}: {e}") from None
        ablations[abl_name] = _str_list(ovs, f"{source}: ablations.{abl_name}")
    return SweepSpec(
        name=name,
        description=str(data.get("description") or ""),
        experiment=data.get("experiment"),
        base=_str_list(data.get("base") or [], f"{source}: base"),
        grid=grid,
        seeds=tuple(seeds),
        ablations=ablations,
    )


def load_sweep_file(path: str | Path) -> SweepSpec:
    """Load a sweep file (a path, or a shipped sweep's name such as ``tau_sensitivity``).

    Raises:
        ConfigError: the file is missing, is not YAML, or does not match the schema.
    """
    import yaml

    from t2po_cli.paths import sweeps_dir

    p = Path(path)
    if not p.is_file() and not str(path).endswith((".yaml", ".yml")):
        p = sweeps_dir() / f"{path}.yaml"
    if not p.is_file():
        raise ConfigError(f"sweep file {path} not found; list the shipped sweeps with `t2po ls`")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML ({type(e).__name__}); fix the file") from None
    return parse_sweep(data, str(p))


def _short(key: str, keys: list[str]) -> str:
    short = short_key(key)
    clash = [k for k in keys if k != key and short_key(k) == short]
    return key.replace(".", "-") if clash else short


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text)


def expand(spec: SweepSpec) -> list[SweepPoint]:
    """All points of a sweep: ablations × grid × seeds, in a stable order, with unique names."""
    keys = list(spec.grid)
    ablations = list(spec.ablations.items()) or [("", ())]
    combos = list(itertools.product(*(spec.grid[k] for k in keys))) if keys else [()]
    seeds: list[int | None] = list(spec.seeds) or [None]
    points: list[SweepPoint] = []
    for (abl, abl_ovs), combo, seed in itertools.product(ablations, combos, seeds):
        parts = [abl] if abl else []
        parts += [f"{_short(k, keys)}-{v}" for k, v in zip(keys, combo, strict=True)]
        overrides = [*spec.base, *abl_ovs, *(f"{k}={v}" for k, v in zip(keys, combo, strict=True))]
        if seed is not None:
            parts.append(f"s{seed}")
            overrides.append(f"trainer.seed={seed}")
        name = _safe("_".join(parts) or "point")[:120]
        points.append(SweepPoint(index=len(points), name=name, overrides=tuple(overrides)))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"sweep {spec.name}: two points are both named '{dup}'; remove duplicate values")
    return points


def point_overrides(point: SweepPoint, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The point's overrides followed by sweep-wide ones (launcher, tracking, experiment)."""
    return [*point.overrides, *extra]


def validate_sweep(spec: SweepSpec, extra: list[str] | tuple[str, ...] = ()) -> list[Any]:
    """Compose and validate EVERY point before anything is created or submitted (design rule 4).

    Args:
        spec: the sweep.
        extra: overrides added to every point (e.g. launcher and tracking settings from the CLI).

    Returns:
        ``(point, ComposedRun)`` pairs, one per point.

    Raises:
        ConfigError: the first point that fails, named, with the composer's one-line message.
    """
    from t2po_cli.config.compose import compose_config

    out = []
    for point in expand(spec):
        try:
            composed = compose_config(point_overrides(point, extra))
        except UserError as e:
            raise ConfigError(f"sweep {spec.name}, point {point.name}: {e}") from None
        out.append((point, composed))
    return out


def parse_values(text: str) -> list[str]:
    """``1e-4,1e-3`` → ``["1e-4", "1e-3"]`` (a CLI list flag).

    Raises:
        UserError: an empty value.
    """
    values = [v.strip() for v in text.split(",")]
    if not values or any(not v for v in values):
        raise UserError(f"'{text}' is not a comma-separated list of values; write e.g. 1e-4,1e-3")
    return values


def spec_from_flags(
    name: str,
    base: list[str],
    grid: dict[str, list[str]],
    seeds: list[int],
    experiment: str | None = None,
) -> SweepSpec:
    """A sweep built from command-line flags (``t2po sweep --env E --tau ...``)."""
    return parse_sweep(
        {"name": name, "experiment": experiment, "base": base, "grid": grid, "seeds": seeds},
        "command line",
    )
