"""Sweeps: file schema, expansion counts, one-line validation errors, every shipped sweep, the CLI forms,
and the local worker pool (with a stand-in trainer pinned into the run folders' code/)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from t2po_cli.cli.app import main
from t2po_cli.config.sweep import expand, load_sweep_file, parse_sweep, validate_sweep
from t2po_cli.errors import ConfigError
from t2po_cli.paths import sweeps_dir

# Shipped sweeps and their point counts (ablations × grid × seeds).
SHIPPED = {"tau_sensitivity": 9, "eta_sensitivity": 12, "t2po_ablation": 12, "t2po_vs_baselines": 15}


def _spec(**kw):
    return parse_sweep({"name": "t", **kw}, "test")


def test_expansion_counts_and_names() -> None:
    pts = expand(_spec(grid={"t2po.tti.tau": ["1e-4", "1e-3", "1e-2"], "t2po.tds.eta": [0.1, 0.3]},
                       seeds=[0, 1]))
    assert len(pts) == 3 * 2 * 2
    assert pts[0].name == "tau-1e-4_eta-0.1_s0"
    assert pts[0].overrides == ("t2po.tti.tau=1e-4", "t2po.tds.eta=0.1", "trainer.seed=0")
    assert len({p.name for p in pts}) == len(pts)
    abl = expand(_spec(base=["env=webshop"], ablations={"on": ["t2po=on"], "off": ["t2po=off"]}, seeds=[0, 1, 2]))
    assert len(abl) == 6 and abl[0].overrides == ("env=webshop", "t2po=on", "trainer.seed=0")
    assert len(expand(_spec(seeds=[3]))) == 1
    assert len(expand(_spec())) == 1


def test_yaml_on_off_means_the_t2po_recipes() -> None:
    # YAML 1.1 reads unquoted on/off as booleans; for the t2po group they name the recipes.
    spec = parse_sweep(__import__("yaml").safe_load("name: x\ngrid: {t2po: [on, off]}"), "x")
    assert spec.grid["t2po"] == ("on", "off")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"name": "x", "grdi": {}}, "unknown key 'grdi'"),
        ({"grid": {}}, "'name' is required"),
        ({"name": "../x"}, "not a safe folder name"),
        ({"name": "x", "grid": {"t2po.tds.eta": []}}, "non-empty list"),
        ({"name": "x", "seeds": ["a"]}, "seeds must be a list of integers"),
        ({"name": "x", "base": ["env"]}, "not KEY=VALUE"),
        ({"name": "x", "ablations": {"a": "t2po=on"}}, "list of KEY=VALUE"),
    ],
)
def test_schema_errors_are_one_line(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_sweep(data, "sweeps/x.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_validation_names_the_failing_point_in_one_line() -> None:
    spec = _spec(base=["trainer=ci"], grid={"trainer.steps": [2, -1]})
    with pytest.raises(ConfigError) as e:
        validate_sweep(spec)
    msg = str(e.value)
    assert "point steps--1" in msg and "trainer.steps=-1" in msg and "\n" not in msg


def test_every_shipped_sweep_validates() -> None:
    files = sorted(sweeps_dir().glob("*.yaml"))
    assert {f.stem for f in files} == set(SHIPPED), "update SHIPPED when adding a sweep"
    for f in files:
        assert len(validate_sweep(load_sweep_file(f))) == SHIPPED[f.stem], f.stem
    assert len(files) == 4


def test_cli_dry_run_from_flags(runs_root: Path, capsys) -> None:
    rc = main(["sweep", "--env", "alfworld", "--tau", "1e-4,1e-3", "--seeds", "0,1", "--dry-run", "--json",
               f"runs_root={runs_root}"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(out["points"]) == 4
    assert "t2po.tti.tau=1e-4" in out["points"][0]["overrides"]
    assert list(runs_root.iterdir()) == []


def test_cli_dry_run_from_file_with_slurm_shows_sbatch(runs_root: Path, capsys) -> None:
    rc = main(["sweep", "run", str(sweeps_dir() / "tau_sensitivity.yaml"), "--launcher", "slurm",
               "--profile", "local-ci", "--dry-run", f"runs_root={runs_root}"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "#SBATCH --array=0-8%8" in err and "#SBATCH --partition=debug" in err and "9 points valid" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["sweep", "--env", "webshop"], "nothing to sweep"),
        (["sweep", "--env", "webshop", "--t2po", "on,maybe"], "--t2po value"),
        (["sweep", "--seeds", "0,x"], "--seeds"),
        (["sweep", "--tau", "1e-4,", "--dry-run"], "comma-separated"),
        (["sweep", "--tau", "1e-4,-1", "--dry-run"], "t2po.tti.tau=-1"),
        (["sweep", "--seeds", "0,1", "--launcher", "slurm", "--dry-run"], "needs a profile"),
        (["sweep", "--seeds", "0,1", "--launcher", "slurm", "--profile", "nope", "--dry-run"], "no Slurm profile"),
        (["sweep", "nope.yaml"], "not found"),
        (["sweep", "status", "/nonexistent"], "sweep.json"),
    ],
)
def test_cli_user_errors_exit_2(argv: list[str], needle: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


# A stand-in trainer, written into each run folder's pinned code/: it proves the worker runs the pinned code
# and exercises the pool without the real trainer's cost.
FAKE_LOOP = textwrap.dedent('''
    import os, time
    from pathlib import Path
    def train_run(run_dir, progress=None):
        Path(run_dir, "ran_pinned_code").write_text(__file__)
        if os.environ.get("FAKE_FAIL", "@none@") in str(run_dir):
            raise RuntimeError("planned failure")
        time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
        return {"ok": 1}
''')


def _local_sweep(runs_root: Path, seeds: list[int]):
    from t2po_cli.config.sweep import spec_from_flags
    from t2po_cli.jobs import sweep_runner as sr

    spec = spec_from_flags("pool", [f"runs_root={runs_root}", "trainer=ci", "tracking.mlflow=false"], {}, seeds)
    plan = sr.plan_sweep(spec, max_parallel=2)
    data = sr.create_sweep(plan)
    for p in data["points"]:
        (Path(p["run_dir"]) / "code/t2po_cli/trainer/loop.py").write_text(FAKE_LOOP)
    return plan.path, data


def test_local_pool_runs_pinned_code_and_reports_failures(runs_root: Path, monkeypatch) -> None:
    from t2po_cli.jobs.sweep_runner import read_sweep, run_local

    monkeypatch.setenv("FAKE_FAIL", "s1")
    path, data = _local_sweep(runs_root, [0, 1, 2])
    assert path.parent == runs_root / "pool" and (path / "sweep.json").is_file()
    run_local(path, data)
    final = read_sweep(path)
    assert [p["state"] for p in final["points"]] == ["finished", "failed", "finished"]
    failed = final["points"][1]
    assert failed["returncode"] != 0 and "planned failure" in Path(failed["log"]).read_text()
    for p in final["points"]:
        assert "/code/t2po_cli/trainer/loop.py" in (Path(p["run_dir"]) / "ran_pinned_code").read_text()


def test_local_pool_cancel_marker_stops_workers(runs_root: Path, monkeypatch) -> None:
    # Ordered, not timed: cancel from the driver's own update callback once both workers run. Workers that
    # slept on (the marker ignored) would end "finished" after a minute, and this test would fail.
    from t2po_cli.jobs.sweep_runner import CANCEL_MARKER, cancel_sweep, read_sweep, run_local

    monkeypatch.setenv("FAKE_SLEEP", "60")
    path, data = _local_sweep(runs_root, [0, 1, 2])
    seen: list[list[str]] = []

    def on_update(d: dict) -> None:
        states = [p["state"] for p in d["points"]]
        seen.append(states)
        if states == ["running", "running", "pending"] and not (path / CANCEL_MARKER).exists():
            assert cancel_sweep(path) == [p["name"] for p in d["points"]]

    run_local(path, data, on_update=on_update)
    assert ["running", "running", "pending"] in seen
    assert seen[-1] == ["cancelled"] * 3
    final = read_sweep(path)["points"]
    assert [p["state"] for p in final] == ["cancelled"] * 3
    assert all(p["returncode"] not in (None, 0) for p in final[:2])  # the two running workers were stopped
    assert final[2]["job_id"] is None and final[2]["returncode"] is None  # the queued point never started


@pytest.mark.slow
def test_local_sweep_end_to_end_with_the_real_trainer(runs_root: Path, capsys) -> None:
    """`t2po sweep --env alfworld --tau ... --seeds ...` without Slurm: a local pool, sqlite MLflow."""
    import mlflow

    uri = f"sqlite:///{runs_root / 'mlflow.db'}"
    fast = ["trainer=ci", "trainer.warmstart.enabled=false", "env.max_turns=2", "trainer.val_every=0",
            "trainer.max_response_tokens=8"]
    rc = main(["sweep", "--env", "alfworld", "--tau", "1e-4,1e-3", "--seeds", "0,1", "--max-parallel", "2",
               "--tracking-uri", uri, "--json", f"runs_root={runs_root}", *fast])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and [p["state"] for p in data["points"]] == ["finished"] * 4
    assert Path(data["sweep_dir"]).parent == runs_root / "alfworld_tau"
    runs = mlflow.MlflowClient(tracking_uri=uri).search_runs([data["mlflow"]["experiment_id"]])
    assert len(runs) == 5  # the parent and one child per point
