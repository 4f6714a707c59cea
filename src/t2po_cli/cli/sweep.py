"""``t2po sweep``: run a grid of training runs locally or as one Slurm job array; watch and cancel it.

Three forms, one sub-app::

    t2po sweep [run] --env alfworld --tau 1e-4,1e-3 --seeds 0,1      # a sweep from flags
    t2po sweep [run] sweeps/tau_sensitivity.yaml --launcher slurm --profile local-ci
    t2po sweep status DIR [--watch]      t2po sweep cancel DIR

``run`` is the default sub-command: anything that is not ``status``/``cancel``/``run`` is handed to it,
so ``t2po sweep --env ...`` and ``t2po sweep FILE.yaml`` work without typing ``run``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from t2po_cli.errors import UserError

STATE_STYLE = {"finished": "green", "failed": "red", "cancelled": "yellow", "running": "cyan", "pending": "dim"}


class _DefaultRunGroup(TyperGroup):
    """A group whose unknown first token (a flag, a .yaml file, KEY=V) goes to the ``run`` command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(
    cls=_DefaultRunGroup,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help=(
        "Sweep hyper-parameters: every point is composed and validated first, then run by a local worker pool "
        "or submitted as ONE Slurm job array; one MLflow parent run with a child per point.\n\n"
        "Forms: t2po sweep [run] ...  |  t2po sweep status DIR [--watch]  |  t2po sweep cancel DIR\n\n"
        "Example: t2po sweep --env alfworld --tau 1e-4,1e-3 --seeds 0,1"
    ),
)


def _grid_from_args(args: list[str]) -> tuple[str | None, list[str], dict[str, list[str]]]:
    """Split positional args into a sweep file, plain overrides (KEY=V) and grid axes (KEY=V1,V2)."""
    from t2po_cli.config.sweep import parse_values

    sweep_file: str | None = None
    base: list[str] = []
    grid: dict[str, list[str]] = {}
    for arg in args:
        if "=" not in arg:
            if sweep_file is not None or not (arg.endswith((".yaml", ".yml")) or Path(arg).is_file()):
                raise UserError(f"'{arg}' is neither a sweep file (.yaml) nor KEY=VALUE; e.g. trainer.steps=5")
            sweep_file = arg
            continue
        key, _, value = arg.partition("=")
        # Hydra list/dict values ([a,b], {a: 1}) are single values; commas elsewhere make a grid axis.
        if "," in value and not value.lstrip().startswith(("[", "{")):
            grid[key] = parse_values(value)
        else:
            base.append(arg)
    return sweep_file, base, grid


def _build_spec(args: list[str], flags: dict[str, Any]) -> Any:
    """A SweepSpec from a sweep file and/or flags (flags and KEY=V1,V2 extend or replace the file's axes)."""
    from dataclasses import replace

    from t2po_cli.cli.train import T2PO_SWITCHES
    from t2po_cli.config.sweep import load_sweep_file, parse_values, short_key, spec_from_flags

    sweep_file, base, grid = _grid_from_args(args)
    for flag, key in (("env", "env"), ("algo", "algo"), ("model", "model")):
        if flags[flag]:
            base.insert(0, f"{key}={flags[flag]}")
    for flag, key in (("tau", "t2po.tti.tau"), ("eta", "t2po.tds.eta"), ("t2po", "t2po")):
        if flags[flag]:
            grid[key] = parse_values(flags[flag])
    for v in grid.get("t2po", []):
        if v not in T2PO_SWITCHES:
            raise UserError(f"--t2po value {v!r} is not one of {', '.join(T2PO_SWITCHES)}; e.g. --t2po on,off")
    seeds: list[int] | None = None
    if flags["seeds"]:
        try:
            seeds = [int(s) for s in parse_values(flags["seeds"])]
        except ValueError:
            raise UserError(f"--seeds {flags['seeds']!r} must be integers, e.g. --seeds 0,1,2") from None
    if sweep_file:
        spec = load_sweep_file(sweep_file)
        return replace(
            spec, name=flags["name"] or spec.name, base=(*spec.base, *base),
            grid={**spec.grid, **{k: tuple(v) for k, v in grid.items()}},
            seeds=tuple(seeds) if seeds is not None else spec.seeds,
        )
    if not grid and not seeds:
        raise UserError("nothing to sweep; give a sweep file or axes, e.g. --tau 1e-4,1e-3 or --seeds 0,1,2")
    env = flags["env"] or "default"
    name = flags["name"] or "_".join([env, *(short_key(k) for k in grid)])
    return spec_from_flags(name, base, grid, seeds or [])


def _points_table(data: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in ("point", "state", "step", "success", "job", "log"):
        table.add_column(col, overflow="fold")
    for p in data["points"]:
        state = p.get("state", "?")
        steps = f"{p.get('step') if p.get('step') is not None else '-'}/{p.get('steps') or '-'}"
        sr = p.get("success_rate")
        table.add_row(
            p["name"], f"[{STATE_STYLE.get(state, 'white')}]{state}[/]", steps,
            f"{sr:.2f}" if isinstance(sr, int | float) else "-", str(p.get("job_id") or "-"), str(p.get("log") or ""),
        )
    return table


def _report_failures(data: dict[str, Any]) -> int:
    from t2po_cli.console import err
    from t2po_cli.jobs.sweep_runner import failed_points, last_log_line

    failed = failed_points(data)
    for p in failed:
        err.print(f"[red]FAILED[/red] {p['name']}: {last_log_line(p['log'])}\n  log: {p['log']}", soft_wrap=True)
    return len(failed)


def run_cmd(
    args: list[str] = typer.Argument(
        None, help="A sweep file (sweeps/NAME.yaml) and/or KEY=V (fixed) or KEY=V1,V2 (an axis)."
    ),
    env: str = typer.Option(None, "--env", "-e", help="Environment for every point (`t2po envs list`), e.g. alfworld."),
    algo: str = typer.Option(None, "--algo", "-a", help="Algorithm for every point."),
    model: str = typer.Option(None, "--model", "-m", help="Model recipe for every point."),
    tau: str = typer.Option(
        None, "--tau", help="Axis over τ (TTI stagnation threshold) = t2po.tti.tau, e.g. 1e-4,1e-3,1e-2."
    ),
    eta: str = typer.Option(None, "--eta", help="Axis over η (TDS resample band edge) = t2po.tds.eta, e.g. 0.1,0.3."),
    t2po: str = typer.Option(None, "--t2po", help="Axis over the T2PO switches: any of on,off,tti,tds."),
    seeds: str = typer.Option(None, "--seeds", help="Axis over trainer.seed, e.g. 0,1,2."),
    name: str = typer.Option(None, "--name", help="Sweep name (default: the file's name, or <env>_<axes>)."),
    launcher: str = typer.Option("local", "--launcher", help="local (worker pool) or slurm (one job array)."),
    profile: str = typer.Option(None, "--profile", help="Slurm profile from slurm/NAME.yaml (with --launcher slurm)."),
    max_parallel: int = typer.Option(1, "--max-parallel", "-j", help="Local launcher: concurrent worker processes."),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI, else sqlite under runs/)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Slurm: block until every point is done (local always waits)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate every point, print the plan (and the sbatch script); create nothing."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the sweep (folder, points, job ids) as JSON on stdout."),
) -> None:
    """Run a sweep: validate every point, create the run folders, then run them locally or on Slurm.

    Example: t2po sweep --env alfworld --tau 1e-4,1e-3 --seeds 0,1 --max-parallel 2
    (or: t2po sweep sweeps/tau_sensitivity.yaml --launcher slurm --profile local-ci)
    """
    from t2po_cli.console import emit_json, err, hint
    from t2po_cli.jobs import sweep_runner as sr

    flags = {"env": env, "algo": algo, "model": model, "tau": tau, "eta": eta, "t2po": t2po, "seeds": seeds,
             "name": name}
    spec = _build_spec(list(args or []), flags)
    plan = sr.plan_sweep(spec, launcher=launcher, profile=profile, max_parallel=max_parallel,
                         tracking_uri=tracking_uri)
    if dry_run:
        _print_plan(plan, json_out)
        return
    if launcher == "slurm":
        from t2po_cli.jobs.slurm import require_slurm

        require_slurm()
    data = sr.create_sweep(plan, command=["t2po", "sweep", *sys.argv[2:]])
    err.print(f"sweep folder: [bold]{plan.path}[/bold] ({len(plan.points)} points)")
    if launcher == "slurm":
        array_id = sr.submit_slurm(plan.path, data)
        err.print(f"submitted ONE job array [bold]{array_id}[/bold] ({len(plan.points)} tasks)")
        if not wait:
            emit_json(data) if json_out else sys.stdout.write(f"{array_id}\n")
            hint(f"t2po sweep status {plan.path} --watch")
            return
        data = _watch(plan.path, quiet=json_out)
    else:
        data = _run_local_live(plan.path, data, quiet=json_out)
    _finish(plan.path, data, json_out)


def _print_plan(plan: Any, json_out: bool) -> None:
    from t2po_cli.console import emit_json, err, hint

    if json_out:
        emit_json({"sweep_dir": str(plan.path), "launcher": plan.launcher, "points": [
            {"name": p.name, "overrides": list(c.overrides)} for p, c in plan.points]})
    else:
        for p, c in plan.points:
            err.print(f"[bold]{p.name}[/bold]  {' '.join(c.overrides)}", soft_wrap=True)
    if plan.launcher == "slurm":
        from t2po_cli.jobs.slurm import describe_submission

        err.print(describe_submission(plan.configs[0], array_size=len(plan.points), logs=str(plan.path / "logs")),
                  highlight=False, markup=False)
    err.print(f"[dim]dry run:[/dim] {len(plan.points)} points valid; would create [bold]{plan.path}[/bold]")
    hint("drop --dry-run to launch")


def _run_local_live(path: Path, data: dict[str, Any], quiet: bool) -> dict[str, Any]:
    from rich.live import Live

    from t2po_cli.console import err
    from t2po_cli.jobs.sweep_runner import progress, run_local

    title = f"sweep {data['name']} (local, {data['max_parallel']} workers)"
    with Live(_points_table(data, title), console=err, refresh_per_second=2, transient=quiet) as live:
        def update(d: dict[str, Any]) -> None:
            for p in d["points"]:
                p.update(progress(Path(p["run_dir"])))
            live.update(_points_table(d, title))

        return run_local(path, data, on_update=update)


def _watch(path: Path, quiet: bool = False, interval: float = 2.0) -> dict[str, Any]:
    from rich.live import Live

    from t2po_cli.console import err
    from t2po_cli.jobs.sweep_runner import TERMINAL, refresh_sweep

    data = refresh_sweep(path)
    with Live(_points_table(data, f"sweep {data['name']}"), console=err, refresh_per_second=1,
              transient=quiet) as live:
        while not all(p["state"] in TERMINAL for p in data["points"]):
            time.sleep(interval)
            data = refresh_sweep(path)
            live.update(_points_table(data, f"sweep {data['name']}"))
    return data


def _finish(path: Path, data: dict[str, Any], json_out: bool) -> None:
    from t2po_cli.console import emit_json, err, hint

    if json_out:
        emit_json({"sweep_dir": str(path), **data})
    done = sum(p["state"] == "finished" for p in data["points"])
    err.print(f"{done}/{len(data['points'])} points finished")
    if _report_failures(data):
        raise typer.Exit(1)
    hint(f"t2po report {path}")


def status_cmd(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder (runs/<experiment>/sweep-<name>-<time>)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh the table until every point is done."),
    json_out: bool = typer.Option(False, "--json", help="Print the sweep state as JSON on stdout."),
) -> None:
    """Show each point's state, step/steps, last success rate, job id and log path.

    Example: t2po sweep status runs/tau_sensitivity/sweep-tau_sensitivity-20250101-120000 --watch
    """
    from t2po_cli.console import emit_json, err, hint
    from t2po_cli.jobs.sweep_runner import TERMINAL, refresh_sweep

    data = _watch(sweep_dir, quiet=json_out) if watch else refresh_sweep(sweep_dir)
    if json_out:
        emit_json({"sweep_dir": str(sweep_dir), **data})
    elif not watch:
        err.print(_points_table(data, f"sweep {data['name']}"))
    _report_failures(data)
    if all(p["state"] in TERMINAL for p in data["points"]):
        hint(f"t2po report {sweep_dir}")
    else:
        hint(f"t2po sweep status {sweep_dir} --watch   (or: t2po sweep cancel {sweep_dir})")


def cancel_cmd(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder to cancel."),
    json_out: bool = typer.Option(False, "--json", help="Print the cancelled points as JSON on stdout."),
) -> None:
    """Cancel every unfinished point (Slurm: scancel of the array; local: stop the worker pool).

    Example: t2po sweep cancel runs/tau_sensitivity/sweep-tau_sensitivity-20250101-120000
    """
    from t2po_cli.console import emit_json, err, hint
    from t2po_cli.jobs.sweep_runner import cancel_sweep

    names = cancel_sweep(sweep_dir)
    if json_out:
        emit_json({"sweep_dir": str(sweep_dir), "cancelled": names})
    err.print(f"cancel requested for {len(names)} point(s)" + (f": {', '.join(names)}" if names else ""))
    hint(f"t2po sweep status {sweep_dir}")


def register(app: typer.Typer) -> None:
    sweep_app.command("run")(run_cmd)
    sweep_app.command("status")(status_cmd)
    sweep_app.command("cancel")(cancel_cmd)
    app.add_typer(sweep_app, name="sweep")
