"""CLI tier: help for every command, the lazy-import rule, dry runs, and one-line errors with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from t2po_cli.cli.app import app, main


def _commands() -> list[list[str]]:
    import typer

    cmd = typer.main.get_command(app)
    out: list[list[str]] = [[]]
    for name, sub in cmd.commands.items():  # type: ignore[attr-defined]
        out.append([name])
        for subname in getattr(sub, "commands", {}):
            out.append([name, subname])
    return out


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help_with_example(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([*path, "--help"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Example" in out, f"`t2po {' '.join(path)} --help` shows no example"


HEAVY = ("torch", "transformers", "mlflow", "peft", "pandas", "matplotlib", "numpy")


@pytest.mark.parametrize("argv", [
    ["--help"],
    # Validating a config consults the env and estimator registries; none of it may load torch (#15).
    ["train", "--env", "searchqa", "--algo", "a2tgpo", "--dry-run", "tracking.mlflow=false"],
    ["train", "--env", "webshop", "--algo", "ppo", "--dry-run", "tracking.mlflow=false"],
], ids=["help", "dry-run-a2tgpo", "dry-run-ppo"])
def test_help_and_dry_run_import_no_heavy_modules(argv: list[str], tmp_path: Path) -> None:
    code = (
        f"import sys; from t2po_cli.cli.app import main; rc = main({argv!r});"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules];"
        "print('RC=%d HEAVY=%s' % (rc, ','.join(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip().splitlines()[-1] == "RC=0 HEAVY="


def test_python_dash_m_works() -> None:
    r = subprocess.run([sys.executable, "-m", "t2po_cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("t2po ")


def test_dry_run_prints_resolved_config_and_creates_nothing(runs_root: Path, capsys) -> None:
    rc = main(["train", "--env", "webshop", "--dry-run", f"runs_root={runs_root}"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "env:\n  name: webshop" in cap.out
    assert "would create run folder" in cap.err and "webshop_gigpo_t2po-on_s0" in cap.err
    assert list(runs_root.iterdir()) == []


def test_ls_and_cat(capsys) -> None:
    assert main(["ls", "--json"]) == 0
    listing = capsys.readouterr().out
    assert '"env"' in listing and "webshop" in listing
    assert main(["cat", "env/alfworld"]) == 0
    assert "name: alfworld" in capsys.readouterr().out


def test_validate_all(capsys) -> None:
    assert main(["validate", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"failed": 0' in out


BAD_INVOCATIONS = [
    (["train", "--env", "nope", "--dry-run"], "env/nope"),
    (["train", "--algo", "sarsa", "--dry-run"], "algo/sarsa"),
    (["train", "--model", "gpt5", "--dry-run"], "model/gpt5"),
    (["train", "--t2po", "maybe", "--dry-run"], "--t2po"),
    (["train", "--recipe", "nothing", "--dry-run"], "experiment/nothing"),
    (["train", "--dry-run", "trainer.bogus=1"], "trainer.bogus"),
    (["train", "--dry-run", "+trainer.bogus=1"], "unknown key"),
    (["train", "--dry-run", "trainer.steps=ten"], "trainer.steps"),
    (["train", "--dry-run", "trainer.steps=0"], "trainer.steps"),
    (["train", "--dry-run", "trainer.lr=-0.1"], "trainer.lr"),
    (["train", "--dry-run", "steps"], "KEY=VALUE"),
    (["train", "--env", "webshop", "--algo", "a2tgpo", "--dry-run"], "gold answers"),
    (["train", "--dry-run", "trainer.group_size=1"], "group_size"),
    (["train", "--dry-run", "t2po.tds.eta=-1"], "t2po.tds.eta"),
    (["train", "--dry-run", "t2po.alpha=2"], "t2po.alpha"),
    (["train", "--launcher", "slurm", "--dry-run"], "profile"),
    (["train", "--bogus-flag"], "No such option"),
    (["train", "--resume", "/nonexistent/run"], "does not exist"),
    (["train", "--resume", "/tmp", "env=webshop"], "--resume takes no"),
    (["cat", "nothing"], "no recipe or sweep"),
    (["validate", "nothing"], "no recipe or sweep"),
    (["train", "--dry-run", "run_name=../escape"], "not a safe folder name"),
    (["nosuchcommand"], "No such command"),
    (["eval", "--run", "/tmp", "--tti", "maybe"], "--tti 'maybe' is not on or off"),
    (["eval", "--env", "searchqa", "--tti", "off"], "--tti goes with --run"),
]


def _ids(a: object) -> str:
    return " ".join(a) if isinstance(a, list) else ""


@pytest.mark.parametrize(("argv", "fragment"), BAD_INVOCATIONS, ids=_ids)
def test_bad_invocation_exits_2_with_one_line(argv: list[str], fragment: str | None) -> None:
    r = subprocess.run([sys.executable, "-m", "t2po_cli", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith("error:")
    if fragment:
        assert fragment in lines[0]


def test_at_least_fifteen_distinct_bad_invocations(capsys: pytest.CaptureFixture[str]) -> None:
    # Fifteen different mistakes, each refused with its own message: the table above could otherwise hold
    # near-duplicates, or the CLI could refuse everything with one generic line. In-process (fast); the
    # subprocess test above checks the exit code, the single line and the absence of a traceback.
    messages = set()
    for argv, _ in BAD_INVOCATIONS:
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2, (argv, err)
        messages.add(err)
    assert len(messages) >= 15, messages
