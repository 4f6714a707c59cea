"""Slurm profiles: typed loading, one-line errors, the sbatch text of --dry-run, and code pinning lines."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from t2po_cli.errors import UserError
from t2po_cli.jobs import slurm


def test_shipped_profiles_load() -> None:
    names = slurm.list_profiles()
    assert names == ["gpu-a100", "local-ci", "local-ci-2ranks"]
    ci = slurm.load_profile("local-ci")
    assert ci.partition == "debug" and ci.gpus_per_node == 0 and ci.mem_gb <= 4 and ci.array_parallelism >= 6
    assert ci.world_size == 1
    gpu = slurm.load_profile("gpu-a100")
    assert gpu.gpus_per_node == 1 and isinstance(gpu.setup, tuple)
    two = slurm.load_profile("local-ci-2ranks")
    assert (two.nodes, two.tasks_per_node, two.world_size) == (1, 2, 2)


def test_old_gpus_key_is_read_as_gpus_per_node_with_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    from t2po_cli.config import legacy

    legacy._warned.discard("slurm profile key gpus")
    a = slurm.parse_profile("x", {"gpus": 2}, "slurm/x.yaml")
    b = slurm.parse_profile("y", {"gpus": 4}, "slurm/y.yaml")
    assert (a.gpus_per_node, b.gpus_per_node) == (2, 4)
    assert capsys.readouterr().err.count("gpus_per_node") == 1
    with pytest.raises(UserError, match=r"keep only gpus_per_node"):
        slurm.parse_profile("z", {"gpus": 1, "gpus_per_node": 1}, "slurm/z.yaml")


def test_multi_task_profile_sets_ranks_in_sbatch() -> None:
    params = slurm.executor_parameters(slurm.load_profile("local-ci-2ranks"), "job", [])
    assert (params["nodes"], params["tasks_per_node"]) == (1, 2)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"partiton": "debug"}, "unknown key 'partiton'"),
        ({"gpus_per_node": "one"}, "gpus_per_node='one' must be int"),
        ({"tasks_per_node": 0}, "tasks_per_node=0 must be >= 1"),
        ({"cpus_per_task": True}, "must be int"),
        ({"timeout_min": 0}, "timeout_min=0 must be >= 1"),
        ({"setup": [1]}, "setup must be a list of shell lines"),
        ({"mem_gb": -1}, "mem_gb > 0"),
        (["debug"], "must be a mapping"),
    ],
)
def test_profile_errors_are_one_line(data: object, needle: str) -> None:
    with pytest.raises(UserError) as e:
        slurm.parse_profile("x", data, "slurm/x.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="known: gpu-a100, local-ci"):
        slurm.load_profile("nope")


def test_profile_from_a_path(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("partition: short\nmem_gb: 1.5\n")
    prof = slurm.load_profile(str(f))
    assert prof.name == "mine" and prof.partition == "short" and prof.mem_gb == 1.5


def test_describe_submission_shows_sbatch_parameters() -> None:
    from t2po_cli.config.compose import compose_config

    cfg = compose_config(["launcher.name=slurm", "launcher.profile=gpu-a100"]).config
    text = slurm.describe_submission(cfg, array_size=6, logs="/runs/x/logs")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=64GB", "#SBATCH --time=720", "#SBATCH --array=0-5%6", "PYTHONPATH"):
        assert line in text, line
    single = slurm.describe_submission(cfg)
    assert "--array" not in single and "export T2PO_RUN_DIR=" in single


@pytest.mark.parametrize("task", [0, 2])
def test_array_setup_pins_each_task_to_its_run_code(task: int, tmp_path: Path) -> None:
    runs = [tmp_path / f"run {i}" for i in range(3)]  # a space: the lines must quote paths
    script = "\n".join([*slurm.pin_setup_lines(runs), 'printf %s "$PYTHONPATH"'])
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env={"SLURM_ARRAY_TASK_ID": str(task), "PYTHONPATH": "/base"}).stdout
    assert out == f"{runs[task]}/code:/base"


def test_executor_parameters_are_valid_submitit_parameters(tmp_path: Path) -> None:
    import submitit

    prof = slurm.load_profile("gpu-a100")
    params = slurm.executor_parameters(prof, "t2po-x", slurm.pin_setup_lines([tmp_path]))
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="debug")
    executor.update_parameters(**params)  # raises on an unknown or mistyped parameter


def test_submit_without_slurm_is_a_one_line_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(slurm.shutil, "which", lambda _tool: None)
    with pytest.raises(UserError, match="use --launcher local"):
        slurm.make_executor(tmp_path, slurm.load_profile("local-ci"), "x", [])
