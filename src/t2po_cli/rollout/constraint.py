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
text before it and the text after it nothing is constrained, unless the row also has a word list
(``trainer.constrained_queries``): then the free text is a space-separated sequence of those words (the
task instruction's words, the action space the random baseline searches in).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

OPEN_TAG = "<action>"
CLOSE_TAG = "</action>"
PLACEHOLDER = "<your query>"


@dataclass(frozen=True)
class ActionSpace:
    """One row's admissible actions and, optionally, the words its placeholder free text may use."""

    actions: tuple[str, ...]
    query_words: tuple[str, ...] | None = None

    @classmethod
    def of(cls, value: ActionSpace | Sequence[str]) -> ActionSpace:
        """Accept a plain list of action strings as an ActionSpace without word restriction."""
        return value if isinstance(value, ActionSpace) else cls(tuple(value))


_WORD = re.compile(r"[a-z0-9][a-z0-9\-.']*[a-z0-9]|[a-z0-9]")


def instruction_words(instruction: str) -> list[str]:
    """The distinct lower-cased words of a task instruction, in order (punctuation dropped)."""
    return list(dict.fromkeys(_WORD.findall(instruction.lower())))


def _word_continuations(body: str, words: Sequence[str], tail: str) -> list[str]:
    """Remainders of free text ``body`` restricted to ``words``: finish the current word, then a space and
    another word, or the ``tail`` (the action's closing text)."""
    partial = body[body.rfind(" ") + 1:]
    out: list[str] = []
    for w in words:
        if w.startswith(partial):
            rest = w[len(partial):]
            out.append(rest + tail)
            out.extend(f"{rest} {w2}" for w2 in words)
    return out


def allowed_continuations(prefix: str, admissible: Sequence[str], close: str = CLOSE_TAG,
                          words: Sequence[str] | None = None) -> list[str] | None:
    """The strings the text after ``<action>`` may still become, given what was generated so far.

    Args:
        prefix: the text generated after the open ``<action>`` tag.
        admissible: the env's admissible action strings for this state.
        close: the closing tag that must follow the action.
        words: if given, the free text of a placeholder action is restricted to these words.

    Returns:
        The remainders ``r`` such that ``prefix + r`` is a complete admissible action followed by ``close``
        (inside a word-restricted placeholder: the current word finished, then a space and one more word, or
        the closing text); a token may be sampled when its text is a non-empty prefix of some remainder.
        ``None`` when the row is inside an unrestricted placeholder (free text), or when ``prefix`` already
        left every admissible action (the model strayed before the constraint could act, e.g. a multi-token
        open tag); then nothing is masked.
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
        if not prefix.startswith(head):
            if head.startswith(prefix):
                remainders.append(head[len(prefix):])
        else:
            body = prefix[len(head):]
            end = body.find(tail[0]) if tail else -1
            if end < 0:
                if words is None:
                    return None  # inside the free text
                remainders.extend(_word_continuations(body, words, tail))
                continue
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
        self._spaces: list[ActionSpace | None] = []
        self._texts: list[str] = []

    def begin(self, spaces: Sequence[ActionSpace | Sequence[str] | None], prompt_tails: Sequence[str]) -> None:
        """Start a call: ``spaces[i]`` is row i's action space (None = unconstrained); ``prompt_tails[i]`` is
        the generation prefix's text after the last turn start (it may already hold an open ``<action>``)."""
        self._spaces = [ActionSpace.of(a) if a is not None else None for a in spaces]
        self._texts = list(prompt_tails)

    def mask(self, active: torch.Tensor) -> torch.Tensor | None:
        """``BoolTensor[B, V]`` of allowed tokens (all True for unconstrained rows), or None if no row is
        constrained at this step."""
        out: torch.Tensor | None = None
        for i, (space, live) in enumerate(zip(self._spaces, active.tolist(), strict=True)):
            if space is None or not live:
                continue
            text = self._texts[i]
            start = text.rfind(OPEN_TAG)
            if start < 0 or text.rfind(CLOSE_TAG) > start:
                continue
            remainders = allowed_continuations(text[start + len(OPEN_TAG):], space.actions,
                                               words=space.query_words)
            if remainders is None:
                continue
            ids = self._ids_for(remainders)
            if not ids:
                continue
            if out is None:
                out = torch.ones((len(self._spaces), self.width), dtype=torch.bool)
            out[i] = False
            out[i, ids] = True
        return out

    def observe(self, chosen: Sequence[int]) -> None:
        """Append the tokens chosen at this step to the rows' texts."""
        for i, tok in enumerate(chosen):
            if self._spaces[i] is not None and 0 <= tok < len(self.pieces):
                self._texts[i] += self.pieces[tok]

    def _ids_for(self, remainders: list[str]) -> list[int]:
        ids: set[int] = set()
        for r in remainders:
            for k in range(1, min(len(r), self.max_piece) + 1):
                ids.update(self.by_piece.get(r[:k], ()))
        return sorted(ids)
