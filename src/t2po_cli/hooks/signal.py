"""The per-token uncertainty signal M_t of T2PO (t2po.md §2).

    log p  = log_softmax(z)                 over the full logits width |V|
    c_t    = max_v log p(v)                 top-1 log-prob
    H_t    = −Σ_v p(v) log p(v)             entropy in nats (0·log 0 = 0)
    Ĥ_t    = clip(H_t / ln|V|, 0, 1)
    M_t    = α·c_t + (1 − α)·(1 − Ĥ_t)      higher = more confident, M_t ∈ (−∞, 1 − α]

Computed on the raw logits (before temperature, top-k/p and any forcing) in float32 (errata 1-2). The
normaliser is ln(max(|V|, 2)), as in the release, so a width-1 row gives Ĥ = 0 and M = 1 − α, never NaN.

``released=True`` reproduces the released processor for ``t2po.compat=released``: c_t and H_t are computed
in the logits' dtype (bf16 in the released rollouts, errata 1) and each is then read out as a Python float,
so Ĥ and the mix run in float64. M therefore carries the rounding of c_t and H_t but not the coarser grid of
a bf16 mix (a bf16 M is flat across changes far larger than ε = 1e-4, and can exceed 1 − α). A row with −inf
entries gets a NaN entropy (0·(−inf)), which the released ``max(0, min(1, Ĥ))`` turns into Ĥ = 1, so
M = α·c_t (errata 2: a one-hot row gives 0.0, not 0.4). ``torch.clamp`` propagates NaN, so that clip is
emulated explicitly. The released M is returned in float64: the released stagnation test compares Python
floats, and ``ThinkingIntervention`` compares these values unrounded. The release calls the processor one
row at a time; batched, the float32 sum behind a wide bf16/fp16 row's entropy may accumulate in another
order and round H one ulp apart (as the released kernels themselves do across hardware).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenSignal:
    """Per-row signal of one decoding step; every field is ``FloatTensor[B]``."""

    entropy: torch.Tensor
    """H_t in nats, always the NaN-safe float32 value (it feeds metrics, not the T2PO controls)."""
    top1_logp: torch.Tensor
    """c_t, float32."""
    m: torch.Tensor
    """M_t, float32; float64 under ``released`` (c_t and H_t rounded to the logits dtype, mixed in float64)."""
    logprobs: torch.Tensor
    """``[B, V]`` float32 log-softmax of the raw logits (handed to the engine: the sampled token's log-prob and,
    at temperature 1 without filtering, the sampling weights come from it without a second softmax)."""
    probs: torch.Tensor
    """``[B, V]`` float32, ``exp(logprobs)``."""


def _mix(top1: torch.Tensor, h_norm: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * top1 + (1.0 - alpha) * (1.0 - h_norm)


def token_signal(logits: torch.Tensor, alpha: float = 0.6, *, released: bool = False) -> TokenSignal:
    """Entropy, top-1 log-prob and M_t of the next-token distributions.

    Args:
        logits: raw next-token logits ``[B, V]`` (V = logits width, not tokenizer length).
        alpha: α of the convex mix.
        released: reproduce the released arithmetic for M_t (``t2po.compat=released``): logits dtype and
            the NaN path on −inf entries (module docstring).

    Returns:
        ``TokenSignal`` with ``[B]`` tensors: float32, except ``m`` under ``released`` (float64).
    """
    # ln(max(|V|, 2)) as in the release: a width-1 row would otherwise divide 0 by ln 1 (NaN).
    log_width = math.log(max(logits.shape[-1], 2))
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    # 0·log 0 = 0: where p underflows to 0 (or the logit is −inf) the term contributes nothing (errata 2).
    entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)
    top1 = logp.max(dim=-1).values
    if not released:
        m = _mix(top1, (entropy / log_width).clamp(0.0, 1.0), alpha)
        return TokenSignal(entropy=entropy, top1_logp=top1, m=m, logprobs=logp, probs=p)

    # Released arithmetic: c_t and H_t in the logits' dtype, plain p·log p (NaN on −inf entries). The release
    # then takes ``.item()`` of each and mixes Python floats, i.e. Ĥ, the clip and the mix run in float64.
    logp_r = logp if logits.dtype == torch.float32 else torch.log_softmax(logits, dim=-1)
    top1_r = logp_r.max(dim=-1).values.double()
    entropy_r = (-(logp_r.exp() * logp_r).sum(dim=-1)).double()
    h_norm_r = entropy_r / log_width
    # The released clip maps a NaN entropy to Ĥ = 1 (errata 2); torch.clamp alone would keep NaN.
    h_norm_r = torch.where(torch.isnan(h_norm_r), torch.ones_like(h_norm_r), h_norm_r.clamp(0.0, 1.0))
    m = _mix(top1_r, h_norm_r, alpha)
    return TokenSignal(entropy=entropy, top1_logp=top1, m=m, logprobs=logp, probs=p)
