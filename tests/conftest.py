"""Shared test setup: offline hub variables, one torch thread, and the service-tier skip/fail rule."""

from __future__ import annotations

import os

# Any accidental hub download fails fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import pytest

from service_gate import IN_CI, require_service  # noqa: F401  (re-exported for old imports)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    """OpenMP spinning under contention costs 2-10x on 2 cores (model.md §0): one thread per test."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    """An isolated runs root; the working directory moves there so nothing leaks into the checkout."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    root.mkdir()
    return root
