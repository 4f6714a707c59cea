"""Old config keys that still work: each is rewritten to its current name with a warning, once per process.

Kept in one table so that old run folders (``resolved_config.yaml``), old sweep files, MLflow params of old
runs and old habits on the command line keep working after a rename (CHANGELOG.md lists each rename):

* ``t2po.tti.epsilon`` → ``t2po.tti.tau`` (the paper's name for the stagnation threshold).
* Estimator settings moved into the estimator's own section (``algo.<name>.<key>``): a key the old flat
  ``algo`` section shared between estimators goes to every estimator that has it, which is what it meant.
* The top-level ``a2tgpo`` section moved to ``algo.a2tgpo``.
* Slurm profile key ``gpus`` → ``gpus_per_node`` (profiles gained ``nodes`` and ``tasks_per_node``).
"""

from __future__ import annotations

from typing import Any

RENAMED = {"t2po.tti.epsilon": "t2po.tti.tau"}
"""Old dotted key → new dotted key."""
MOVED_INTO_ESTIMATORS = {
    "algo.norm": ("gigpo", "grpo"),
    "algo.cross_step_stats": ("gigpo", "grpo"),
    "algo.gamma": ("gigpo", "ppo"),
    "algo.step_advantage_w": ("gigpo",),
    "algo.similarity_grouping": ("gigpo",),
    "algo.similarity_threshold": ("gigpo",),
    "algo.gae_lambda": ("ppo",),
    "algo.value_coef": ("ppo",),
    "algo.value_lr": ("ppo",),
}
"""Old ``algo.<key>`` → the estimators whose section ``algo.<name>.<key>`` now holds it."""
MOVED_SECTIONS = {"a2tgpo": "algo.a2tgpo"}
"""Old top-level section → new dotted section."""

PROFILE_RENAMED = {"gpus": "gpus_per_node"}
"""Old Slurm profile key → new key (``slurm/NAME.yaml``)."""

_warned: set[str] = set()


def _warn_once(old: str, new: str) -> None:
    """One line on stderr the first time an old key is seen in this process."""
    if old not in _warned:
        _warned.add(old)
        from t2po_cli.console import err

        err.print(f"[yellow]deprecated:[/yellow] config key {old} is now {new}; it still works, please update it")


def new_keys(key: str) -> list[str]:
    """The current dotted key(s) for ``key`` (itself when it is current). Warns once per old key."""
    bare, plus = (key[1:], "+") if key.startswith("+") else (key, "")
    if bare in RENAMED:
        _warn_once(bare, RENAMED[bare])
        return [plus + RENAMED[bare]]
    if bare in MOVED_INTO_ESTIMATORS:
        targets = [f"algo.{name}.{bare.split('.', 1)[1]}" for name in MOVED_INTO_ESTIMATORS[bare]]
        _warn_once(bare, " and ".join(targets))
        return [plus + t for t in targets]
    head, _, rest = bare.partition(".")
    if head in MOVED_SECTIONS and rest:
        new = f"{MOVED_SECTIONS[head]}.{rest}"
        _warn_once(bare, new)
        return [plus + new]
    return [key]


def rename_profile_keys(data: dict[str, Any], source: str) -> dict[str, Any]:
    """A Slurm profile mapping with old keys renamed (warns once per key); both names at once is an error.

    Raises:
        ConfigError: the profile sets an old key and its new name.
    """
    from t2po_cli.errors import ConfigError

    out = dict(data)
    for old, new in PROFILE_RENAMED.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{source}: both {old} and {new} are set; keep only {new}")
            _warn_once(f"slurm profile key {old}", new)
            out[new] = out.pop(old)
    return out


def rewrite_overrides(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """``KEY=VALUE`` overrides with old keys replaced (one old key may become several overrides)."""
    out: list[str] = []
    for ov in overrides:
        key, sep, value = ov.partition("=")
        if sep:
            out.extend(f"{k}={value}" for k in new_keys(key))
        else:
            out.append(ov)
    return out


def migrate_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """A nested config dict (an old ``resolved_config.yaml``) with old keys moved to their current place."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tree.items()}
    for old, new in RENAMED.items():
        value = _pop(out, old)
        if value is not _MISSING:
            _warn_once(old, new)
            _put(out, new, value)
    algo = out.get("algo")
    if isinstance(algo, dict):
        for old, names in MOVED_INTO_ESTIMATORS.items():
            field = old.split(".", 1)[1]
            if field in algo and not isinstance(algo[field], dict):
                value = algo.pop(field)
                _warn_once(old, f"algo.<estimator>.{field}")
                for name in names:
                    _put(out, f"algo.{name}.{field}", value)
    for old, new in MOVED_SECTIONS.items():
        if isinstance(out.get(old), dict):
            section = out.pop(old)
            _warn_once(old, new)
            for k, v in section.items():
                _put(out, f"{new}.{k}", v)
    return out


def migrate_flat(params: dict[str, Any]) -> dict[str, Any]:
    """Flat dotted params (MLflow params of an old run) with old keys renamed."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        for k in new_keys(key):
            out.setdefault(k, value)
    return out


_MISSING = object()


def _pop(tree: dict[str, Any], dotted: str) -> Any:
    *path, last = dotted.split(".")
    node: Any = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node[part] = dict(node[part]) if isinstance(node[part], dict) else node[part]
        node = node[part]
    return node.pop(last, _MISSING) if isinstance(node, dict) else _MISSING


def _put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    node = tree
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
