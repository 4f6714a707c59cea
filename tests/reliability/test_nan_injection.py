"""An injected NaN loss is skipped and counted; training still finishes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from reliability.helpers import CI_OVERRIDES, metric_rows, t2po
from t2po_cli.tracking import keys

pytestmark = pytest.mark.slow


def test_nan_step_is_skipped_and_counted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = t2po(["train", "--run-dir", str(run), *CI_OVERRIDES, "trainer.val_every=0"], cwd=tmp_path,
             env={"T2PO_INJECT_NAN_STEP": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    train = {row["step"]: row["metrics"] for row in metric_rows(run) if row["split"] == "train"}
    assert sorted(train) == [1, 2]
    assert train[1]["actor/skipped_steps"] >= 1
    assert train[2]["actor/skipped_steps"] == train[1]["actor/skipped_steps"], "step 2 must not be skipped"
    # The NaN never reaches the weights: step 2 trains (it logs a loss and a gradient norm) and both are finite.
    assert math.isfinite(train[2][keys.PG_LOSS]), train[2]
    assert math.isfinite(train[2][keys.GRAD_NORM]), train[2]
