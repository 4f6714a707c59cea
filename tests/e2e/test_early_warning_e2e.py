"""The live early warning end to end: diag/* metrics every step, no false alarm on the default recipes,
and ``trainer.on_collapse`` = stop (clean, resumable) and rollback (restore, lower the learning rate)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from t2po_cli.tracking import keys as K
from t2po_cli.tracking.early_warning import Warning, first_warnings
from t2po_cli.tracking.jsonl import read_metrics
from t2po_cli.trainer import loop
from t2po_cli.trainer import watch as W

from .conftest import make_run

pytestmark = pytest.mark.slow

EVERY_STEP = (K.DIAG_REWARD_SPREAD, K.DIAG_ZERO_SPREAD_GROUPS, K.DIAG_LOGP_MISMATCH, K.DIAG_LOGP_MULT_ERROR,
              K.DIAG_CLIP_FRAC_LOW, K.DIAG_CLIP_FRAC_HIGH)


@pytest.mark.parametrize("env", ["webshop", "alfworld", "searchqa"])
def test_default_recipes_log_diag_metrics_and_raise_no_warning(e2e_root: Path, env: str) -> None:
    # Each env's default recipe (its algo, T2PO on) on the CI trainer, long enough for every rule's
    # minimum history (5 points) to be reached.
    run = make_run(e2e_root, [f"env={env}", "trainer.steps=7", "trainer.val_every=0", "env.max_turns=6"])
    loop.train_run(run.path)
    rows = read_metrics(run.metrics_path)
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 8))
    for r in train:
        assert set(EVERY_STEP) <= set(r["metrics"]), r["step"]
        # The built-in engine and the trainer's forward score the same tokens with the same weights.
        assert r["metrics"][K.DIAG_LOGP_MULT_ERROR] < 1.01
    assert first_warnings(rows) == []
    assert "warnings" not in json.loads((run.path / "status.json").read_text())


def _fire_at(monkeypatch: pytest.MonkeyPatch, steps: set[int]) -> list[int]:
    """Make the live check report one synthetic warning at each of ``steps``, once each."""
    fired: list[int] = []

    def check(self: W.Watch, step: int) -> list[Warning]:
        if step in steps and step not in fired:
            fired.append(step)
            return [Warning("reward_spread_drop", step, K.DIAG_REWARD_SPREAD, 0.02, "diag/reward_spread fell")]
        return []

    monkeypatch.setattr(W.Watch, "check", check)
    return fired


def test_on_collapse_stop_ends_cleanly_and_resumes(e2e_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(e2e_root, ["env=webshop", "trainer.steps=3", "trainer.save_every=0", "trainer.val_every=0",
                              "trainer.on_collapse=stop", "diagnostics.template_mi_samples=3"])
    _fire_at(monkeypatch, {2})
    summary = loop.train_run(run.path)
    status = json.loads((run.path / "status.json").read_text())
    assert summary["steps"] == 2 and status["state"] == "stopped" and status["step"] == 2
    assert [(w["rule"], w["step"], w["action"]) for w in status["warnings"]] == [("reward_spread_drop", 2, "stop")]
    assert (run.path / "checkpoints" / "step_2").is_dir()  # saved on stop although save_every=0

    monkeypatch.undo()
    loop.train_run(run.path)  # what `t2po train --resume` runs
    status = json.loads((run.path / "status.json").read_text())
    assert status["state"] == "finished" and status["warnings"][0]["action"] == "stop"
    train = [r for r in read_metrics(run.metrics_path) if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    for r in train:  # the template-collapse check on 3 sampled responses (9 scored sequences)
        acc = r["metrics"][K.DIAG_TEMPLATE_RETRIEVAL_ACC]
        assert 0.0 <= acc <= 1.0 and math.isfinite(r["metrics"][K.DIAG_TEMPLATE_MI])


def test_on_collapse_rollback_restores_and_lowers_lr(e2e_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(e2e_root, ["env=webshop", "trainer.steps=4", "trainer.save_every=1", "trainer.val_every=0",
                              "trainer.on_collapse=rollback", "trainer.max_rollbacks=1", "trainer.lr=1e-4"])
    fired = _fire_at(monkeypatch, {3})
    loop.train_run(run.path)
    assert fired == [3]
    rows = [r for r in read_metrics(run.metrics_path) if r["split"] == "train"]
    # The step-3 warning's rollouts came from checkpoint 2's weights, so the rollback restores checkpoint 1 (the
    # policy before the one that showed it) and steps 2-4 run again at half the learning rate, each logged once.
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    lrs = [r["metrics"][K.LR] for r in rows]
    assert lrs == pytest.approx([1e-4, 0.5e-4, 0.5e-4, 0.5e-4])
    status = json.loads((run.path / "status.json").read_text())
    assert status["state"] == "finished" and status["rollbacks"] == 1
    assert [w["action"] for w in status["warnings"]] == ["rollback"]
    state = json.loads((run.path / "checkpoints" / "step_4" / "state.json").read_text())
    assert state["lr_scale"] == 0.5 and state["rollbacks"] == 1

    # The retried step 2 starts from the same weights as the abandoned one (checkpoint 1) but draws fresh
    # random streams: replaying the old ones would reproduce the abandoned rollout, and with it the warning.
    # A run without the warning is the abandoned branch: its step 1 equals ours, its step 2 rollout does not.
    monkeypatch.undo()
    plain = make_run(e2e_root, ["env=webshop", "trainer.steps=3", "trainer.save_every=1", "trainer.val_every=0",
                                "trainer.lr=1e-4"], name="plain")
    loop.train_run(plain.path)
    other = [r for r in read_metrics(plain.metrics_path) if r["split"] == "train"]
    rollout_keys = (K.TOKENS_PER_EPISODE, K.RESPONSE_LENGTH_MEAN, K.ENTROPY)
    assert all(rows[0]["metrics"][k] == other[0]["metrics"][k] for k in rollout_keys)
    assert any(rows[1]["metrics"][k] != other[1]["metrics"][k] for k in rollout_keys)
