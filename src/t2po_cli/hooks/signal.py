"""The per-token uncertainty signal M_t of T2PO (t2po.md §2).

    log p  = log_softmax(z)                 over the full logits width |V|
    c_t    = max_v log p(v)                 top-1 log-prob
    H_t    = −Σ_v p(v) log p(v)             entropy in nats (0·log 0 = 0)
    Ĥ_t    = clip(H_t / ln|V|, 0, 1)
    M_t    = α·c_t + (1 − α)·(1 − Ĥ_t)      higher = more confident, M_t ∈ (−∞, 1 − α]

Computed on the raw logits (before temperature, top-k/p and any forcing) in float32 (errata 1-2). The
released code computed it in the logits' dtype and let −inf produce NaN entropy; ``released=True``
reproduces that for reproduction studies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenSignal:
    """Per-row signal of one decoding step; every field is ``FloatTensor[B]``."""

    entropy: torch.Tensor
    top1_logp: torch.Tensor
    m: torch.Tensor


def token_signal(logits: torch.Tensor, alpha: float = 0.6, *, released: bool = False) -> TokenSignal:
    """Entropy, top-1 log-prob and M_t of the next-token distributions.

    Args:
        logits: raw next-token logits ``[B, V]`` (V = logits width, not tokenizer length).
        alpha: α of the convex mix.
        released: compute in the logits' dtype without NaN protection (``t2po.compat=released``).

    Returns:
        ``TokenSignal`` with ``[B]`` float32 tensors (logits dtype when ``released``).
    """
    width = logits.shape[-1]
    z = logits if released else logits.float()
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    if released:
        plogp = p * logp
    else:
        # 0·log 0 = 0: where p underflows to 0 (or the logit is −inf) the term contributes nothing.
        plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    entropy = -plogp.sum(dim=-1)
    top1 = logp.max(dim=-1).values
    h_norm = (entropy / math.log(width)).clamp(0.0, 1.0)
    m = alpha * top1 + (1.0 - alpha) * (1.0 - h_norm)
    return TokenSignal(entropy=entropy, top1_logp=top1, m=m)
