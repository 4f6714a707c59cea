"""Fixtures for report tests (helpers live in synthetic_runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_runs import BASE_SPECS, make_run


@pytest.fixture
def experiment_dir(tmp_path: Path) -> Path:
    """``tmp/runs/webshop/`` with BASE_SPECS as a sweep folder (sweep.json) plus loose runs."""
    exp = tmp_path / "runs" / "webshop"
    sweep = exp / "sweep-variants-20250101-000000"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text('{"name": "variants"}')
    for spec in BASE_SPECS[:3]:
        make_run(sweep, spec)
    for spec in BASE_SPECS[3:]:
        make_run(exp, spec)
    return exp
