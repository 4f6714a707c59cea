"""Service tier: the real Slurm cluster and MLflow server started by ``scripts/services.sh``.

Outside CI these skip with a visible reason; in CI a missing service fails (``require_service``). Each
training job uses the tiny model with ``trainer=ci`` and a two-turn Search-QA, so a job takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from service_gate import require_service
from t2po_cli.cli.app import main

pytestmark = [pytest.mark.services, pytest.mark.slurm, pytest.mark.mlflow_server]

FAST = ["env=searchqa", "trainer=ci", "trainer.warmstart.enabled=false", "env.max_turns=2",
        "trainer.val_every=0", "trainer.max_response_tokens=8"]
PROFILE = ["--launcher", "slurm", "--profile", "local-ci"]


def _slurm_ok() -> bool:
    if not all(shutil.which(t) for t in ("sbatch", "sacct", "scontrol")):
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    sacct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True)
    return "UP" in ping.stdout and sacct.returncode == 0


def _mlflow_ok(uri: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=3) as r:
            return r.read().strip() == b"OK"
    except OSError:
        return False


@pytest.fixture
def services(runs_root: Path) -> str:
    """The MLflow server URI; skips (or fails in CI) when the cluster or the server is not up."""
    require_service(_slurm_ok(), "no Slurm cluster with accounting (run: bash scripts/services.sh start)")
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    require_service(uri.startswith("http") and _mlflow_ok(uri),
                    "no MLflow server in MLFLOW_TRACKING_URI (source .services/env.sh)")
    return uri


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _wait(pred, limit: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {limit}s waiting for {what}")


def _ended(path: Path) -> dict | None:
    """The refreshed sweep once every point is terminal (sacct lags squeue, infra.md §2.7.2), else None."""
    from t2po_cli.jobs.sweep_runner import TERMINAL, refresh_sweep

    data = refresh_sweep(path)
    return data if all(p["state"] in TERMINAL for p in data["points"]) else None


def _train_steps(run: Path) -> list[int]:
    from t2po_cli.tracking.jsonl import iter_metrics

    path = run / "metrics.jsonl"
    return [r["step"] for r in iter_metrics(path) if r["split"] == "train"] if path.is_file() else []


def test_sweep_is_one_array_and_every_run_lands_in_mlflow(services: str, runs_root: Path, capsys) -> None:
    import mlflow

    name = _name("grid")
    rc = main(["sweep", "--tau", "1e-4,1e-3,1e-2", "--seeds", "0,1", "--name", name, *PROFILE, "--wait", "--json",
               f"runs_root={runs_root}", *FAST])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0, data
    ids = [p["job_id"] for p in data["points"]]
    assert len(ids) == 6 and {i.split("_")[0] for i in ids} == {data["array_job_id"]}  # ONE array
    assert sorted(int(i.split("_")[1]) for i in ids) == list(range(6))
    assert [p["state"] for p in data["points"]] == ["finished"] * 6
    ml = data["mlflow"]
    client = mlflow.MlflowClient(tracking_uri=services)
    assert client.get_experiment_by_name(name).experiment_id == ml["experiment_id"]
    runs = client.search_runs([ml["experiment_id"]], max_results=50)
    children = [r for r in runs if r.info.run_id != ml["parent_run_id"]]
    assert len(children) == 6 and len(runs) == 7
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {ml["parent_run_id"]}
    assert {r.info.status for r in children} == {"FINISHED"}
    for r in children:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "episode/success_rate")]
        assert sorted(steps) == [1, 2]
    assert client.get_run(ml["parent_run_id"]).info.status == "FINISHED"


def test_failing_point_is_reported_with_its_log(services: str, runs_root: Path, capsys) -> None:
    from t2po_cli.config.sweep import spec_from_flags
    from t2po_cli.jobs import sweep_runner as sr

    spec = spec_from_flags(_name("fail"), [f"runs_root={runs_root}", *FAST], {}, [0, 1])
    plan = sr.plan_sweep(spec, launcher="slurm", profile="local-ci", tracking_uri=services)
    data = sr.create_sweep(plan)
    # Corrupt one point after creation: the job fails at run time, the other one must still finish.
    Path(data["points"][1]["run_dir"], "resolved_config.yaml").write_text("trainer: [not, a, mapping]\n")
    sr.submit_slurm(plan.path, data)
    final = _wait(lambda: _ended(plan.path), 120, "both points to end", every=2)
    assert [p["state"] for p in final["points"]] == ["finished", "failed"]
    log = Path(final["points"][1]["log"])
    assert log.is_file() and "RunFolderError" in log.read_text()
    assert main(["sweep", "status", str(plan.path)]) == 0
    err = capsys.readouterr().err
    assert "FAILED" in err and str(log) in err.replace("\n", "")


def test_cancel_stops_the_array(services: str, runs_root: Path, capsys) -> None:
    import submitit

    rc = main(["sweep", "--seeds", "0,1", "--name", _name("cancel"), *PROFILE, "--json",
               f"runs_root={runs_root}", *FAST, "trainer.steps=200", "tracking.mlflow=false"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    path = Path(runs_root) / data["experiment"] / Path(data["points"][0]["run_dir"]).parent.name
    _wait(lambda: all(_train_steps(Path(p["run_dir"])) for p in data["points"]), 120, "both points to train")
    assert main(["sweep", "cancel", str(path)]) == 0
    # submitit backs off its sacct polls (15-19 s to notice a cancel): force the check (infra.md §3).
    jobs = [submitit.SlurmJob(folder=path / "logs", job_id=p["job_id"]) for p in data["points"]]
    _wait(lambda: all(j.done(force_check=True) for j in jobs), 60, "the cancelled jobs to end")
    assert all(j.state.startswith("CANCELLED") for j in jobs), [j.state for j in jobs]
    final = _wait(lambda: _ended(path), 30, "sweep status to read cancelled")
    assert {p["state"] for p in final["points"]} == {"cancelled"}


def test_requeued_job_resumes_from_its_checkpoint(services: str, runs_root: Path, capsys) -> None:
    import mlflow

    steps = 10
    rc = main(["train", *PROFILE, "--json", f"runs_root={runs_root}", f"experiment_name={_name('requeue')}",
               *FAST, f"trainer.steps={steps}"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    run, job = Path(out["run_dir"]), out["job_id"]
    _wait(lambda: len(_train_steps(run)) >= 2, 120, "two training steps before the requeue", every=0.5)
    _requeue_and_finish(job, run, 180, "the requeued job to finish")
    assert "Restarts=1" in _show(job)
    assert _train_steps(run) == list(range(1, steps + 1))  # resumed, no duplicated rows
    state = json.loads((run / "mlflow_sync.json").read_text())
    history = mlflow.MlflowClient(tracking_uri=services).get_metric_history(state["run_id"], "episode/success_rate")
    assert sorted(m.step for m in history) == list(range(1, steps + 1))


def _requeue_and_finish(job: str, run: Path, timeout_s: float, what: str) -> None:
    """Requeue ``job``, start it again at once, and wait until it and its run have finished."""
    subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
    # A requeued job is held until BeginTime (about 120 s later, infra.md §2.7.4); start it now instead.
    _wait(lambda: "JobState=PENDING" in _show(job), 30, "the job to be pending again", every=0.5)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, capture_output=True)
    _wait(lambda: json.loads((run / "status.json").read_text()).get("state") == "finished"
          and "JobState=COMPLETED" in _show(job), timeout_s, what, every=1)


def _show(job: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout


def test_two_rank_job_trains_and_lands_in_mlflow(services: str, runs_root: Path, capsys) -> None:
    """One run as two Slurm tasks (slurm/local-ci-2ranks.yaml): submitit exports each task's rank and the
    rendezvous, the ranks train with ddp over gloo, rank 0 alone writes metrics.jsonl and MLflow; then a
    requeue of the 2-task job resumes from its sharded checkpoint."""
    import mlflow

    steps = 6
    rc = main(["train", "--launcher", "slurm", "--profile", "local-ci-2ranks", "--json", f"runs_root={runs_root}",
               f"experiment_name={_name('ranks')}", *FAST, "trainer.tasks_per_step=4",
               "trainer.distributed.strategy=ddp", f"trainer.steps={steps}", "trainer.save_every=1"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    run, job = Path(out["run_dir"]), out["job_id"]
    assert "NumTasks=2" in _show(job)
    _wait(lambda: len(_train_steps(run)) >= 2, 180, "two training steps before the requeue", every=0.5)
    _requeue_and_finish(job, run, 240, "the requeued 2-task job to finish")
    assert _train_steps(run) == list(range(1, steps + 1))  # resumed, no row lost or duplicated
    world = json.loads((run / "world.json").read_text())
    assert world["world_size"] == 2 and len(world["launches"]) >= 2
    assert (run / "logs" / "rank0.log").is_file() and (run / "logs" / "rank1.log").is_file()
    assert any((p / "dcp").is_dir() for p in (run / "checkpoints").glob("step_*"))
    state = json.loads((run / "mlflow_sync.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=services)
    assert client.get_run(state["run_id"]).info.status == "FINISHED"
    history = client.get_metric_history(state["run_id"], "episode/success_rate")
    assert sorted(m.step for m in history) == list(range(1, steps + 1))
