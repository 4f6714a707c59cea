"""The ``t2po`` command: a thin, lazy Typer app (no torch, transformers or mlflow at import).

Every subcommand lives in its own module; heavy imports happen inside the command functions. User
mistakes raise ``UserError`` and are printed here as one line with exit code 2, without a traceback.
"""

from __future__ import annotations

import sys

import typer

from t2po_cli import __version__
from t2po_cli.cli import catalog, doctor, train

app = typer.Typer(
    name="t2po",
    help=(
        "Train LLM agents with multi-turn RL and fight training collapse (T2PO, A2TGPO, GiGPO, GRPO, PPO).\n\n"
        "Example: t2po train --env webshop"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"t2po {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """t2po: experiment orchestration for multi-turn agentic RL."""


train.register(app)
catalog.register(app)
doctor.register(app)

# Commands contributed by later subsystems register themselves here when present.
for _mod in ("envs", "serve", "warmstart", "evaluate", "sweep", "sync", "report"):
    try:
        _m = __import__(f"t2po_cli.cli.{_mod}", fromlist=["register"])
    except ModuleNotFoundError as _e:  # pragma: no cover - only while a subsystem is absent
        if _e.name != f"t2po_cli.cli.{_mod}":
            raise
        continue
    _m.register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. Returns the exit code."""
    from t2po_cli.console import err
    from t2po_cli.errors import UserError

    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="t2po", standalone_mode=False)
    except UserError as e:
        err.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as e:
        # Click (vendored by Typer) signals usage errors, --help exits and aborts with exceptions.
        name = type(e).__name__
        if name == "NoArgsIsHelpError":
            ctx = getattr(e, "ctx", None)
            err.print(ctx.get_help() if ctx else "see `t2po --help`", highlight=False)
            return 0
        if name == "Exit":
            return int(getattr(e, "exit_code", 0))
        if name == "Abort":
            err.print("aborted")
            return 130
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            ctx = getattr(e, "ctx", None)
            path = getattr(ctx, "command_path", "t2po") if ctx else "t2po"
            err.print(f"[red]error:[/red] {e.format_message()} (see `{path} --help`)", soft_wrap=True)
            return 2
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
