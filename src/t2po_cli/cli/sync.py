"""``t2po sync``: deliver the metrics.jsonl rows that MLflow does not have yet (none lost, none duplicated)."""

from __future__ import annotations

from pathlib import Path

import typer


def sync_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders, or sweep/experiment folders holding runs."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="Deliver here instead of the run's configured URI."),
    json_out: bool = typer.Option(False, "--json", help="Print per-run results as JSON on stdout."),
) -> None:
    """Deliver each run's undelivered metrics rows to MLflow (after an outage or an offline run).

    Example: t2po sync runs/webshop/webshop_gigpo_t2po-on_s0 --tracking-uri http://127.0.0.1:5000
    """
    from t2po_cli.config.compose import load_run_config
    from t2po_cli.console import emit_json, err, hint
    from t2po_cli.errors import BackendUnavailable, UserError
    from t2po_cli.run_folder import find_runs
    from t2po_cli.tracking.jsonl import read_metrics
    from t2po_cli.tracking.mlflow_sink import RUN_STATE_TO_MLFLOW, MlflowSink, redact

    runs = find_runs(list(run_dirs))
    if not runs:
        raise UserError(f"no run folders under {', '.join(map(str, run_dirs))}; pass folders created by t2po")
    results: list[dict[str, object]] = []
    for run in runs:
        cfg = load_run_config(run.config_path)
        sink = MlflowSink(run.path, cfg, tracking_uri=tracking_uri)
        rows = read_metrics(run.metrics_path) if run.metrics_path.is_file() else []
        before = len(sink.delivered())
        try:
            new = sink.sync(rows)
            state = str(run.read_status().get("state"))
            if state in RUN_STATE_TO_MLFLOW:
                sink.finish(RUN_STATE_TO_MLFLOW[state])
            results.append({"run_dir": str(run.path), "ok": True, "delivered": new, "already": before,
                            "run_id": sink.state["run_id"]})
        except Exception as e:  # one unreachable store must not hide the others' results
            first = str(e).splitlines()[0][:160] if str(e) else ""
            results.append({"run_dir": str(run.path), "ok": False, "error": f"{type(e).__name__}: {first}"})
    bad = [r for r in results if not r["ok"]]
    if json_out:
        emit_json({"runs": results, "failed": len(bad)})
    else:
        for r in results:
            if r["ok"]:
                err.print(f"[green]ok[/green] {r['run_dir']}: {r['delivered']} new rows "
                          f"({r['already']} already delivered)", soft_wrap=True)
            else:
                err.print(f"[red]FAIL[/red] {r['run_dir']}: {r['error']}", soft_wrap=True)
    if bad:
        uri = redact(tracking_uri or "the configured tracking URI")
        raise BackendUnavailable(f"{len(bad)} of {len(results)} runs not synced ({bad[0]['error']}); "
                                 f"check that MLflow at {uri} is reachable and re-run t2po sync")
    hint(f"t2po report {' '.join(map(str, run_dirs))}")


def register(app: typer.Typer) -> None:
    app.command("sync")(sync_cmd)
