"""Per-episode random streams: every episode samples from its own ``torch.Generator``.

An episode's stream is seeded from a 63-bit key of (run seed, step, phase, global episode index), where the
global episode index is ``task position in the step's task list × group_size + copy index``. So the tokens an
episode samples do not depend on which other episodes share its generate batch, their order, or which rank
collects it (a rank that collects a slice of the tasks passes that slice's global ids), and a resumed run
draws exactly what an uninterrupted one would.

Sampling draws one uniform per live row per decode step from the row's stream (``draw_uniforms``) and picks
the token by inverse CDF (``rollout.engine.sample_tokens``); greedy decoding draws nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

KEY_BITS = 63  # torch.Generator.manual_seed takes a signed 64-bit seed; stay non-negative


def episode_key(seed: int, step: int, phase: str, episode: int) -> int:
    """The 63-bit seed of one episode's stream.

    BLAKE2b (8-byte digest) of ``"t2po-episode:{seed}:{step}:{phase}:{episode}"``, read little-endian, top
    bit cleared. A cryptographic hash rather than an affine mix so that neighbouring (step, episode) pairs get
    unrelated seeds (an affine mix such as ``seed·p + step·q + e`` collides across steps and episodes).

    Args:
        seed: the run seed (``trainer.seed``).
        step: the RL step (validation uses the step it validates).
        phase: ``"train"`` or ``"val"``.
        episode: global episode index (task position × group size + copy index).

    Returns:
        An int in ``[0, 2**63)``.
    """
    text = f"t2po-episode:{seed}:{step}:{phase}:{episode}".encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << KEY_BITS) - 1)


def episode_streams(seed: int, step: int, phase: str, episode_ids: Sequence[int]) -> list[torch.Generator]:
    """One seeded CPU ``torch.Generator`` per episode (see ``episode_key``), in ``episode_ids`` order."""
    return [torch.Generator().manual_seed(episode_key(seed, step, phase, e)) for e in episode_ids]


def seeded_streams(seed: int, n: int) -> list[torch.Generator]:
    """``n`` independent streams for a standalone generate call (tests, benches, ``t2po envs play``):
    the streams of episodes ``0..n-1`` of step 0 of phase ``"adhoc"``."""
    return episode_streams(seed, 0, "adhoc", range(n))


def draw_uniforms(streams: Sequence[torch.Generator], live: Sequence[bool]) -> torch.Tensor:
    """One ``U[0, 1)`` draw from each live row's stream; rows that are not live draw nothing (and get 0).

    Args:
        streams: per-row generators, length B.
        live: per row, whether it still decodes at this step (not finished). A forced row is live: it draws
            and its sample is overwritten, so a hook never shifts a stream.

    Returns:
        ``FloatTensor[B]`` (CPU, float32).
    """
    u = torch.zeros(len(streams))
    for i, (g, on) in enumerate(zip(streams, live, strict=True)):
        if on:
            u[i] = torch.rand((), generator=g)
    return u
