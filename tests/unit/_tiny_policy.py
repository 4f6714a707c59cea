"""A tiny test policy with peaked random weights, shared by the engine and constraint tests."""

from __future__ import annotations

from pathlib import Path

import torch

from t2po_cli.config.schema import LoraConfig, ModelConfig
from t2po_cli.trainer.models import Policy, load_policy


def peaked_tiny_policy(folder: Path, seed: int) -> Policy:
    """Tiny policy (vocab 512) with weights redrawn at std 0.2. The std-0.02 init is near-uniform and greedy
    just repeats the last token, which would make parity tests vacuous; std 0.2 gives varied, peaked
    (H ≈ 4 nats) choices."""
    pol = load_policy(ModelConfig(vocab_size=512, lora=LoraConfig(enabled=False)), base_path=folder)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pol.model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2, generator=gen)
    pol.model.eval()
    return pol
