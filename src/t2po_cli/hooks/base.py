"""Hook protocols: the named research knobs of the rollout, with no-op defaults (design rule 2).

* A **token hook** runs inside the engine at every decoding step (T2PO's thinking intervention). It sees
  the per-row signal M_t computed from the raw logits and may force one token per row.
* A **turn hook** runs in the collector after a turn's batched generation and before the env is stepped
  (T2PO's turn-level dynamical sampling). It may ask for some rows to be regenerated.

``None`` means "no hook": the engine and collector then behave exactly like the baseline (and consume the
same random numbers), which is what makes ``--t2po off`` bit-identical to the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch


class TokenHook(Protocol):
    """Per-step hook, vectorised over the batch. One instance serves one generate call (``begin``..``end``),
    except in ``compat=released`` mode where state deliberately persists across calls."""

    def begin(self, batch_size: int, in_think_at_start: torch.Tensor) -> None:
        """Start a generate call of ``batch_size`` rows.

        Args:
            batch_size: B.
            in_think_at_start: ``BoolTensor[B]``: the generation prefix already opened ``<think>``.
        """
        ...

    def step(self, signal: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Called once per decoding step after M_t is computed, before sampling.

        Args:
            signal: ``FloatTensor[B]``, M_t from the raw logits (float32; NaN-safe).
            active: ``BoolTensor[B]``: rows still generating.

        Returns:
            ``LongTensor[B]``: token id to force per row, or -1 for "sample freely".
        """
        ...

    def observe(self, token_ids: torch.Tensor, active: torch.Tensor) -> None:
        """The tokens chosen at this step (sampled or forced), ``LongTensor[B]``; updates think state."""
        ...

    def end(self) -> list[dict[str, Any]]:
        """Finish the call; per-row reports, e.g. ``{"turn_score": float | None, "interventions": [...],
        "think_tokens": int, "unclosed_think": bool}``."""
        ...


class TokenHookFactory(Protocol):
    """Makes the token hook of one generate call; it may keep state across calls (``compat=released``, §3.7)."""

    def __call__(self) -> TokenHook:
        """A hook for one generate call."""
        ...


# The collector's regeneration callback for a turn hook: regenerate the given rows (indices into the
# turn's batch) with fresh randomness, overwrite them in place, and return their new turn scores.
Regenerate = Callable[[list[int]], list[float | None]]


class TurnHook(Protocol):
    """Turn-level hook (TDS)."""

    def refine(
        self,
        turn: int,
        rows: list[int],
        scores: list[float | None],
        regenerate: Regenerate,
        *,
        finished: Sequence[bool] | None = None,
        discarded_tokens: Callable[[list[int]], int] | None = None,
    ) -> list[float | None]:
        """Decide which rows to regenerate, call ``regenerate`` as needed, return the accepted scores.

        Args:
            turn: 0-based turn index.
            rows: environment indices (stable ids across turns) of the rows in this batch.
            scores: the base sample's turn score per row.
            regenerate: see ``Regenerate``; indices are positions in ``rows``.
            finished: optional, per row: the env is already done (``compat=released`` regenerates finished
                envs too; metrics count active ones only).
            discarded_tokens: optional; given positions in ``rows``, the number of response tokens those rows
                hold now. Called just before each regeneration (``t2po/tds/extra_gen_tokens``).

        Returns:
            The accepted sample's score per row (the hook remembers them as the next turn's previous scores).
        """
        ...

    def start_episode_batch(self, num_envs: int) -> None:
        """Forget all previous-turn scores (a new rollout of ``num_envs`` environments begins)."""
        ...

    def metrics(self) -> dict[str, float]:
        """Aggregated TDS metrics since the last call (keys from tracking/keys.py), then reset."""
        ...
