"""A merged-LoRA copy of the policy for generation, re-merged only when the adapters changed.

Decoding through peft's unmerged LoRA layers costs two extra small matmuls, two dtype casts and a module
dispatch per adapted linear per step (7 × 30 per SmolLM2 step: ~1/3 of the decode step's linear calls,
profiled in issue #18). Generation needs no gradients, so the engine decodes with a plain copy whose
weights are ``W + scaling · B A`` and re-merges only after the adapters moved (an optimiser step, a
checkpoint load): once per update, not per call.

Staleness is detected from the adapters' tensor version counters (``Tensor._version``, bumped by every
in-place write: ``optimizer.step``, ``load_state_dict``, ``copy_``), so no caller has to remember to
invalidate. Memory: one extra copy of the adapted weight matrices in the base dtype (SmolLM2-135M bf16, LoRA
on q,k,v,o,gate,up,down: ~212 MB); the embeddings, norms and biases are shared with the source.

Precision: the merged weight is rounded once to the base dtype. Under a bf16 base a LoRA delta smaller than
half a bf16 ulp of its weight is rounded away in the sampling copy (as when TRL merges adapters into vLLM's
bf16 weights); the update's log-probs (π_old and π_θ) always come from the trainer's unmerged forward, so
this only affects which tokens are sampled, never the loss. Under fp32 the copy matches the unmerged
model to float rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def is_lora_model(model: nn.Module) -> bool:
    """True for a peft model with LoRA adapters (the only kind this module merges)."""
    return hasattr(model, "peft_config") and any(_lora_layers(model))


def _lora_layers(model: nn.Module):
    from peft.tuners.lora import LoraLayer

    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


class MergedSampler:
    """Holds the merged copy of one peft LoRA model.

    Args:
        model: the trainable ``peft.PeftModel`` (single active adapter, LoRA on linear layers).
    """

    def __init__(self, model: nn.Module) -> None:
        self.source = model
        self._layers = list(_lora_layers(model))
        self._adapter = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapter[0]
        self._merged: nn.Module | None = None
        self._targets: list[nn.Linear] = []
        self._version: tuple[int, ...] | None = None

    def _fingerprint(self) -> tuple[int, ...]:
        return tuple(p._version for _, layer in self._layers for p in (
            layer.lora_A[self._adapter].weight, layer.lora_B[self._adapter].weight, layer.base_layer.weight))

    def _build(self) -> None:
        """Deep-copy the peft model and unload its LoRA layers into plain linears (done once).

        Only the adapted weights are copied: every other tensor (embeddings and the tied LM head, norms,
        biases; frozen under LoRA) is shared with the source through deepcopy's memo, which keeps the copy's
        extra memory to the adapted matrices.
        """
        own = {id(layer.base_layer.weight) for _, layer in self._layers}
        shared = {id(t): t for t in (*self.source.parameters(), *self.source.buffers())
                  if id(t) not in own and t.requires_grad is False}
        with torch.no_grad():
            merged = copy.deepcopy(self.source, memo=shared).merge_and_unload()
        merged.eval().requires_grad_(False)
        # peft's names carry a ``base_model.model.`` prefix that merge_and_unload strips.
        self._targets = [merged.get_submodule(name.removeprefix("base_model.model.")) for name, _ in self._layers]
        self._merged = merged

    @torch.no_grad()
    def model(self) -> nn.Module:
        """The merged model, re-merged first if any adapter (or base) weight changed since the last call."""
        if self._merged is None:
            self._build()
        version = self._fingerprint()
        if version != self._version:
            for target, (_, layer) in zip(self._targets, self._layers, strict=True):
                base = layer.base_layer.weight
                delta = layer.get_delta_weight(self._adapter)
                target.weight.copy_((base.float() + delta.float()).to(target.weight.dtype))
            self._version = version
        return self._merged  # type: ignore[return-value]
