"""Pack turn rows into padded tensors for the teacher-forced training forward.

Each row is laid out as ``[left pad | prompt | response | right pad]`` with every prompt ending at the same
column P. Response tokens then occupy columns P … P+L_max−1 for every row, so one forward with
``logits_to_keep = L_max + 1`` yields exactly the logits that predict response tokens: this avoids
materialising ``[B, T, V]`` logits over the (long) prompts (model.md §7.5). Positions come from the attention
mask (``cumsum − 1``), so left padding does not shift them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class PackedBatch:
    """A micro-batch ready for the forward.

    Attributes:
        input_ids: ``LongTensor[B, P + L]``.
        attention_mask: ``LongTensor[B, P + L]`` (1 = real token).
        position_ids: ``LongTensor[B, P + L]``.
        response_ids: ``LongTensor[B, L]`` (pad where absent).
        response_mask: ``BoolTensor[B, L]``: True on real response tokens.
        prompt_len: P, the common prompt end column.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    prompt_len: int

    @property
    def response_len(self) -> int:
        return int(self.response_ids.shape[1])


def pack_rows(
    prompts: Sequence[Sequence[int]], responses: Sequence[torch.Tensor], pad_id: int
) -> PackedBatch:
    """Pack (prompt ids, response ids) pairs.

    Args:
        prompts: B prompt id lists (non-empty).
        responses: B ``LongTensor[L_i]`` (may be empty).
        pad_id: padding token id.

    Returns:
        ``PackedBatch`` with P = max prompt length and L = max(1, max response length).
    """
    b = len(prompts)
    p_len = max(len(p) for p in prompts)
    r_len = max(1, max(int(r.numel()) for r in responses))
    ids = torch.full((b, p_len + r_len), pad_id, dtype=torch.long)
    mask = torch.zeros((b, p_len + r_len), dtype=torch.long)
    resp = torch.full((b, r_len), pad_id, dtype=torch.long)
    resp_mask = torch.zeros((b, r_len), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        n = int(r.numel())
        ids[i, p_len - len(p) : p_len] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, p_len - len(p) : p_len + n] = 1
        if n:
            ids[i, p_len : p_len + n] = r
            resp[i, :n] = r
            resp_mask[i, :n] = True
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return PackedBatch(ids, mask, positions, resp, resp_mask, p_len)


def response_logits(
    model: torch.nn.Module, batch: PackedBatch, *, want_hidden: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits that predict each response token, ``[B, L, V]``, and optionally the hidden state of the last
    prompt token, ``[B, H]`` (the PPO value head reads the state the turn was generated from)."""
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=batch.response_len + 1,
        use_cache=False,
        output_hidden_states=want_hidden,
    )
    # logits_to_keep = L+1 keeps columns P-1 … P+L-1; column P-1+t predicts response token t.
    hidden = out.hidden_states[-1][:, batch.prompt_len - 1, :] if want_hidden else None
    return out.logits[:, :-1, :], hidden


def micro_batches(indices: list[int], size: int) -> list[list[int]]:
    """Split row indices into consecutive chunks of at most ``size``."""
    return [indices[i : i + size] for i in range(0, len(indices), size)]
