"""Pure parts of trainer/distributed.py (task shards, loss weights, metric reduction) with hand-computed
numbers, the world checks of config/validate.py, and the one-line rank failure."""

from __future__ import annotations

import math
import signal
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from t2po_cli.config.compose import compose_config
from t2po_cli.config.validate import validate_world
from t2po_cli.errors import ConfigError
from t2po_cli.tracking import keys as K
from t2po_cli.trainer import distributed as D


def test_shard_range_splits_whole_tasks_in_rank_order() -> None:
    assert [list(D.shard_range(4, r, 2)) for r in range(2)] == [[0, 1], [2, 3]]
    # 5 tasks on 2 ranks: rank 0 takes the extra one; concatenation is range(5) (global indices kept).
    assert [list(D.shard_range(5, r, 2)) for r in range(2)] == [[0, 1, 2], [3, 4]]
    assert [list(D.shard_range(3, r, 3)) for r in range(3)] == [[0], [1], [2]]
    assert list(D.shard_range(7, 0, 1)) == list(range(7))


def test_chunk_weights_reproduce_one_process_token_mean() -> None:
    # One process: x = [1, 2, 3 | 4, 5] (5 tokens) → token-mean 3.0.
    # Rank 0 holds [1, 2, 3] (mean 2, 3 tokens), rank 1 holds [4, 5] (mean 4.5, 2 tokens); DDP averages:
    # (2·(3/5·2) + 4.5·(2/5·2)) / 2 = (2.4 + 3.6) / 2 = 3.0.
    w0, w1 = D.chunk_weight(3, 5, 2), D.chunk_weight(2, 5, 2)
    assert (w0, w1) == (pytest.approx(1.2), pytest.approx(0.8))
    assert (2.0 * w0 + 4.5 * w1) / 2 == pytest.approx(3.0)
    assert D.chunk_weight(0, 0, 2) == 0.0


def test_combine_metrics_weights_episodes_and_rows() -> None:
    r0 = {K.SUCCESS_RATE: 1.0, K.VALID_ACTION_RATIO: 0.5, K.GENERATED_TOKENS: 10.0, K.STEP_TIME: 2.0,
          K.RESPONSE_LENGTH_MIN: 3.0, K.RESPONSE_LENGTH_MAX: 9.0, K.val(K.SUCCESS_RATE): 0.0}
    r1 = {K.SUCCESS_RATE: 0.0, K.VALID_ACTION_RATIO: 1.0, K.GENERATED_TOKENS: 30.0, K.STEP_TIME: 5.0,
          K.RESPONSE_LENGTH_MIN: 1.0, K.RESPONSE_LENGTH_MAX: 4.0, K.val(K.SUCCESS_RATE): 1.0}
    out = D.combine_metrics([r0, r1], episodes=[3, 1], rows=[2, 6])
    assert out[K.SUCCESS_RATE] == pytest.approx(0.75)       # (1·3 + 0·1) / 4 episodes
    assert out[K.VALID_ACTION_RATIO] == pytest.approx(0.875)  # (0.5·2 + 1·6) / 8 rows
    assert out[K.GENERATED_TOKENS] == 40.0
    assert out[K.STEP_TIME] == 5.0
    assert (out[K.RESPONSE_LENGTH_MIN], out[K.RESPONSE_LENGTH_MAX]) == (1.0, 9.0)
    assert out[K.val(K.SUCCESS_RATE)] == pytest.approx(0.25)


def test_combine_metrics_skips_missing_and_nan() -> None:
    out = D.combine_metrics([{K.PG_LOSS: 2.0, K.SIGNAL_MEAN: math.nan}, {K.PG_LOSS: 4.0}], [1, 1], [1, 1])
    assert out[K.PG_LOSS] == 3.0 and math.isnan(out[K.SIGNAL_MEAN])
    assert D.combine_metrics([{K.ENTROPY: 1.0}, {}], [2, 2], [1, 1]) == {K.ENTROPY: 1.0}


def test_world_from_env_and_seeds() -> None:
    assert D.world_from_env({}, "none") == D.SINGLE
    w = D.world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "ddp")
    assert (w.rank, w.world_size, w.local_rank, w.is_main, w.active) == (1, 2, 1, False, True)
    assert D.derive_seed(7, 0) == 7
    assert D.derive_seed(7, 1) == D.derive_seed(7, 1) != D.derive_seed(7, 2) != 7


def test_record_world_keeps_one_entry_per_launch(tmp_path: Path) -> None:
    import json

    D.record_world(tmp_path, D.World(0, 2, 0, "ddp", "gloo"))
    D.record_world(tmp_path, D.World(0, 1, 0, "ddp", "gloo"))
    data = json.loads((tmp_path / D.WORLD_FILE).read_text())
    assert data["world_size"] == 1 and [x["world_size"] for x in data["launches"]] == [2, 1]


def test_one_rank_group_wraps_and_reduces_on_cpu() -> None:
    """The CPU analogue of the GPU glue: a one-rank gloo group, DDP and FSDP2 wrappers, collectives."""
    import torch.distributed as dist

    world = D.init_world("ddp", 60.0)
    try:
        assert (world.world_size, world.backend) == (1, "gloo") and dist.is_initialized()
        assert D.all_reduce(3.0, world, "max") == 3.0 and D.gather({"a": 1}, world) == [{"a": 1}]
        lin = torch.nn.Linear(2, 2)
        ddp = D.wrap_model(lin, world, torch.float32)
        assert D.unwrap(ddp) is lin and D.trainable_names(ddp) == ["weight", "bias"]
    finally:
        D.shutdown(world)
    assert not dist.is_initialized()


@pytest.mark.parametrize(
    ("nproc", "overrides", "needle"),
    [
        (2, [], "needs trainer.distributed.strategy=ddp"),
        (4, ["trainer.distributed.strategy=ddp"], "trainer.tasks_per_step=2 < 4 ranks"),
        (2, ["trainer.distributed.strategy=ddp", "trainer.val_tasks=1"], "trainer.val_tasks=1 < 2 ranks"),
        (0, [], "--nproc 0 must be >= 1"),
    ],
)
def test_world_checks_are_one_line(nproc: int, overrides: list[str], needle: str) -> None:
    cfg = compose_config(["trainer=ci", *overrides]).config
    with pytest.raises(ConfigError) as e:
        validate_world(cfg, nproc)
    assert needle in str(e.value) and "\n" not in str(e.value)
    ok = replace(cfg, trainer=replace(cfg.trainer, distributed=replace(cfg.trainer.distributed, strategy="ddp"),
                                      val_tasks=4))
    validate_world(ok, 2)


def test_nproc_flag_is_validated_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match=r"needs trainer\.distributed\.strategy"):
        compose_config(["trainer=ci", "launcher.nproc=2"])
    with pytest.raises(ConfigError, match="does not shard a value head"):
        compose_config(["trainer=ci", "algo=ppo", "trainer.distributed.strategy=fsdp"])


def test_rank_failure_names_the_killed_rank_not_the_terminated_one(tmp_path: Path) -> None:
    from t2po_cli.jobs.entry import rank_failure

    def failure(code: int, ts: int) -> SimpleNamespace:
        name = signal.Signals(-code).name if code < 0 else ""
        return SimpleNamespace(exitcode=code, timestamp=ts, signal_name=lambda: name)

    # The agent SIGTERMs rank 0 after rank 1 was SIGKILLed (even if rank 0's record is older).
    err = rank_failure({0: failure(-signal.SIGTERM, 1), 1: failure(-signal.SIGKILL, 2)}, tmp_path)
    assert str(err) == f"rank 1 failed (killed by SIGKILL); see {tmp_path / 'rank1.log'}; continue with --resume"
    assert err.exit_code == 1
    err = rank_failure({1: failure(1, 5), 0: failure(1, 3)}, tmp_path)
    assert str(err).startswith("rank 0 failed (exit code 1)")
    timed_out = failure(1, 3)
    timed_out.message = "RuntimeError: [gloo] Timed out waiting 20000ms for recv operation to complete"
    err = rank_failure({0: timed_out}, tmp_path)
    assert "exit code 1: a collective timed out waiting for another rank" in str(err) and "\n" not in str(err)


def test_dry_run_prints_the_world_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from t2po_cli.cli.app import main

    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--dry-run", "--nproc", "2", "trainer=ci", "trainer.distributed.strategy=fsdp"])
    err = capsys.readouterr().err.replace("\n", " ")
    assert rc == 0 and "world: 2 ranks on this machine (torchrun), strategy fsdp" in err
    assert "rank 1 (local 1)" in err and not (tmp_path / "runs").exists()
    rc = main(["train", "--dry-run", "--nproc", "2", "trainer=ci"])
    assert rc == 2 and "--nproc 2 needs trainer.distributed.strategy=ddp" in capsys.readouterr().err
