"""``t2po ls``, ``t2po cat`` and ``t2po validate``: browse and check recipes and sweeps."""

from __future__ import annotations

from pathlib import Path

import typer

from t2po_cli.errors import UserError


def _recipe_files() -> dict[str, Path]:
    """Every recipe and sweep file by display name (``group/name``, ``train``, ``sweeps/name``)."""
    from t2po_cli.config.compose import RECIPE_GROUPS
    from t2po_cli.paths import ROOT_CONFIG, recipes_dir, sweeps_dir

    root = recipes_dir()
    files = {ROOT_CONFIG: root / f"{ROOT_CONFIG}.yaml"}
    for group in RECIPE_GROUPS:
        for p in sorted((root / group).glob("*.yaml")):
            files[f"{group}/{p.stem}"] = p
    sd = sweeps_dir()
    if sd.is_dir():
        for p in sorted(sd.glob("*.yaml")):
            files[f"sweeps/{p.stem}"] = p
    return files


def _resolve_name(name: str) -> tuple[str, Path]:
    files = _recipe_files()
    if name in files:
        return name, files[name]
    stem = Path(name).stem if name.endswith(".yaml") else name
    matches = [k for k in files if k.split("/")[-1] == stem]
    if len(matches) == 1:
        return matches[0], files[matches[0]]
    if len(matches) > 1:
        raise UserError(f"'{name}' is ambiguous ({', '.join(matches)}); write it as group/name")
    raise UserError(f"no recipe or sweep named '{name}'; list them with `t2po ls`")


def ls_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the listing as JSON on stdout."),
) -> None:
    """List recipes (by group) and sweeps.

    Example: t2po ls
    """
    from rich.table import Table

    from t2po_cli.console import emit_json, err, hint

    files = _recipe_files()
    groups: dict[str, list[str]] = {}
    for key in files:
        group, _, name = key.rpartition("/")
        groups.setdefault(group or "root", []).append(name or key)
    if json_out:
        emit_json(groups)
        return
    table = Table(title="t2po recipes and sweeps", show_lines=False)
    table.add_column("group", style="bold")
    table.add_column("names")
    for group, names in groups.items():
        table.add_row(group, ", ".join(names))
    err.print(table)
    hint("t2po cat env/webshop   or   t2po train --env webshop --dry-run")


def cat_cmd(
    name: str = typer.Argument(..., help="Recipe or sweep: group/name, a bare name, 'train', or sweeps/NAME."),
    resolved: bool = typer.Option(False, "--resolved", help="Compose the recipe and print the full resolved config."),
) -> None:
    """Print one recipe or sweep file (or, with --resolved, the config it composes to).

    Example: t2po cat experiment/alfworld_gigpo_t2po --resolved
    """
    import sys

    key, path = _resolve_name(name)
    if not resolved:
        sys.stdout.write(path.read_text())
        return
    from t2po_cli.config.compose import compose_config

    group = key.split("/")[0]
    if key == "train":
        overrides: list[str] = []
    elif group == "sweeps":
        raise UserError("--resolved applies to recipes; for a sweep use `t2po sweep FILE --dry-run`")
    else:
        overrides = validation_overrides(key)
    sys.stdout.write(compose_config(overrides).yaml)


# Recipes that only make sense together with another choice are validated in that context.
VALIDATION_CONTEXT: dict[str, list[str]] = {
    "algo/a2tgpo": ["env=searchqa"],
    "trainer/gpu": ["model=qwen3-4b"],
}


def validation_overrides(key: str) -> list[str]:
    """Overrides that select one recipe for validation (with a compatible env where needed)."""
    group, _, option = key.partition("/")
    if key == "train":
        return []
    return [f"{group}={option}", *VALIDATION_CONTEXT.get(key, [])]


def validate_cmd(
    names: list[str] = typer.Argument(None, help="Recipes or sweeps to check (default: all)."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON on stdout."),
) -> None:
    """Compose and validate recipes and sweeps (all of them by default).

    Example: t2po validate            (or: t2po validate env/alfworld sweeps/tau_sensitivity)
    """
    from t2po_cli.config.compose import compose_config
    from t2po_cli.console import emit_json, err, hint

    files = _recipe_files()
    keys = [_resolve_name(n)[0] for n in names] if names else list(files)
    results: list[dict[str, object]] = []
    for key in keys:
        try:
            if key.startswith("sweeps/"):
                from t2po_cli.config.sweep import load_sweep_file, validate_sweep

                points = validate_sweep(load_sweep_file(files[key]))
                detail = f"{len(points)} points"
            else:
                compose_config(validation_overrides(key))
                detail = "ok"
            results.append({"name": key, "ok": True, "detail": detail})
        except UserError as e:
            results.append({"name": key, "ok": False, "detail": str(e)})
    bad = [r for r in results if not r["ok"]]
    if json_out:
        emit_json({"checked": len(results), "failed": len(bad), "results": results})
    else:
        for r in results:
            mark = "[green]ok[/green]" if r["ok"] else "[red]FAIL[/red]"
            err.print(f"{mark} {r['name']}: {r['detail']}", soft_wrap=True)
        err.print(f"{len(results) - len(bad)}/{len(results)} valid")
    if bad:
        first = f"{bad[0]['name']}: {bad[0]['detail']}"
        raise UserError(f"{len(bad)} of {len(results)} recipes/sweeps failed validation; first: {first}")
    if not json_out:
        hint("t2po train --env webshop --dry-run")


def register(app: typer.Typer) -> None:
    app.command("ls")(ls_cmd)
    app.command("cat")(cat_cmd)
    app.command("validate")(validate_cmd)
