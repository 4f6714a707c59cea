"""TTI: the token-level thinking intervention and the turn score (t2po.md §3, §4).

``ThinkingIntervention`` implements ``hooks.base.TokenHook`` for one batched generate call:

* ``step(signal, active)`` runs the §3.3 step rule on M_t and returns ``LongTensor[B]`` with the
  ``</think>`` id for rows to force and -1 elsewhere. The engine emits that token with probability 1 and
  marks it forced; the signal of that step came from the raw logits (§2).
* ``observe(token_ids, active)`` updates the think state from the generated tokens only (§3.2).
* ``end()`` returns one report per row (``RowReport`` keys below) with the turn score of §4.1.

Two semantics (``compat``):

* ``intended``: per-row ``last``/``count`` and a fresh running-mean turn score per call. ``step`` is a
  handful of torch ops on ``[B]`` tensors, no host sync (it sits in the decode loop's hot path).
* ``released``: one global ``(last, count)`` slot updated over the running rows in ascending batch order
  and carried across steps and calls (§3.7), and the never-reset fingerprint recorder of §4.2. That
  state lives in ``ReleasedState``, owned by ``ThinkHookFactory`` so it persists across generate calls.

Report keys per row: ``turn_score`` (float | None), ``interventions`` (list of ``(position, kind,
think_len)``, kind ``budget`` or ``stagnation``), ``forced`` ({kind: count}), ``think_tokens``,
``has_think``, ``unclosed_think``, ``generated_len``, ``tokens_saved_upper`` (§9).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from t2po_cli.errors import ConfigError
from t2po_cli.hooks.calibration import TauCalibrator

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
BUDGET = "budget"
STAGNATION = "stagnation"
# Released recorder key: a fingerprint of the first 32 generated ids (t2po.md §4.2).
FINGERPRINT_TOKENS = 32
_KIND_NAMES = {1: BUDGET, 2: STAGNATION}


def resolve_think_ids(tokenizer: Any) -> tuple[int, int]:
    """The ``<think>`` and ``</think>`` ids of a tokenizer (t2po.md §3.1).

    Args:
        tokenizer: a ``transformers`` tokenizer or a ``tokenizers.Tokenizer`` (anything whose
            ``encode(text, add_special_tokens=False)`` gives a list of ids or an object with ``.ids``).

    Returns:
        ``(open_id, close_id)``.

    Raises:
        ConfigError: either tag is not exactly one token.
    """
    ids: list[list[int]] = []
    for tag in (THINK_OPEN, THINK_CLOSE):
        encoded = tokenizer.encode(tag, add_special_tokens=False)
        tag_ids = list(getattr(encoded, "ids", encoded))
        if len(tag_ids) != 1:
            raise ConfigError(
                f"t2po needs {tag} to be a single token, but the tokenizer splits it into {tag_ids}; "
                f"add {THINK_OPEN} and {THINK_CLOSE} as special tokens or set t2po.tti.enabled=false"
            )
        ids.append(tag_ids)
    return ids[0][0], ids[1][0]


@dataclass(frozen=True)
class TTIParams:
    """Settings of the token hook (t2po.md §6); built by ``hooks.factory.build_hooks``."""

    think_ids: tuple[int, int] | None
    """``(open_id, close_id)``; None when the tokenizer has no think tags (then TTI must be off)."""
    max_response_tokens: int
    """Per-turn response budget (for ``tokens_saved_upper``, §9)."""
    tti_enabled: bool = True
    """False: compute the turn score only (TDS alone) and never force."""
    tau: float = 1e-4
    """τ (``t2po.tti.tau``): a step with |M_t − M_{t−1}| <= τ counts towards ``patience``."""
    patience: int | None = 20
    max_think_tokens: int | None = None
    skip_tokens: int = 33
    """K of the turn score (§4.1)."""
    compat: str = "intended"

    def __post_init__(self) -> None:
        if self.tti_enabled and self.think_ids is None:
            raise ConfigError(
                "t2po.tti.enabled=true needs the tokenizer's <think>/</think> ids; "
                "resolve them with resolve_think_ids or set t2po.tti.enabled=false"
            )

    @property
    def released(self) -> bool:
        return self.compat == "released"


@dataclass
class ReleasedState:
    """Worker-level state of ``compat=released`` that outlives generate calls (t2po.md §3.7, §4.2)."""

    last: float | None = None
    """The single shared ``last`` slot."""
    count: int = 0
    """The single shared stagnation counter."""
    recorder: dict[tuple[int, ...], list[float]] = field(default_factory=dict)
    """Insertion-ordered ``fingerprint -> [sum of M records, number of records]``, never cleared. A
    running sum replaces the released list of records: the mean over all records is the same."""


class ThinkingIntervention:
    """TokenHook for one generate call (see the module docstring)."""

    def __init__(
        self,
        params: TTIParams,
        released_state: ReleasedState | None = None,
        *,
        tau: float | None = None,
        calibrator: TauCalibrator | None = None,
    ) -> None:
        """Args:
        params: hook settings.
        released_state: shared worker state; required when ``params.compat == "released"``.
        tau: τ of this call (``t2po.tti.tau=auto``: the calibrator's current value); None = ``params.tau``.
        calibrator: receives this call's per-token |ΔM| at ``end()`` (training calls with ``tau=auto``).
        """
        if params.released and released_state is None:
            raise ValueError("compat=released needs the worker's ReleasedState (use ThinkHookFactory)")
        self.params = params
        self.released_state = released_state
        self.tau = params.tau if tau is None else tau
        self.calibrator = calibrator
        self._batch_size = 0

    # ------------------------------------------------------------------ protocol
    def begin(self, batch_size: int, in_think_at_start: torch.Tensor) -> None:
        """Reset the per-row state for a call of ``batch_size`` rows.

        Args:
            batch_size: B.
            in_think_at_start: ``BoolTensor[B]``; True rows start inside ``<think>`` with think_len 0
                (a template that pre-inserts ``<think>``, §3.2).
        """
        dev = in_think_at_start.device
        b = batch_size
        self._batch_size = b
        self._in_think = in_think_at_start.to(dev, torch.bool).clone()
        self._has_think = self._in_think.clone()
        self._think_len = torch.zeros(b, dtype=torch.long, device=dev)
        self._think_tokens = torch.zeros(b, dtype=torch.long, device=dev)
        self._gen_len = torch.zeros(b, dtype=torch.long, device=dev)
        self._last = torch.zeros(b, dtype=torch.float32, device=dev)
        self._has_last = torch.zeros(b, dtype=torch.bool, device=dev)
        self._count = torch.zeros(b, dtype=torch.long, device=dev)
        # Running sum/count of M_j for j >= K (§4.1); float64 so long responses do not drift.
        self._score_sum = torch.zeros(b, dtype=torch.float64, device=dev)
        self._score_cnt = torch.zeros(b, dtype=torch.long, device=dev)
        self._no_force = torch.full((b,), -1, dtype=torch.long, device=dev)
        close_id = self.params.think_ids[1] if self.params.think_ids is not None else -1
        self._close = torch.full((b,), close_id, dtype=torch.long, device=dev)
        self._none = torch.zeros(b, dtype=torch.bool, device=dev)
        # Per-step (kind, position, think_len) snapshots, stacked in end(): no host sync per step.
        self._kinds: list[torch.Tensor] = []
        self._positions: list[torch.Tensor] = []
        self._think_lens: list[torch.Tensor] = []
        # |M_t − M_{t−1}| per step and its validity mask, kept only to feed the τ calibrator.
        self._abs_diffs: list[torch.Tensor] = []
        self._diff_masks: list[torch.Tensor] = []
        if self.params.released:
            self._prefix = torch.full((b, FINGERPRINT_TOKENS), -1, dtype=torch.long, device=dev)

    def step(self, signal: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Apply the §3.3 step rule to every active row.

        Args:
            signal: ``FloatTensor[B]``, M_t from the raw logits (float64 under ``compat=released``).
            active: ``BoolTensor[B]``, rows still generating.

        Returns:
            ``LongTensor[B]``: the ``</think>`` id where a row is forced, -1 elsewhere.
        """
        position = self._gen_len  # j of this step: tokens generated so far
        # Turn score: running mean over positions j >= K, forced steps included (§4.1).
        record = active & (position >= self.params.skip_tokens)
        # In-place adds and scalar ``where`` operands: this runs every decode step, and on CPU each small op
        # costs microseconds (issue #18: the hook's overhead must stay within noise on the tiny model).
        self._score_sum.add_(torch.where(record, signal.double(), 0.0))
        self._score_cnt.add_(record)
        if not self.params.tti_enabled:
            return self._no_force
        if self.params.released:
            kind = self._step_released(signal, active)
        else:
            kind = self._step_intended(signal, active)
        self._kinds.append(kind)
        self._positions.append(position.clone())
        self._think_lens.append(self._think_len.clone())
        return torch.where(kind > 0, self._close, self._no_force)

    def observe(self, token_ids: torch.Tensor, active: torch.Tensor) -> None:
        """Update the think state with this step's tokens (sampled or forced).

        Args:
            token_ids: ``LongTensor[B]``, the token each row emitted at this step.
            active: ``BoolTensor[B]``, the rows that emitted a token at this step (the step's mask).
        """
        if self.params.released:
            slot = self._gen_len.clamp(max=FINGERPRINT_TOKENS - 1).unsqueeze(1)
            take = (active & (self._gen_len < FINGERPRINT_TOKENS)).unsqueeze(1)
            current = self._prefix.gather(1, slot)
            self._prefix.scatter_(1, slot, torch.where(take, token_ids.unsqueeze(1), current))
        self._gen_len = self._gen_len + active  # a new tensor: step() kept the old one as this step's position
        if self.params.think_ids is None:
            return
        open_id, close_id = self.params.think_ids
        is_open = active & (token_ids == open_id)
        is_close = active & (token_ids == close_id)
        inside = active & self._in_think & ~(is_open | is_close)
        # think_len counts tokens after the last <think> (§3.2); think_tokens sums the block contents.
        self._think_tokens.add_(inside)
        self._think_len = torch.where(is_open, 0, self._think_len + inside)
        self._in_think = (self._in_think | is_open) & ~is_close
        self._has_think |= is_open

    def end(self) -> list[dict[str, Any]]:
        """Finish the call.

        Returns:
            One report dict per row (module docstring for the keys).
        """
        scores = self._released_scores() if self.params.released else self._intended_scores()
        if self.calibrator is not None and self._abs_diffs:
            diffs = torch.stack(self._abs_diffs)[torch.stack(self._diff_masks)]  # [T, B] -> valid entries
            self.calibrator.observe(diffs.tolist())
        interventions = self._interventions()
        gen_len = self._gen_len.tolist()
        think_tokens = self._think_tokens.tolist()
        has_think = self._has_think.tolist()
        unclosed = self._in_think.tolist()
        reports = []
        for i in range(self._batch_size):
            events = interventions[i]
            reports.append(
                {
                    "turn_score": scores[i],
                    "interventions": events,
                    "forced": {kind: sum(1 for e in events if e[1] == kind) for kind in (BUDGET, STAGNATION)},
                    "think_tokens": think_tokens[i],
                    "has_think": has_think[i],
                    "unclosed_think": unclosed[i],
                    "generated_len": gen_len[i],
                    "tau": self.tau,
                    "tokens_saved_upper": sum(
                        self._saved_upper(pos, tl) for pos, kind, tl in events if kind == STAGNATION
                    ),
                }
            )
        return reports

    # ------------------------------------------------------------------ step rules
    def _step_intended(self, signal: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Per-row §3.3 rule, vectorised. Returns the kind per row: 0 none, 1 budget, 2 stagnation."""
        p = self.params
        # Step 2: reset unless |M_t − last| <= ε (a change of exactly ε counts as "no change").
        diff = (signal - self._last).abs()
        if self.calibrator is not None:
            self._abs_diffs.append(diff)
            self._diff_masks.append(active & self._has_last)
        changed = ~self._has_last | (diff > self.tau)
        count = torch.where(changed, 0, self._count + 1)
        self._count = torch.where(active, count, self._count)
        self._last = torch.where(active, signal.float(), self._last)
        self._has_last |= active
        # Step 3: budget; it skips step 4 and leaves count untouched.
        if p.max_think_tokens is not None:
            budget = active & self._in_think & (self._think_len >= p.max_think_tokens)
        else:
            budget = self._none
        # Step 4: stagnation forces only inside <think>, and resets the counter either way.
        if p.patience is None:
            return budget.to(torch.int8)
        stalled = active & ~budget & (self._count >= p.patience)
        self._count = torch.where(stalled, 0, self._count)
        # budget and stagnation exclude each other (stalled needs ~budget): kind 2 where stagnating, else 0/1.
        return torch.where(stalled & self._in_think, 2, budget.to(torch.int8))

    def _step_released(self, signal: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """§3.7: one global (last, count) slot, updated over running rows in ascending batch order.

        The slot is inherently sequential (a reset on one row changes the next row's count), so this
        is a Python loop; it only runs under ``compat=released``.
        """
        p, state = self.params, self.released_state
        assert state is not None
        # Python floats, as in the release; the released signal is float64 (hooks/signal.py), so the
        # ε test sees the release's values, not float32-rounded ones.
        values = signal.tolist()
        rows = active.nonzero().flatten().tolist()
        in_think = self._in_think.tolist()
        think_len = self._think_len.tolist()
        kind = [0] * self._batch_size
        for i in rows:
            m = values[i]
            if state.last is None or abs(m - state.last) > self.tau:
                state.count = 0
            else:
                state.count += 1
            state.last = m
            if in_think[i] and p.max_think_tokens is not None and think_len[i] >= p.max_think_tokens:
                kind[i] = 1
                continue
            if p.patience is not None and state.count >= p.patience:
                kind[i] = 2 if in_think[i] else 0
                state.count = 0
        return torch.tensor(kind, dtype=torch.int8, device=signal.device)

    # ------------------------------------------------------------------ end-of-call helpers
    def _intended_scores(self) -> list[float | None]:
        """§4.1: mean of M_j over j >= K; None when L <= K."""
        sums, counts = self._score_sum.tolist(), self._score_cnt.tolist()
        return [s / c if c > 0 else None for s, c in zip(sums, counts, strict=True)]

    def _released_scores(self) -> list[float | None]:
        """§4.2: merge this call's records into the worker recorder, then read only its first B keys.

        Keys are inserted in ascending row order, which is the release's order: every row of a call
        reaches position K at the same decoding step.
        """
        state = self.released_state
        assert state is not None
        sums, counts = self._score_sum.tolist(), self._score_cnt.tolist()
        gen_len = self._gen_len.tolist()
        keys: list[tuple[int, ...] | None] = []
        for i, prefix in enumerate(self._prefix.tolist()):
            if counts[i] == 0 or gen_len[i] < FINGERPRINT_TOKENS:
                keys.append(None)  # no record, no key (responses of <= K tokens)
                continue
            key = tuple(prefix)
            entry = state.recorder.setdefault(key, [0.0, 0])
            entry[0] += sums[i]
            entry[1] += counts[i]
            keys.append(key)
        readable = set()
        for n, key in enumerate(state.recorder):
            if n >= self._batch_size:
                break
            readable.add(key)
        out: list[float | None] = []
        for key in keys:
            if key is None or key not in readable:
                out.append(0.0)
            else:
                total, n_rec = state.recorder[key]
                out.append(total / n_rec)
        return out

    def _interventions(self) -> list[list[tuple[int, str, int]]]:
        """Per row, ``(position, kind, think_len)`` of every forced step, in order."""
        per_row: list[list[tuple[int, str, int]]] = [[] for _ in range(self._batch_size)]
        if not self._kinds:
            return per_row
        kinds = torch.stack(self._kinds)  # [T, B]
        hits = kinds.nonzero().tolist()  # (t, row), t-major: chronological per row
        if not hits:
            return per_row
        positions = torch.stack(self._positions)
        think_lens = torch.stack(self._think_lens)
        for t, row in hits:
            per_row[row].append((int(positions[t, row]), _KIND_NAMES[int(kinds[t, row])], int(think_lens[t, row])))
        return per_row

    def _saved_upper(self, position: int, think_len: int) -> int:
        """§9 upper bound on tokens one stagnation intervention saved: the think block could have run
        to the think budget, and the response to its own budget (``position`` tokens already spent)."""
        room = self.params.max_response_tokens - position
        if self.params.max_think_tokens is not None:
            room = min(room, self.params.max_think_tokens - think_len)
        return max(room, 0)


class ThinkHookFactory:
    """Hands the engine one ``ThinkingIntervention`` per generate call.

    Under ``compat=released`` every hook it makes shares one ``ReleasedState`` (the released processor
    is one object per rollout worker, §3.7/§4.2), so build one factory per worker and keep it for the
    whole run. Under ``intended`` each hook starts fresh.
    """

    def __init__(
        self,
        params: TTIParams,
        released_state: ReleasedState | None = None,
        *,
        calibrator: TauCalibrator | None = None,
        learn: bool = True,
    ) -> None:
        """Args:
        params: hook settings.
        released_state: share the released state with another factory (train and validation run on
            the same worker in the release); a new one is made when None.
        calibrator: ``t2po.tti.tau=auto``: every hook uses ``calibrator.value()`` as τ (validation shares
            the training factory's calibrator).
        learn: feed this factory's calls' |ΔM| to the calibrator (training only, so validation does not
            move τ and a resumed run sees the same τ).
        """
        self.params = params
        self.released_state = (released_state or ReleasedState()) if params.released else None
        self.calibrator = calibrator
        self.learn = learn

    def __call__(self) -> ThinkingIntervention:
        if self.calibrator is None:
            return ThinkingIntervention(self.params, self.released_state)
        return ThinkingIntervention(self.params, self.released_state, tau=self.calibrator.value(),
                                    calibrator=self.calibrator if self.learn else None)

    def state_dict(self) -> dict[str, list[float]]:
        """Cross-step state (JSON-serialisable): the auto-τ window; empty for a fixed τ."""
        return {"tau_window": self.calibrator.window.state_dict()} if self.calibrator is not None else {}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        """Restore ``state_dict()``'s output (a checkpoint's ``t2po_hooks.tti``)."""
        if self.calibrator is not None:
            self.calibrator.window.load_state_dict(state.get("tau_window", []))


def turn_scores(reports: Sequence[dict[str, Any]]) -> list[float | None]:
    """The ``turn_score`` of each report (the value a TDS ``Regenerate`` callback returns)."""
    return [r["turn_score"] for r in reports]
