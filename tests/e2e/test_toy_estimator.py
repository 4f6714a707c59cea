"""Adding an estimator is one module plus one recipe (CONTRIBUTING.md, "Adding an estimator").

The toy estimator below lives only in this test's temporary folder: a module on the estimators package's
search path and an ``algo/toy.yaml`` recipe in a copy of the recipes. Nothing in ``src/`` names it, yet the
CLI validates its settings (``algo.toy.*``), a bad value fails with its own one-line message, and a training
step runs with its advantages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from t2po_cli.paths import recipes_dir

pytestmark = pytest.mark.slow

TOY_MODULE = textwrap.dedent('''
    """Toy: every row's advantage is its episode reward times ``scale`` minus the group mean (a test fixture)."""
    from dataclasses import dataclass

    from t2po_cli.algo.registry import Estimator, EstimatorInputs, EstimatorOutput
    from t2po_cli.checks import positive


    @dataclass
    class ToyParams:
        """``algo.toy``."""

        scale: float = 1.0
        """Multiplies the centred reward."""

        def validate(self, key: str) -> None:
            positive(self.scale, f"{key}.scale")


    def advantages(inputs: EstimatorInputs, p: ToyParams) -> EstimatorOutput:
        from t2po_cli.algo.advantages import advantage_stats, episode_advantage

        rows = inputs.rows
        adv = p.scale * episode_advantage(rows.episode_reward, rows.group_id, rows.traj_id, "mean_norm", True)
        return EstimatorOutput(adv, adv, advantage_stats(adv))


    ESTIMATOR = Estimator(name="toy", params=ToyParams, advantages=advantages, min_group_size=2)
''')


def _t2po(tmp_path: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys, t2po_cli.algo.estimators as e; e.__path__.append(sys.argv[1]);"
        "from t2po_cli.cli.app import main; sys.exit(main(sys.argv[2:]))"
    )
    env = {**os.environ, "T2PO_RECIPES": str(tmp_path / "recipes")}
    return subprocess.run([sys.executable, "-c", code, str(tmp_path / "estimators"), *argv], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=900)


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    (tmp_path / "estimators").mkdir()
    (tmp_path / "estimators" / "toy.py").write_text(TOY_MODULE)
    shutil.copytree(recipes_dir(), tmp_path / "recipes")
    (tmp_path / "recipes" / "algo" / "toy.yaml").write_text("# a test estimator\nname: toy\ntoy: {scale: 2.0}\n")
    return tmp_path


def test_toy_estimator_composes_validates_and_trains(toy: Path) -> None:
    dry = _t2po(toy, ["train", "--algo", "toy", "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert "toy:\n    scale: 2.0" in dry.stdout

    bad = _t2po(toy, ["train", "--algo", "toy", "--dry-run", "algo.toy.scale=-1"])
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == "error: algo.toy.scale=-1.0 must be > 0"
    small = _t2po(toy, ["train", "--algo", "toy", "--dry-run", "trainer.group_size=1"])
    assert small.returncode == 2 and "algo toy needs trainer.group_size >= 2" in small.stderr

    run = _t2po(toy, ["train", "--env", "webshop", "--model", "tiny", "--algo", "toy", "--t2po", "off", "--json",
                      "trainer=ci", "trainer.steps=1", "trainer.val_every=0", "env.max_turns=3",
                      "tracking.mlflow=false"])
    assert run.returncode == 0, run.stderr[-2000:]
    run_dir = toy / json.loads(run.stdout)["run_dir"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 1 and "critic/advantages/mean" in train[0]["metrics"]
