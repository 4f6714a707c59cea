"""Data passed between the rollout engine, the T2PO hooks and the collector.

Shape letters: B sequences in a generate call, T generated positions, V logits width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from t2po_cli.hooks.base import TokenHookFactory
    from t2po_cli.rollout.constraint import ActionSpace


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings for one generate call."""

    max_new_tokens: int
    temperature: float = 1.0
    """0 = greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 = off."""
    stop_strings: tuple[str, ...] = ()
    """Generation of a sequence ends right after the first occurrence of any of these in its text."""


@dataclass
class Generation:
    """The result of one batched generate call; row i belongs to prompt i.

    All per-token tensors are 1-D of length L_i (the row's generated length, EOS included when sampled).

    Attributes:
        prompt_ids: prompt token ids per row (no padding).
        response_ids: generated token ids per row, ``LongTensor[L_i]``.
        logps: log-prob of each generated token under the raw policy (temperature 1, no top-k/p, float32),
            ``FloatTensor[L_i]``. For forced tokens this is the token's natural log-prob.
        entropies: Shannon entropy H_t (nats) of the raw next-token distribution, ``FloatTensor[L_i]``.
        signals: T2PO uncertainty M_t per position (t2po.md §2), ``FloatTensor[L_i]``.
        forced_mask: True where a token hook forced the token, ``BoolTensor[L_i]``.
        texts: decoded responses (special tokens kept except EOS/pad).
        finish_reasons: ``eos``, ``stop`` or ``length`` per row.
        hook_reports: per-row dicts returned by the token hook (turn score, interventions, ...), or {}.
    """

    prompt_ids: list[list[int]]
    response_ids: list[torch.Tensor]
    logps: list[torch.Tensor]
    entropies: list[torch.Tensor]
    signals: list[torch.Tensor]
    forced_mask: list[torch.Tensor]
    texts: list[str]
    finish_reasons: list[str]
    hook_reports: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def num_tokens(self) -> int:
        return int(sum(len(r) for r in self.response_ids))

    def select(self, rows: list[int]) -> Generation:
        """A new Generation with only ``rows`` (in that order)."""
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        return Generation(
            prompt_ids=pick(self.prompt_ids),
            response_ids=pick(self.response_ids),
            logps=pick(self.logps),
            entropies=pick(self.entropies),
            signals=pick(self.signals),
            forced_mask=pick(self.forced_mask),
            texts=pick(self.texts),
            finish_reasons=pick(self.finish_reasons),
            hook_reports=pick(self.hook_reports) if self.hook_reports else [],
        )

    def replace_rows(self, rows: list[int], other: Generation) -> None:
        """Overwrite rows ``rows[j]`` of self with row j of ``other`` (TDS resampling)."""
        if not self.hook_reports and other.hook_reports:
            self.hook_reports = [{} for _ in range(len(self))]
        for j, i in enumerate(rows):
            self.prompt_ids[i] = other.prompt_ids[j]
            self.response_ids[i] = other.response_ids[j]
            self.logps[i] = other.logps[j]
            self.entropies[i] = other.entropies[j]
            self.signals[i] = other.signals[j]
            self.forced_mask[i] = other.forced_mask[j]
            self.texts[i] = other.texts[j]
            self.finish_reasons[i] = other.finish_reasons[j]
            if other.hook_reports:
                self.hook_reports[i] = other.hook_reports[j]


class GenerationEngine(Protocol):
    """What the trainer needs of a rollout engine (``HFEngine`` on CPU, ``VLLMEngine`` on GPU)."""

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams,
        *,
        hook_factory: TokenHookFactory | None = None,
        streams: Sequence[torch.Generator],
        admissible: Sequence[ActionSpace | Sequence[str] | None] | None = None,
    ) -> Generation:
        """One response per prompt, with per-token log-probs, entropies, M_t and forced masks; row i samples
        from its episode's stream ``streams[i]`` (``rollout.streams``)."""
        ...
