"""Admissible-action decoding: keep the text inside ``<action>…</action>`` on the env's admissible list.

An optional logits mask for the rollout engines (``trainer.constrained_actions``). While a row is inside an
open ``<action>`` tag, only tokens whose text continues one of the row's admissible action strings (and then
the closing tag) may be sampled. Everything else (the thought, the tags, free text) is sampled as usual.

Why it exists: the env gives the list (WebShop's clickables, ALFWorld's admissible commands) and the policy's
job is to *choose* among them. A large model copies a listed string for free; the CPU-default tiny model
(0.66M parameters) cannot copy a 10-character product id at all (``bench/copy_probe.py``: 2.5 nats per token
on the bare copy task, exact-copy probability ~1e-11), so without this its WebShop clicks never name a real
product. With it, the choice among admissible actions is still the policy's (its own probabilities,
renormalised over the allowed tokens); only the spelling is guaranteed.

Log-probs: the engines record every token's log-prob under the *unmasked* raw distribution, exactly as for
tokens forced by the thinking intervention, so the update's teacher-forced log-probs match the rollout's.

A placeholder in an admissible string (WebShop's ``search[<your query>]``) stands for free text: between the
text before it and the text after it nothing is constrained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

OPEN_TAG = "<action>"
CLOSE_TAG = "</action>"
PLACEHOLDER = "<your query>"


def allowed_continuations(prefix: str, admissible: Sequence[str], close: str = CLOSE_TAG) -> list[str] | None:
    """The strings the text after ``<action>`` may still become, given what was generated so far.

    Args:
        prefix: the text generated after the open ``<action>`` tag.
        admissible: the env's admissible action strings for this state.
        close: the closing tag that must follow the action.

    Returns:
        The remainders ``r`` such that ``prefix + r`` is a complete admissible action followed by ``close``;
        a token may be sampled when its text is a non-empty prefix of some remainder. ``None`` when the row is
        inside a placeholder (free text) or when ``prefix`` already left every admissible action (the model
        strayed before the constraint could act, e.g. a multi-token open tag); then nothing is masked.
    """
    remainders: list[str] = []
    for action in admissible:
        cut = action.find(PLACEHOLDER)
        if cut < 0:
            full = action + close
            if full.startswith(prefix):
                remainders.append(full[len(prefix):])
            continue
        head, tail = action[:cut], action[cut + len(PLACEHOLDER):] + close
        if head.startswith(prefix):
            remainders.append(head[len(prefix):])
        elif prefix.startswith(head):
            body = prefix[len(head):]
            end = body.find(tail[0]) if tail else -1
            if end < 0:
                return None  # inside the free text
            done = body[end:]
            if tail.startswith(done):
                remainders.append(tail[len(done):])
    remainders = [r for r in remainders if r]
    return remainders or None


class ActionConstraint:
    """Builds per-step token masks for a batch of rows with per-row admissible lists.

    One instance per tokenizer (the piece table is built once); ``begin`` starts a generate call.

    Args:
        tokenizer: the policy's tokenizer.
        vocab_width: the logits width V (may exceed ``len(tokenizer)`` for padded LM heads).
    """

    def __init__(self, tokenizer, vocab_width: int) -> None:
        n = min(len(tokenizer), vocab_width)
        self.width = vocab_width
        self.pieces = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
        self.by_piece: dict[str, list[int]] = {}
        for i, p in enumerate(self.pieces):
            if p and "\ufffd" not in p:
                self.by_piece.setdefault(p, []).append(i)
        self.max_piece = max((len(p) for p in self.by_piece), default=1)
        self._rows: list[Sequence[str] | None] = []
        self._texts: list[str] = []

    def begin(self, admissible: Sequence[Sequence[str] | None], prompt_tails: Sequence[str]) -> None:
        """Start a call: ``admissible[i]`` is row i's list (None = unconstrained); ``prompt_tails[i]`` is the
        generation prefix's text after the last turn start (it may already hold an open ``<action>``)."""
        self._rows = list(admissible)
        self._texts = list(prompt_tails)

    def mask(self, active: torch.Tensor) -> torch.Tensor | None:
        """``BoolTensor[B, V]`` of allowed tokens (all True for unconstrained rows), or None if no row is
        constrained at this step."""
        out: torch.Tensor | None = None
        for i, allowed in enumerate(self._rows):
            if allowed is None or not bool(active[i]):
                continue
            text = self._texts[i]
            start = text.rfind(OPEN_TAG)
            if start < 0 or text.rfind(CLOSE_TAG) > start:
                continue
            remainders = allowed_continuations(text[start + len(OPEN_TAG):], allowed)
            if remainders is None:
                continue
            ids = self._ids_for(remainders)
            if not ids:
                continue
            if out is None:
                out = torch.ones((len(self._rows), self.width), dtype=torch.bool)
            out[i] = False
            out[i, ids] = True
        return out

    def observe(self, chosen: Sequence[int]) -> None:
        """Append the tokens chosen at this step to the rows' texts."""
        for i, tok in enumerate(chosen):
            if self._rows[i] is not None and 0 <= tok < len(self.pieces):
                self._texts[i] += self.pieces[tok]

    def _ids_for(self, remainders: list[str]) -> list[int]:
        ids: set[int] = set()
        for r in remainders:
            for k in range(1, min(len(r), self.max_piece) + 1):
                ids.update(self.by_piece.get(r[:k], ()))
        return sorted(ids)
