"""MLflow sink: best effort, never the source of truth (metrics.jsonl is).

* The CLI creates (or gets) the experiment **once** and hands its id to every job: jobs never call
  ``set_experiment`` (the parallel race into the Default experiment, infra.md §5.4).
* Default store: ``sqlite:///<runs_root>/mlflow.db`` with artifacts under ``<runs_root>/mlartifacts``
  (an explicit artifact location, or artifacts land in ./mlruns, infra.md §5.2).
* Delivery is tracked in ``<run>/mlflow_sync.json`` (run id and the (step, split) rows delivered), so
  ``sync`` delivers exactly the missing rows: none lost, none duplicated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from t2po_cli.config.compose import ComposedRun
    from t2po_cli.config.schema import RunConfig

SYNC_STATE = "mlflow_sync.json"
SECRET_MARKERS = ("TOKEN", "KEY", "SECRET", "PASSWORD")


def default_tracking_uri(runs_root: str | Path) -> str:
    """The embedded sqlite store under the runs root."""
    return f"sqlite:///{Path(runs_root).resolve() / 'mlflow.db'}"


def resolve_uri(cfg: RunConfig) -> str:
    """Config URI, else $MLFLOW_TRACKING_URI, else the embedded sqlite store."""
    return cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(cfg.runs_root)


def is_secret(name: str) -> bool:
    """Names that must never be logged as params, tags or artifacts."""
    upper = name.upper()
    return any(m in upper for m in SECRET_MARKERS)


def ensure_experiment(uri: str, name: str, artifact_root: Path | None = None) -> str:
    """Create the experiment or get its id. Called once by the CLI, never by jobs."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if artifact_root is not None and not uri.startswith("http"):
        location = (artifact_root / name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # lost a creation race with another CLI: the experiment exists now
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def prepare_experiment(composed: ComposedRun) -> str:
    """Create the run's MLflow experiment once; return the resolved YAML with ``tracking.experiment_id`` set.

    If MLflow cannot be reached the run still starts (metrics.jsonl is the source of truth) and the id is
    left empty; ``t2po sync`` delivers later.
    """
    from omegaconf import OmegaConf

    from t2po_cli.cli.console import err

    cfg = composed.config
    if not cfg.tracking.mlflow or cfg.tracking.experiment_id:
        return composed.yaml
    uri = resolve_uri(cfg)
    try:
        Path(cfg.runs_root).mkdir(parents=True, exist_ok=True)
        exp_id = ensure_experiment(uri, str(cfg.experiment_name), Path(cfg.runs_root) / "mlartifacts")
    except Exception as e:  # noqa: BLE001 - tracking is best effort by design
        err.print(f"[yellow]warning:[/yellow] MLflow at {uri} unavailable ({type(e).__name__}); "
                  "metrics stay in metrics.jsonl, deliver later with `t2po sync RUN_DIR`")
        return composed.yaml
    node = OmegaConf.create(composed.yaml)
    node.tracking.experiment_id = exp_id
    node.tracking.tracking_uri = uri
    return OmegaConf.to_yaml(node)


class MlflowSink:
    """Deliver a run's metrics rows to MLflow, resumably. All errors are caught and reported as False."""

    def __init__(self, run_dir: Path, cfg: RunConfig, *, tags: dict[str, str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.tags = tags or {}
        self.state_path = self.run_dir / SYNC_STATE
        self.state = self._load_state()
        self._client: Any = None

    def _load_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {"run_id": None, "delivered": []}

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.state_path)

    def _client_and_run(self) -> tuple[Any, str]:
        import mlflow

        from t2po_cli.config.compose import config_to_dict, flatten

        uri = self.cfg.tracking.tracking_uri or resolve_uri(self.cfg)
        if self._client is None:
            self._client = mlflow.MlflowClient(tracking_uri=uri)
        client = self._client
        if self.state["run_id"] is None:
            exp_id = self.cfg.tracking.experiment_id or ensure_experiment(
                uri, str(self.cfg.experiment_name), Path(self.cfg.runs_root) / "mlartifacts"
            )
            git = _read_json(self.run_dir / "git.json")
            tags = {"t2po.run_dir": str(self.run_dir.resolve()), "git_sha": str(git.get("sha")), **self.tags}
            parent = os.environ.get("T2PO_PARENT_RUN_ID")
            if parent:
                tags["mlflow.parentRunId"] = parent
            run = client.create_run(exp_id, run_name=self.run_dir.name, tags={k: v for k, v in tags.items() if not is_secret(k)})
            self.state["run_id"] = run.info.run_id
            self._save_state()
            params = {k: str(v)[:500] for k, v in flatten(config_to_dict(self.cfg)).items() if not is_secret(k)}
            items = list(params.items())
            from mlflow.entities import Param

            for i in range(0, len(items), 100):
                client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
        return client, self.state["run_id"]

    def deliver(self, rows: list[dict[str, Any]]) -> bool:
        """Log the rows not yet delivered. Returns True when everything given is delivered."""
        import math
        import time

        try:
            from mlflow.entities import Metric

            client, run_id = self._client_and_run()
            done = {tuple(x) for x in self.state["delivered"]}
            pending = [r for r in rows if (int(r["step"]), str(r["split"])) not in done]
            for row in pending:
                prefix = "val/" if row["split"] == "val" and not any(k.startswith("val/") for k in row["metrics"]) else ""
                ts = int(float(row.get("wall_time", time.time())) * 1000)
                metrics = [
                    Metric(_mlflow_key(prefix + k), float(v), ts, int(row["step"]))
                    for k, v in row["metrics"].items()
                    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
                ]
                for i in range(0, len(metrics), 900):
                    client.log_batch(run_id, metrics=metrics[i : i + 900])
                self.state["delivered"].append([int(row["step"]), str(row["split"])])
                self._save_state()
            return True
        except Exception:  # noqa: BLE001 - best effort; the rows stay pending for sync
            return False

    def finish(self, status: str = "FINISHED") -> bool:
        try:
            client, run_id = self._client_and_run()
            client.set_terminated(run_id, status=status)
            return True
        except Exception:  # noqa: BLE001
            return False


def _mlflow_key(key: str) -> str:
    """MLflow metric names allow [A-Za-z0-9_-./ ]; other characters become '_'."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
