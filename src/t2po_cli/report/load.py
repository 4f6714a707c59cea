"""Load runs for a report: from run/sweep/experiment folders on disk, or from an MLflow experiment.

Both sources end up as ``RunData``: flattened config params (dotted keys, as ``config.compose.flatten``
writes them and as the MLflow sink logs them) and one ``Series`` per metric key. Validation rows are
keyed with the ``val/`` prefix (``tracking.keys.val``), train rows by the bare key, so detectors and
tables never need to know where a run came from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2po_cli.config.schema import TrainerConfig
from t2po_cli.errors import RunFolderError, UserError
from t2po_cli.report.detectors import Series
from t2po_cli.tracking import keys as K

DEFAULT_GROUP_KEYS: tuple[str, ...] = (
    "env.name",
    "algo.name",
    "t2po.variant",
    "t2po.tti.tau",
    "t2po.tds.eta",
    "model.name",
    "trainer.on_collapse",
)
# What a run that predates a grouping key's config field ran with (so old and new runs group together).
PARAM_DEFAULTS: dict[str, Any] = {"trainer.on_collapse": TrainerConfig.on_collapse}
SEED_KEY = "trainer.seed"
TAU_KEY = "t2po.tti.tau"
ETA_KEY = "t2po.tds.eta"
ENV_KEY = "env.name"

# Column labels of the default grouping keys (tau and eta are the paper's symbols, t2po.md).
SHORT_NAMES = {
    "env.name": "env",
    "algo.name": "algo",
    "t2po.variant": "t2po",
    "t2po.tti.tau": "tau",
    "t2po.tds.eta": "eta",
    "model.name": "model",
    "trainer.on_collapse": "on_collapse",
}


@dataclass
class RunData:
    """One run, whatever its source."""

    name: str
    source: str
    params: dict[str, Any]
    series: dict[str, Series] = field(default_factory=dict)
    status: str = "unknown"

    @property
    def seed(self) -> Any:
        return self.params.get(SEED_KEY)

    def get(self, key: str) -> Series | None:
        """The series of ``key`` if it has at least one point."""
        s = self.series.get(key)
        return s if s is not None and s.steps.size else None


def series_from_rows(rows: Iterable[dict[str, Any]]) -> dict[str, Series]:
    """Metric rows (tracking/jsonl.py format) → ``{key: Series}``; the last row wins on a repeated step."""
    points: dict[str, dict[int, float]] = {}
    for row in rows:
        split = str(row.get("split", "train"))
        step = int(row["step"])
        for key, value in row["metrics"].items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = key if split != "val" or key.startswith(K.VAL_PREFIX) else K.val(key)
            points.setdefault(name, {})[step] = float(value)
    out: dict[str, Series] = {}
    for name, by_step in points.items():
        steps = np.array(sorted(by_step), dtype=int)
        out[name] = Series(steps, np.array([by_step[s] for s in steps], dtype=float))
    return out


# --- folders -----------------------------------------------------------------------------------------


def _orphan_metrics(root: Path) -> list[Path]:
    """Folders below ``root`` holding a metrics.jsonl but no resolved_config.yaml (broken run folders)."""
    from t2po_cli.run_folder import CODE, METRICS, RESOLVED_CONFIG

    found = []
    for m in sorted(root.rglob(METRICS)):
        if CODE in m.parts[len(root.parts) :]:
            continue
        if not (m.parent / RESOLVED_CONFIG).is_file():
            found.append(m.parent)
    return found


def _folder_params(config_path: Path, notes: list[str]) -> dict[str, Any]:
    """Flattened config of a run folder, schema-checked when possible.

    A report often covers runs made by an older version: when the current schema rejects the file
    (a renamed or removed key) the raw YAML is used instead and a note says so, rather than making
    old runs unreportable. A file that is not YAML at all is still an error.
    """
    import yaml

    from t2po_cli.config.compose import config_to_dict, flatten, load_run_config
    from t2po_cli.config.legacy import migrate_tree

    try:
        return flatten(config_to_dict(load_run_config(config_path)))
    except RunFolderError as schema_err:
        try:
            raw = yaml.safe_load(config_path.read_text())
        except (OSError, yaml.YAMLError):
            raise schema_err from None
        if not isinstance(raw, dict):
            raise schema_err from None
        notes.append(f"{config_path.parent.name}: config read without the schema check ({schema_err})")
        return flatten(migrate_tree(raw))


def load_folder_run(path: Path, notes: list[str] | None = None) -> RunData | None:
    """Load one run folder; None when it has logged no metrics yet (a queued or just-created run).

    Args:
        path: the run folder.
        notes: receives a line when the config had to be read without the schema check.

    Raises:
        RunFolderError: unreadable config, or a malformed line in the middle of metrics.jsonl.
    """
    from t2po_cli.run_folder import RunFolder
    from t2po_cli.tracking.jsonl import read_metrics

    folder = RunFolder.open(path)
    params = _folder_params(folder.config_path, notes if notes is not None else [])
    if not folder.metrics_path.is_file():
        return None
    rows = read_metrics(folder.metrics_path, strict=True)
    if not rows:
        return None
    return RunData(
        name=folder.path.name,
        source=str(folder.path),
        params=params,
        series=series_from_rows(rows),
        status=str(folder.read_status().get("state", "unknown")),
    )


def load_paths(paths: Sequence[Path]) -> tuple[list[RunData], list[str]]:
    """Every run at or below the given run, sweep or experiment folders.

    Returns:
        The runs with metrics, and notes about folders that were skipped (no metrics yet).

    Raises:
        RunFolderError: a path is missing, holds no run folders, or holds a broken run folder.
    """
    from t2po_cli.run_folder import find_runs

    if not paths:
        raise UserError("pass at least one run, sweep or experiment folder, or --experiment NAME")
    for p in paths:
        if not p.exists():
            raise RunFolderError(f"{p} does not exist; pass run, sweep or experiment folders")
        if p.is_dir():
            orphans = _orphan_metrics(p)
            if orphans:
                raise RunFolderError(
                    f"{orphans[0]} has metrics.jsonl but no resolved_config.yaml; it is not a complete run "
                    "folder (restore the file or move the folder out)"
                )
    folders = find_runs([Path(p) for p in paths])
    if not folders:
        raise RunFolderError(
            f"no run folders (with resolved_config.yaml) found under {', '.join(map(str, paths))}"
        )
    runs: list[RunData] = []
    notes: list[str] = []
    seen: set[Path] = set()
    for folder in folders:
        real = folder.path.resolve()
        if real in seen:  # the same run reached through two inputs
            continue
        seen.add(real)
        run = load_folder_run(folder.path, notes)
        if run is None:
            notes.append(f"skipped {folder.path}: no metrics logged yet")
        else:
            runs.append(run)
    if not runs:
        raise RunFolderError(f"none of the {len(folders)} run folder(s) found has logged metrics yet")
    return runs, notes


# --- MLflow ------------------------------------------------------------------------------------------


def parse_param(text: str) -> Any:
    """MLflow stores params as strings: turn them back into None/bool/int/float where they look like one."""
    if text in ("None", "null"):
        return None
    if text in ("True", "true"):
        return True
    if text in ("False", "false"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) or text.lower() in ("nan", "inf", "-inf") else text


def load_mlflow(experiment: str, tracking_uri: str | None) -> list[RunData]:
    """Params and full metric histories of every run in an MLflow experiment.

    Raises:
        UserError: the server cannot be reached, the experiment does not exist, or it has no runs.
    """
    import os

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UserError("--experiment needs --tracking-uri URI (or MLFLOW_TRACKING_URI)")
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
    except Exception as e:  # any transport or store failure is the same user problem
        raise UserError(f"cannot read MLflow at {uri} ({type(e).__name__}); check --tracking-uri") from None
    if exp is None:
        raise UserError(f"MLflow at {uri} has no experiment {experiment!r}; list them in the MLflow UI")
    runs: list[RunData] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=500, page_token=token)
        for r in page:
            runs.append(_mlflow_run(client, r))
        token = page.token
        if not token:
            break
    runs = [r for r in runs if r.series]
    if not runs:
        raise UserError(f"MLflow experiment {experiment!r} has no runs with metrics")
    return runs


def _mlflow_run(client: Any, run: Any) -> RunData:
    from t2po_cli.config.legacy import migrate_flat

    series: dict[str, Series] = {}
    for key in sorted(run.data.metrics):
        hist = client.get_metric_history(run.info.run_id, key)
        by_step = {int(m.step): float(m.value) for m in sorted(hist, key=lambda m: m.timestamp)}
        steps = np.array(sorted(by_step), dtype=int)
        series[key] = Series(steps, np.array([by_step[s] for s in steps], dtype=float))
    return RunData(
        name=run.info.run_name or run.info.run_id,
        source=f"mlflow:{run.info.run_id}",
        params=migrate_flat({k: parse_param(v) for k, v in run.data.params.items()}),
        series=series,
        status=str(run.info.status).lower(),
    )


# --- grouping ----------------------------------------------------------------------------------------


def parse_keys(text: str | None) -> tuple[str, ...]:
    """``--by a.b,c.d`` → ("a.b", "c.d"); None → the default variant keys."""
    if not text:
        return DEFAULT_GROUP_KEYS
    from t2po_cli.config.legacy import new_keys

    # An old key name (e.g. t2po.tti.epsilon) still groups by its current key.
    out = tuple(dict.fromkeys(n for k in text.split(",") if k.strip() for n in new_keys(k.strip())))
    if not out:
        raise UserError("--by needs at least one config key, e.g. --by t2po.variant,env.name")
    return out


def check_keys(runs: Sequence[RunData], keys: Sequence[str]) -> None:
    """Every ``--by`` key must be a param of at least one run (catches typos).

    Raises:
        UserError: an unknown key, with the closest known names.
    """
    import difflib

    known = set().union(*(r.params for r in runs))
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"--by key {key!r} is not a config key of these runs{hint}")


def fmt_value(value: Any) -> str:
    """Short, stable text for a param value (labels, table cells)."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def short_name(key: str) -> str:
    return SHORT_NAMES.get(key, key)


def param_text(run: RunData, key: str) -> str:
    """A run's value of one grouping key as label text (the field's default when the run predates it)."""
    return fmt_value(run.params.get(key, PARAM_DEFAULTS.get(key)))


def group_runs(runs: Sequence[RunData], keys: Sequence[str]) -> dict[str, list[RunData]]:
    """Runs grouped by variant (the values of ``keys``); seeds of one variant are pooled.

    The label names only the keys whose values differ between runs (the rest are shared context and
    shown once in the report header), e.g. ``t2po=on, tau=0.001``; "all runs" when nothing differs.
    """
    varying = [k for k in keys if len({param_text(r, k) for r in runs}) > 1]
    groups: dict[str, list[RunData]] = {}
    for r in runs:
        parts = [f"{short_name(k)}={param_text(r, k)}" for k in varying]
        groups.setdefault(", ".join(parts) or "all runs", []).append(r)
    return dict(sorted(groups.items()))


def shared_context(runs: Sequence[RunData], keys: Sequence[str]) -> dict[str, str]:
    """The grouping keys that have one value across all runs (shown once, not per variant)."""
    out = {}
    for k in keys:
        values = {param_text(r, k) for r in runs}
        if len(values) == 1:
            out[short_name(k)] = values.pop()
    return out
