"""A run killed with SIGKILL after its 2nd checkpoint and resumed ends exactly like an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.helpers import (
    CI_OVERRIDES,
    comparable,
    kill_tree,
    metric_rows,
    t2po,
    t2po_popen,
    wait_for,
)

pytestmark = pytest.mark.slow

ARGS = [*CI_OVERRIDES, "trainer.steps=4", "trainer.save_every=1", "trainer.seed=3"]


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step_*") if (p / "state.json").is_file())


def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    r = t2po(["train", "--run-dir", str(ref), *ARGS], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = t2po_popen(["train", "--run-dir", str(killed), *ARGS], cwd=tmp_path, log=tmp_path / "killed.log")
    try:
        assert wait_for(lambda: "step_2" in _checkpoints(killed), timeout=600, proc=proc), \
            (tmp_path / "killed.log").read_text()[-2000:]
    finally:
        kill_tree(proc)
    assert "step_4" not in _checkpoints(killed), "the run finished before the kill; nothing was tested"

    r = t2po(["train", "--resume", str(killed)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]

    ref_rows, got_rows = metric_rows(ref), metric_rows(killed)
    keys = [(row["step"], row["split"]) for row in got_rows]
    assert len(keys) == len(set(keys)), f"duplicated rows: {keys}"
    assert sorted(keys) == sorted((row["step"], row["split"]) for row in ref_rows), "lost or extra rows"
    assert comparable(got_rows) == comparable(ref_rows)
