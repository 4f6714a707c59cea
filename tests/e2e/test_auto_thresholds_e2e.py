"""Self-calibrating thresholds through the whole train path: logged every step, and resume is exact
because their windows are saved in the checkpoint (issue #17 item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2po_cli.tracking import keys as K
from t2po_cli.trainer import loop

from .conftest import make_run, stable_rows, train_until_checkpoint

pytestmark = pytest.mark.slow


def test_auto_thresholds_log_and_resume_exactly(e2e_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ["env=alfworld", "t2po=on", "t2po.tds.eta=auto", "t2po.tti.tau=auto", "trainer.steps=3",
                 "trainer.save_every=1", "trainer.val_every=0", "trainer.seed=2", "env.max_turns=6"]
    full = make_run(e2e_root, overrides, name="full")
    loop.train_run(full.path)

    broken = make_run(e2e_root, overrides, name="broken")
    train_until_checkpoint(broken, 2, monkeypatch)  # dies after the step-2 checkpoint, threshold windows non-empty
    state = json.loads((broken.path / "checkpoints" / "step_2" / "state.json").read_text())
    assert state["t2po_hooks"]["tds"]["eta_window"] and state["t2po_hooks"]["tti"]["tau_window"]
    loop.train_run(broken.path)

    a, b = stable_rows(full), stable_rows(broken)
    assert a == b
    train = [m for _, split, m in a if split == "train"]
    assert len(train) == 3
    for m in train:
        assert m[K.TDS_ETA] > 0 and m[K.TTI_TAU] > 0
    # From the second call on, τ comes from the observed |ΔM|, not the warm-up value.
    assert train[-1][K.TTI_TAU] != 1e-4
