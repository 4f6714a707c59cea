"""Synthetic run folders for report tests: real resolved configs (compose_config) + MetricsWriter rows.

A plain module (not conftest.py) so tests can import its helpers by a name no other test folder uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2po_cli.config.compose import compose_config
from t2po_cli.tracking import keys as K
from t2po_cli.tracking.jsonl import MetricsWriter

STEPS = 60
VAL_EVERY = 5


@dataclass(frozen=True)
class Spec:
    """One synthetic run: config overrides, seed, and an optional planted collapse step."""

    name: str
    overrides: tuple[str, ...]
    seed: int
    collapse_at: int | None = None
    level: float = 0.7


SPREAD_FALL = 10
"""Steps before ``collapse_at`` at which the within-group reward spread starts to fall (RAGEN: spread
collapses before the reward does); it reaches ~0 two steps before the collapse."""


def diag_metrics(spec: Spec, step: int, rng: np.random.Generator) -> dict[str, float]:
    """diag/* signals of one step: healthy noise, except a reward spread that falls ahead of a planted
    collapse and a covariance that turns positive shortly before it."""
    c = spec.collapse_at
    spread = 0.3 + rng.uniform(-0.03, 0.03)
    cov = -0.01 + rng.uniform(-0.005, 0.005)
    zero = 0.2 + rng.uniform(-0.05, 0.05)
    if c is not None and step >= c - SPREAD_FALL:
        spread = max(0.01, 0.3 * (c - 2 - step) / (SPREAD_FALL - 2))
        cov = 0.02 if step >= c - 6 else cov
        zero = 1.0 if step >= c else zero
    return {
        K.DIAG_REWARD_SPREAD: spread, K.DIAG_ZERO_SPREAD_GROUPS: zero, K.DIAG_ENTROPY_ADV_COV: cov,
        K.DIAG_LOGP_MISMATCH: 0.002 + rng.uniform(0, 0.002), K.DIAG_LOGP_MULT_ERROR: 1.002 + rng.uniform(0, 0.003),
        K.DIAG_GRAD_NORM_Z: rng.uniform(-1.5, 1.5), K.DIAG_CLIP_FRAC_LOW: rng.uniform(0, 0.02),
        K.DIAG_CLIP_FRAC_HIGH: rng.uniform(0, 0.02),
    }


def synthetic_rows(spec: Spec, steps: int = STEPS) -> list[tuple[int, str, dict[str, float]]]:
    """Train rows every step and val rows every VAL_EVERY steps; a collapse sends success, reward and
    entropy down and KL up from ``collapse_at`` on, and the reward spread falls ahead of it (diag_metrics).
    T2PO-on runs log the threshold trajectories of eta=auto and tau=auto."""
    rng = np.random.default_rng(spec.seed * 7919 + len(spec.name))
    diag_rng = np.random.default_rng(spec.seed * 7919 + len(spec.name) + 1)  # leaves the other series as they were
    t2po_on = any(o in ("t2po=on", "t2po=tti", "t2po=tds") for o in spec.overrides)
    rows = []
    for step in range(steps):
        learned = spec.level * (1 - np.exp(-step / 12))
        collapsed = spec.collapse_at is not None and step >= spec.collapse_at
        success = 0.02 if collapsed else learned
        success = float(np.clip(success + rng.uniform(-0.04, 0.04), 0, 1))
        m = {
            K.SUCCESS_RATE: success,
            K.REWARD_MEAN: success * 10 - 1 + rng.uniform(-0.2, 0.2),
            K.ENTROPY: (0.05 if collapsed else 1.2) + rng.uniform(-0.02, 0.02),
            K.GRAD_NORM: 0.8 + rng.uniform(-0.1, 0.1),
            K.PPO_KL: (2.0 if collapsed else 0.01) + rng.uniform(0, 0.002),
            K.RESPONSE_LENGTH_MEAN: 40 + rng.uniform(-3, 3),
            K.TOKENS_PER_EPISODE: (300 if t2po_on else 420) + rng.uniform(-20, 20),
            K.EPISODE_LENGTH: 6 + rng.uniform(-0.5, 0.5),
            K.ZERO_VARIANCE_GROUPS: 0.2 + rng.uniform(-0.05, 0.05),
        }
        if t2po_on:
            m[K.TTI_INTERVENTION_RATE] = 0.3 + rng.uniform(-0.05, 0.05)
            m[K.TDS_RESAMPLE_RATE] = 0.15 + rng.uniform(-0.05, 0.05)
            m[K.TDS_ETA] = 0.3 * np.exp(-step / 20) + 0.05 + diag_rng.uniform(0, 0.01)
            m[K.TTI_TAU] = 0.01 * (1 + 0.5 * np.sin(step / 6)) + diag_rng.uniform(0, 1e-3)
        m.update(diag_metrics(spec, step, diag_rng))
        rows.append((step, "train", m))
        if step % VAL_EVERY == 0 or step == steps - 1:
            val = 0.0 if collapsed else float(np.clip(learned + rng.uniform(-0.03, 0.03), 0, 1))
            rows.append((step, "val", {K.SUCCESS_RATE: val}))
    return rows


_YAML_CACHE: dict[tuple[str, ...], str] = {}


def resolved_yaml(overrides: tuple[str, ...]) -> str:
    """Composed config YAML (cached: Hydra composition costs ~0.3 s)."""
    if overrides not in _YAML_CACHE:
        _YAML_CACHE[overrides] = compose_config(list(overrides)).yaml
    return _YAML_CACHE[overrides]


def make_run(root: Path, spec: Spec, steps: int = STEPS) -> Path:
    """Write ``root/<spec.name>/`` with resolved_config.yaml, status.json and metrics.jsonl."""
    path = root / spec.name
    path.mkdir(parents=True)
    (path / "resolved_config.yaml").write_text(resolved_yaml((*spec.overrides, f"trainer.seed={spec.seed}")))
    (path / "status.json").write_text('{"state": "finished"}')
    writer = MetricsWriter(path / "metrics.jsonl")
    for step, split, metrics in synthetic_rows(spec, steps):
        writer.write(step, split, metrics)
    return path


# Variants x seeds: T2PO on is stable; off collapses in 2 of 3 seeds; a tau/eta sweep on two envs.
BASE_SPECS: tuple[Spec, ...] = (
    Spec("webshop_on_s0", ("env=webshop", "t2po=on"), 0),
    Spec("webshop_on_s1", ("env=webshop", "t2po=on"), 1),
    Spec("webshop_on_s2", ("env=webshop", "t2po=on"), 2),
    Spec("webshop_off_s0", ("env=webshop", "t2po=off"), 0, collapse_at=30),
    Spec("webshop_off_s1", ("env=webshop", "t2po=off"), 1, collapse_at=40),
    Spec("webshop_off_s2", ("env=webshop", "t2po=off"), 2, level=0.5),
)
