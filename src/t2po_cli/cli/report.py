"""``t2po report``: collapse analysis, plots and tables over run, sweep or experiment folders (or MLflow).

Imports only typer at module level: pandas, numpy, matplotlib and mlflow load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from t2po_cli.errors import UserError


def report_cmd(
    paths: list[Path] = typer.Argument(None, help="Run, sweep or experiment folders (run folders are found below)."),
    by: str = typer.Option(
        None, "--by",
        help="Comma-separated config keys that define a variant (default: env.name, algo.name, t2po.variant, "
        "t2po.tti.tau, t2po.tds.eta, model.name). Seeds are always pooled.",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Report folder (default: <first input>/report; an existing one gets a new name)."
    ),
    experiment: str = typer.Option(None, "--experiment", help="Read runs from this MLflow experiment instead."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow URI for --experiment."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Report on runs: collapse detectors, learning curves, stability, T2PO thresholds, HTML + markdown.

    Example: t2po report runs/webshop --by t2po.variant,t2po.tds.eta --out reports/webshop
    """
    from t2po_cli.console import emit_json, err, hint
    from t2po_cli.report.build import build_report
    from t2po_cli.report.load import load_mlflow, load_paths, parse_keys

    keys = parse_keys(by)
    if experiment and paths:
        raise UserError("pass either folders or --experiment NAME, not both")
    if experiment:
        with err.status(f"reading MLflow experiment {experiment}…"):
            runs = load_mlflow(experiment, tracking_uri)
        notes: list[str] = []
        inputs = [f"mlflow:{experiment}"]
        parent = Path.cwd() / f"report-{experiment}"
    elif paths:
        with err.status("reading runs…"):
            runs, notes = load_paths(list(paths))
        inputs = [str(p) for p in paths]
        parent = paths[0] if paths[0].is_dir() else paths[0].parent
    else:
        raise UserError("pass run, sweep or experiment folders, or --experiment NAME --tracking-uri URI")
    with err.status(f"analysing {len(runs)} runs…"):
        result = build_report(runs, group_keys=keys, inputs=inputs, out=out, default_parent=parent, notes=notes)
    html = result.out / "report.html"
    if json_out:
        emit_json(result.summary)
    else:
        _print_table(result.variant_rows, result.summary)
    err.print(f"report written to {result.out} (report.html, report.md, summary.json)")
    hint(f"python -m webbrowser file://{html.resolve()}")


def _print_table(rows: list[dict], summary: dict) -> None:
    from rich.table import Table

    from t2po_cli.console import err

    table = Table(title=f"t2po report: {summary['runs_total']} runs, {summary['runs_collapsed']} collapsed")
    for col in ("variant", "seeds", "final success", "best success", "collapse rate", "steps to collapse"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["variant"], str(r["seeds"]), r["final_success"].text(pct=True), r["best_success"].text(pct=True),
            f"{r['collapse_rate']:.0%}", r["steps_to_collapse"].text(),
        )
    err.print(table)


def register(app: typer.Typer) -> None:
    """Add ``t2po report`` to the app."""
    app.command("report", no_args_is_help=True)(report_cmd)
