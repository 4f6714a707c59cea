"""Two ranks (gloo, 2 CPU processes through torchrun) against one process, resume across world sizes, and a
rank killed mid-step.

Equality tolerance: 1e-4 relative (weights: |Δ| ≤ 1e-6 + 1e-4·|w|). Two ranks sum the same float32 terms in
another order (each rank's partial gradient, then gloo's all-reduce), so weights and gradient norms differ by
rounding only: measured gradient norms within 3e-6 relative, weights within 1.1e-6 absolute (≤ 1.2e-5 of a
tensor's largest entry; LoRA's near-zero adapters 7e-7 absolute). A wrong loss normalisation moves them by
the ratio of token counts (tens of percent), which 1e-4 catches. Adam hides a global gradient scale, so the
gradient norm is compared as well as the weights.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from reliability.helpers import t2po

pytestmark = pytest.mark.slow

BASE = ["trainer=ci", "tracking.mlflow=false", "env=searchqa", "env.max_turns=2", "trainer.val_every=0",
        "trainer.save_every=1", "trainer.seed=5", "trainer.tasks_per_step=4", "trainer.micro_batch_rows=64",
        # A learning signal on the untrained-looking tiny policy: invalid actions are penalised (step
        # advantages) and the entropy bonus always has a gradient.
        "trainer.constrained_actions=false", "trainer.entropy_coef=0.01", "trainer.lr=1e-3"]
EPISODE_KEYS = ("episode/success_rate", "episode/reward/mean", "episode/length/mean", "episode/tokens/mean",
                "episode/valid_action_ratio", "response_length/mean", "perf/generated_tokens", "actor/grad_norm")
RTOL = 1e-4


def _train(run: Path, *extra: str, env: dict[str, str] | None = None, cwd: Path):
    return t2po(["train", "--run-dir", str(run), *BASE, *extra], cwd=cwd, env=env, timeout=900)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """Trainable weights of the newest checkpoint, single-process or sharded (DCP), by parameter name."""
    step = max((p for p in (run / "checkpoints").glob("step_*")), key=lambda p: int(p.name.split("_")[1]))
    if (step / "dcp").is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        out = run / "consolidated.pt"
        dcp_to_torch_save(step / "dcp", out)
        return torch.load(out, weights_only=False)["model"]
    return torch.load(step / "trainable.pt", weights_only=True)["policy"]


def _assert_same_run(ref: Path, got: Path) -> None:
    a, b = _rows(ref), _rows(got)
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in EPISODE_KEYS:
            if key in ra["metrics"]:
                assert rb["metrics"][key] == pytest.approx(ra["metrics"][key], rel=RTOL), (ra["step"], key)
    wa, wb = _weights(ref), _weights(got)
    assert set(wa) == set(wb) and wa
    for name, t in wa.items():
        torch.testing.assert_close(wb[name].float(), t.float(), rtol=RTOL, atol=1e-6, msg=name)


@pytest.mark.parametrize(("strategy", "model", "extra"), [
    ("ddp", "tiny", []),
    ("fsdp", "tiny", []),
    # LoRA with the KL term (reference = adapters off on the sharded model) and micro-batches of 2 rows on
    # the ranks (the one process uses one micro-batch): the global token-mean makes micro-batching irrelevant,
    # and ranks with different numbers of micro-batches stay in step (dummy chunks).
    ("fsdp", "tiny-lora", ["trainer.kl_coef=0.1"]),
])
def test_two_ranks_equal_one_process(tmp_path: Path, strategy: str, model: str, extra: list[str]) -> None:
    ref = tmp_path / "one"
    r = _train(ref, f"model={model}", *extra, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    two = tmp_path / "two"
    micro = ["trainer.micro_batch_rows=2"] if extra else []
    r = _train(two, f"model={model}", *extra, *micro, f"trainer.distributed.strategy={strategy}", "--nproc", "2",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((two / "world.json").read_text())["world_size"] == 2
    assert (two / "logs" / "rank0.log").is_file() and (two / "logs" / "rank1.log").is_file()
    assert any(r["metrics"]["actor/grad_norm"] > 0 for r in _rows(ref)), "no learning signal: nothing tested"
    _assert_same_run(ref, two)


def test_two_ranks_calibrate_tau_on_every_episode(tmp_path: Path) -> None:
    """``t2po.tti.tau=auto`` under ddp: after each step's rollout every rank's τ window holds both ranks' per-token
    |ΔM| (``loop._share_calibration``), as one process's holds all episodes'. Checked on the checkpointed window
    (rank 0's) after each step against one process's, as sorted values; without the merge rank 0 held only its
    own episodes' values (about half). Within a step each rank still updates τ from its own turns, so the τ
    logged per step may differ from one process's (README, distributed training)."""
    extra = ["--t2po", "tti", "t2po.tti.tau=auto"]
    ref, two = tmp_path / "one", tmp_path / "two"
    assert _train(ref, *extra, cwd=tmp_path).returncode == 0
    r = _train(two, *extra, "trainer.distributed.strategy=ddp", "--nproc", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for step in (1, 2):
        one, both = (sorted(json.loads((run / "checkpoints" / f"step_{step}" / "state.json").read_text())
                            ["t2po_hooks"]["tti"]["tau_window"]) for run in (ref, two))
        assert len(one) > 100 and len(both) == len(one), (step, len(one), len(both))
        assert both == pytest.approx(one, abs=1e-5)


def test_killed_rank_ends_job_and_resume_changes_world_size(tmp_path: Path) -> None:
    """2 ranks, rank 1 SIGKILLed at step 3 → one error line; resume with 1 rank; equal to an unbroken run.
    Then the other way: 1 rank killed at step 3, resumed with 2 ranks."""
    steps = ["trainer.steps=4", "trainer.distributed.strategy=ddp"]
    ref = tmp_path / "ref"
    assert _train(ref, *steps, cwd=tmp_path).returncode == 0

    run = tmp_path / "two_then_one"
    r = _train(run, *steps, "--nproc", "2", env={"T2PO_KILL_RANK_AT": "1:3"}, cwd=tmp_path)
    assert r.returncode == 1
    line = f"error: rank 1 failed (killed by SIGKILL); see {run / 'logs' / 'rank1.log'}; continue with --resume"
    assert line in r.stderr.replace("\n", ""), r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "torch.distributed.elastic" not in r.stderr
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    assert [x["step"] for x in _rows(run)] == [1, 2]
    r = t2po(["train", "--resume", str(run), "--nproc", "1"], cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [x["world_size"] for x in json.loads((run / "world.json").read_text())["launches"]] == [2, 1]
    _assert_same_run(ref, run)

    run = tmp_path / "one_then_two"
    r = _train(run, *steps, "--nproc", "1", env={"T2PO_KILL_RANK_AT": "0:3"}, cwd=tmp_path)
    assert r.returncode == -signal.SIGKILL
    r = t2po(["train", "--resume", str(run), "--nproc", "2"], cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [x["step"] for x in _rows(run)] == [1, 2, 3, 4]
    _assert_same_run(ref, run)


def test_hung_rank_ends_job_within_the_collective_timeout(tmp_path: Path) -> None:
    """Rank 1 sleeps at step 2: rank 0's next collective times out (trainer.distributed.timeout_s) and the
    whole job ends with one line instead of hanging; the subprocess timeout bounds the test itself."""
    run = tmp_path / "hung"
    r = _train(run, "trainer.steps=3", "trainer.distributed.strategy=ddp", "trainer.distributed.timeout_s=15",
               "--nproc", "2", env={"T2PO_HANG_RANK_AT": "1:2"}, cwd=tmp_path)
    assert r.returncode == 1
    err = r.stderr.replace("\n", "")
    assert "error: rank 0 failed (exit code 1: a collective timed out waiting for another rank" in err, err[-3000:]
    assert "Traceback" not in r.stderr
    assert "Timed out" in (run / "logs" / "rank0.log").read_text()
    assert json.loads((run / "status.json").read_text())["state"] == "failed"


def test_sweep_point_runs_as_two_ranks(tmp_path: Path) -> None:
    r = t2po(["sweep", "--seeds", "0", "--name", "ranks", "--json", f"runs_root={tmp_path / 'runs'}", *BASE,
              "trainer.steps=1", "launcher.nproc=2", "trainer.distributed.strategy=ddp"], cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    point = Path(json.loads(r.stdout)["points"][0]["run_dir"])
    assert json.loads((point / "world.json").read_text())["world_size"] == 2
    assert [x["step"] for x in _rows(point)] == [1]
