"""MLflow sink: best effort, never the source of truth (metrics.jsonl is).

* The CLI creates (or gets) the experiment **once** and hands its id to every job through the run's
  resolved config (``tracking.experiment_id``): jobs never call ``set_experiment``, whose parallel race
  drops runs into the Default experiment (infra.md §5.4).
* Sweeps: the CLI creates the parent run and writes its id into each run folder's ``mlflow_sync.json``
  (``parent_run_id``), so a child run is nested (tag ``mlflow.parentRunId``) even when it is created
  later by ``t2po sync``. ``$T2PO_PARENT_RUN_ID`` is still honoured as a fallback.
* Default store: ``sqlite:///<runs_root>/mlflow.db`` with artifacts under ``<runs_root>/mlartifacts``
  (an explicit artifact location, or artifacts land in ./mlruns, infra.md §5.2).
* Delivery is tracked in ``<run>/mlflow_sync.json`` (run id and the (step, split) rows delivered), so
  ``sync`` delivers exactly the missing rows: none lost, none duplicated. Metric timestamps come from the
  row's ``wall_time``, so re-sending a row whose bookkeeping was lost is a no-op in the store (MLflow
  drops exact duplicates of (key, step, timestamp, value)).
* Secrets: environment variable names containing TOKEN/KEY/SECRET/PASSWORD are never logged, and URL
  credentials in params are redacted.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from t2po_cli.config.compose import ComposedRun
    from t2po_cli.config.schema import RunConfig

SYNC_STATE = "mlflow_sync.json"
SECRET_MARKERS = ("TOKEN", "KEY", "SECRET", "PASSWORD")
# Job-environment variables recorded as tags (after the secret filter).
ENV_TAGS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "HOSTNAME")
# MLflow's own limits: 1000 metrics and 100 params per log_batch call.
METRICS_PER_BATCH = 900
PARAMS_PER_BATCH = 100
# After a failed delivery, skip attempts for this long: a dead server must not stall every training step.
RETRY_AFTER_S = 30.0


def default_tracking_uri(runs_root: str | Path) -> str:
    """The embedded sqlite store under the runs root."""
    return f"sqlite:///{Path(runs_root).resolve() / 'mlflow.db'}"


def resolve_uri(cfg: RunConfig) -> str:
    """Config URI, else $MLFLOW_TRACKING_URI, else the embedded sqlite store."""
    return cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(cfg.runs_root)


def is_secret(name: str) -> bool:
    """Environment variable names (or tag names) that must never be logged: any containing a marker."""
    upper = name.upper()
    return any(m in upper for m in SECRET_MARKERS)


def is_secret_param(key: str) -> bool:
    """Config keys that look like credentials: a dotted/underscored segment that IS a marker.

    Plain substring matching would drop real settings such as ``t2po.tds.skip_tokens`` or
    ``trainer.max_response_tokens``; ``api_key`` or ``hf_token`` still match.
    """
    segments = re.split(r"[._/-]", key.upper())
    return any(seg in SECRET_MARKERS for seg in segments)


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact(value: str) -> str:
    """Drop ``user:password@`` from URLs."""
    return _URL_CREDENTIALS.sub("***@", value)


def env_tags(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Tags from the job environment (Slurm ids, host), never secrets."""
    environ = dict(os.environ) if environ is None else environ
    return {f"env.{k}": environ[k] for k in ENV_TAGS if k in environ and not is_secret(k)}


def _bound_http_retries() -> None:
    """MLflow retries HTTP 7 times with exponential back-off (minutes); bound it for a best-effort sink.

    Only defaults are set: a user's explicit MLFLOW_HTTP_REQUEST_* environment wins.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def ensure_experiment(uri: str, name: str, artifact_root: Path | None = None) -> str:
    """Create the experiment or get its id. Called once by the CLI, never by jobs (infra.md §5.4)."""
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

    from t2po_cli.console import err

    cfg = composed.config
    if not cfg.tracking.mlflow or cfg.tracking.experiment_id:
        return composed.yaml
    uri = resolve_uri(cfg)
    try:
        Path(cfg.runs_root).mkdir(parents=True, exist_ok=True)
        _bound_http_retries()
        exp_id = ensure_experiment(uri, str(cfg.experiment_name), Path(cfg.runs_root) / "mlartifacts")
    except Exception as e:  # tracking is best effort by design
        err.print(f"[yellow]warning:[/yellow] MLflow at {redact(uri)} unavailable ({type(e).__name__}); "
                  "metrics stay in metrics.jsonl, deliver later with `t2po sync RUN_DIR`")
        return composed.yaml
    node = OmegaConf.create(composed.yaml)
    node.tracking.experiment_id = exp_id
    node.tracking.tracking_uri = uri
    return OmegaConf.to_yaml(node)


def write_parent_link(run_dir: Path, parent_run_id: str) -> None:
    """Seed a run folder's sync state with the sweep's parent run id (before any job starts)."""
    path = Path(run_dir) / SYNC_STATE
    state = _read_json(path) or {"run_id": None, "delivered": []}
    state["parent_run_id"] = parent_run_id
    path.write_text(json.dumps(state))


RUN_STATE_TO_MLFLOW = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}
"""A run folder's final ``status.json`` state → the MLflow run status (``stopped``: ended early by
``trainer.on_collapse=stop``, resumable; MLflow's name for a run ended before its end is KILLED)."""


class MlflowSink:
    """Deliver a run's metrics rows to MLflow, resumably.

    ``deliver`` and ``finish`` never raise (training must not die with the tracking server); ``sync``
    raises, for ``t2po sync`` to report the cause.
    """

    def __init__(
        self, run_dir: Path, cfg: RunConfig, *, tags: dict[str, str] | None = None, tracking_uri: str | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.tags = tags or {}
        self.uri = tracking_uri or resolve_uri(cfg)
        self.state_path = self.run_dir / SYNC_STATE
        self.state = self._load_state()
        self._client: Any = None
        self._pending: list[dict[str, Any]] = []
        self._down_until = 0.0
        self.last_error: str | None = None

    def _load_state(self) -> dict[str, Any]:
        state = _read_json(self.state_path)
        state.setdefault("run_id", None)
        state.setdefault("delivered", [])
        return state

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.state_path)

    def delivered(self) -> set[tuple[int, str]]:
        """(step, split) keys already in MLflow."""
        return {(int(s), str(p)) for s, p in self.state["delivered"]}

    def _client_and_run(self) -> tuple[Any, str]:
        import mlflow

        if self._client is None:
            _bound_http_retries()
            self._client = mlflow.MlflowClient(tracking_uri=self.uri)
        if self.state["run_id"] is None:
            self._create_run(self._client)
        return self._client, self.state["run_id"]

    def _create_run(self, client: Any) -> None:
        from mlflow.entities import Param

        from t2po_cli.config.compose import config_to_dict, flatten

        exp_id = self.cfg.tracking.experiment_id or ensure_experiment(
            self.uri, str(self.cfg.experiment_name), Path(self.cfg.runs_root) / "mlartifacts"
        )
        git = _read_json(self.run_dir / "git.json")
        tags = {"t2po.run_dir": str(self.run_dir.resolve()), "git_sha": str(git.get("sha")), **env_tags(), **self.tags}
        parent = self.state.get("parent_run_id") or os.environ.get("T2PO_PARENT_RUN_ID")
        if parent:
            tags["mlflow.parentRunId"] = str(parent)
        tags = {k: str(v) for k, v in tags.items() if not is_secret(k)}
        run = client.create_run(exp_id, run_name=self.run_dir.name, tags=tags)
        self.state["run_id"] = run.info.run_id
        self._save_state()
        params = {
            k: redact(str(v))[:500]
            for k, v in flatten(config_to_dict(self.cfg)).items()
            if not is_secret_param(k)
        }
        items = list(params.items())
        for i in range(0, len(items), PARAMS_PER_BATCH):
            client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i : i + PARAMS_PER_BATCH]])

    def sync(self, rows: list[dict[str, Any]]) -> int:
        """Deliver the rows not yet delivered, in batches. Returns how many rows were newly delivered.

        Raises:
            Exception: whatever MLflow raised; rows delivered before the failure stay recorded.
        """
        from mlflow.entities import Metric

        client, run_id = self._client_and_run()
        done = self.delivered()
        pending: list[dict[str, Any]] = []
        for row in rows:
            key = (int(row["step"]), str(row["split"]))
            if key not in done:
                done.add(key)
                pending.append(row)
        batch: list[Any] = []
        keys: list[list[Any]] = []
        for row in pending:
            metrics = _row_metrics(row, Metric)
            if batch and len(batch) + len(metrics) > METRICS_PER_BATCH:
                self._flush(client, run_id, batch, keys)
                batch, keys = [], []
            for i in range(0, len(metrics), METRICS_PER_BATCH):  # a single huge row spans several calls
                chunk = metrics[i : i + METRICS_PER_BATCH]
                if len(chunk) == METRICS_PER_BATCH:
                    client.log_batch(run_id, metrics=chunk)
                else:
                    batch.extend(chunk)
            keys.append([int(row["step"]), str(row["split"])])
        self._flush(client, run_id, batch, keys)
        return len(pending)

    def _flush(self, client: Any, run_id: str, batch: list[Any], keys: list[list[Any]]) -> None:
        if batch:
            client.log_batch(run_id, metrics=batch)
        if keys:
            # Recorded only after MLflow accepted the batch: a crash in between re-sends rows, which the
            # store drops as exact duplicates (same timestamp), rather than losing them.
            self.state["delivered"].extend(keys)
            self._save_state()

    def deliver(self, rows: list[dict[str, Any]]) -> bool:
        """Log the given rows plus any that failed earlier. Returns True when nothing is left pending."""
        self._pending.extend(rows)
        if time.monotonic() < self._down_until:
            return False
        try:
            self.sync(self._pending)
            self._pending = []
            return True
        except Exception as e:  # best effort; the rows stay pending for the next call or `t2po sync`
            self.last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self._down_until = time.monotonic() + RETRY_AFTER_S
            return False

    def finish(self, status: str = "FINISHED") -> bool:
        """Flush pending rows and mark the MLflow run terminated (FINISHED, FAILED or KILLED)."""
        self._down_until = 0.0
        ok = self.deliver([])
        try:
            client, run_id = self._client_and_run()
            # MLflow prints "View run ... at: URL" on stdout when a run ends against a server; stdout is for
            # machine output and the console for t2po's own lines, so the URL goes to the run's log instead.
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                client.set_terminated(run_id, status=status)
            for line in printed.getvalue().splitlines():
                if line.strip():
                    logging.getLogger("mlflow").info(line.strip())
            return ok
        except Exception as e:
            self.last_error = f"{type(e).__name__}"
            return False


def _row_metrics(row: dict[str, Any], metric_cls: Any) -> list[Any]:
    """MLflow Metric objects of one metrics.jsonl row (finite numbers only; val rows get ``val/``)."""
    values = row["metrics"]
    prefix = "val/" if row["split"] == "val" and not any(k.startswith("val/") for k in values) else ""
    ts = int(float(row.get("wall_time", time.time())) * 1000)
    return [
        metric_cls(_mlflow_key(prefix + k), float(v), ts, int(row["step"]))
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    ]


def _mlflow_key(key: str) -> str:
    """MLflow metric names allow [A-Za-z0-9_-./ ]; other characters become '_'."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
