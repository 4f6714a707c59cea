"""The IG scoring pass: teacher-forced gold-answer log-probs under π_old (a2tgpo.md §2.1, errata 17-18).

Public API::

    fa  = forced_answer(tokenizer, gold, answer_prefix, answer_suffix)   # ids + gold-span mask (§2.1)
    ell = gold_answer_logprobs(model, context_ids, [fa.ids] * N, pad_id,
                               score_mask=[fa.gold_mask] * N)            # FloatTensor[N], ℓ per context

ℓ = (1/L)·Σ_{j ∈ gold span} log π(x_j | x_<j): the mean gold-token log-prob. One batched forward (optionally
chunked), padding masked out of attention (errata 17: the release attended to left padding, which made IG
depend on the batch). Works with any Hugging Face causal LM that accepts ``attention_mask`` and
``position_ids``. The caller chooses the model's mode (eval, or train with dropout off) so the numerics match
the old-log-prob pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from t2po_cli.algo.a2tgpo import InformationGainError
from t2po_cli.algo.losses import token_logps


def gold_span_mask(offsets: list[tuple[int, int]], start: int, end: int) -> list[bool]:
    """Tokens whose character range overlaps the gold span ``[start, end)`` (§2.1).

    A token that merges the prefix's trailing space or newline with the first gold characters (``" Paris"``,
    ``"\\nParis"``) overlaps the span and belongs to it.

    Args:
        offsets: (char_start, char_end) per token of the forced text.
        start: ``len(answer_prefix)``.
        end: ``len(answer_prefix) + len(gold)``.

    Returns:
        One bool per token.
    """
    return [s < end and e > start and e > s for s, e in offsets]


@dataclass(frozen=True)
class ForcedAnswer:
    """The forced answer text tokenised on its own (no special tokens added, §2.1).

    Attributes:
        ids: token ids of ``answer_prefix + gold + answer_suffix``.
        gold_mask: True for the tokens of the gold span, same length.
    """

    ids: list[int]
    gold_mask: list[bool]


def forced_answer(tokenizer: object, gold: str, prefix: str, suffix: str) -> ForcedAnswer:
    """Tokenise the forced answer and locate the gold span through the offset mapping (§2.1).

    Args:
        tokenizer: a fast Hugging Face tokenizer (offset mapping support).
        gold: the first gold answer string.
        prefix: ``answer_prefix`` (in the ``next_prompt`` layout, with the think-open token prepended).
        suffix: ``answer_suffix`` (ends with the model's end-of-turn token).

    Returns:
        ``ForcedAnswer``.

    Raises:
        InformationGainError: the gold string is empty or covers no token.
    """
    text = prefix + gold + suffix
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # type: ignore[operator]
    mask = gold_span_mask([tuple(o) for o in enc["offset_mapping"]], len(prefix), len(prefix) + len(gold))
    if not any(mask):
        raise InformationGainError(f"gold answer {gold!r} covers no token of the forced text")
    return ForcedAnswer(ids=list(enc["input_ids"]), gold_mask=mask)


def _pack(
    seqs: list[list[int]], pad_id: int, padding_side: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Pad sequences to ``[n, L]``; return ids, attention mask, position ids and each row's start offset."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    pos = torch.zeros((len(seqs), width), dtype=torch.long)
    starts = []
    for i, s in enumerate(seqs):
        off = 0 if padding_side == "right" else width - len(s)
        ids[i, off : off + len(s)] = torch.tensor(s, dtype=torch.long)
        attn[i, off : off + len(s)] = 1
        # Left padding: positions restart at 0 on the first real token, so a row scores as it would alone.
        pos[i, off : off + len(s)] = torch.arange(len(s))
        starts.append(off)
    return ids, attn, pos, starts


@torch.no_grad()
def gold_answer_logprobs(
    model: torch.nn.Module,
    context_ids: list[list[int]],
    answer_ids: list[list[int]],
    pad_id: int,
    score_mask: list[list[bool]] | None = None,
    padding_side: str = "right",
    batch_size: int | None = None,
) -> torch.Tensor:
    """ℓ_i = mean log π(answer tokens | context_i), teacher-forced, padding masked (§2.1, errata 17).

    Args:
        model: a causal LM returning ``.logits`` ``[n, L, V]``.
        context_ids: N contexts (ids, no padding); each non-empty.
        answer_ids: N forced answers (appended to the context ids, never re-tokenised).
        pad_id: padding id (its positions are masked out of attention and of the score).
        score_mask: per answer token, True = scored (the gold span); None scores every answer token.
        padding_side: ``right``, or ``left`` with explicit position ids.
        batch_size: rows per forward; None = all N in one forward.

    Returns:
        ℓ per row, ``FloatTensor[N]`` (float32, on CPU).

    Raises:
        InformationGainError: empty context, no scored token, or a non-finite result (errata 18).
    """
    n = len(context_ids)
    if len(answer_ids) != n or (score_mask is not None and len(score_mask) != n):
        raise InformationGainError("context_ids, answer_ids and score_mask need one entry per row")
    masks = score_mask if score_mask is not None else [[True] * len(a) for a in answer_ids]
    for i in range(n):
        if not context_ids[i] or len(masks[i]) != len(answer_ids[i]) or not any(masks[i]):
            raise InformationGainError(f"row {i}: empty context or no scored answer token")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    device = next(model.parameters()).device
    step = batch_size or n
    out = torch.empty(n)
    for lo in range(0, n, step):
        rows = range(lo, min(n, lo + step))
        seqs = [context_ids[i] + answer_ids[i] for i in rows]
        ids, attn, pos, starts = _pack(seqs, pad_id, padding_side)
        logits = model(
            input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=pos.to(device)
        ).logits
        for j, i in enumerate(rows):
            # Answer token k sits at start + |context| + k and is predicted by the logits one position earlier.
            first = starts[j] + len(context_ids[i])
            sel = torch.tensor([first + k for k, m in enumerate(masks[i]) if m], device=logits.device)
            lp = token_logps(logits[j, sel - 1].unsqueeze(0), ids[j, sel.cpu()].to(logits.device).unsqueeze(0))
            out[i] = lp.mean().float().cpu()
    if not torch.isfinite(out).all():
        raise InformationGainError(f"IG pass produced non-finite log-probs: {out.tolist()}")
    return out
