"""TDS: turn-level dynamical sampling (t2po.md §5).

At turn t >= 1 an environment i is regenerated while its score barely moved against the **accepted**
score of its previous turn:

    Δ_i = | s_i^t − ŝ_i^{t−1} |        resample i  iff  t >= 1  and  0 < Δ_i < η

Up to ``max_resamples`` batched regenerations of only the rows in the band; Δ is recomputed against the
same ŝ_i^{t−1}; the last sample is accepted (no best-of, no fallback); ŝ_i^t is remembered per
environment id for the next turn.

How the collector calls it, once per turn, after the base generation and before stepping any env::

    scores = sampler.refine(turn, env_ids, base_scores, regenerate,
                            finished=finished_flags, discarded_tokens=count_tokens)

* ``regenerate(positions)`` regenerates the rows at those positions of ``env_ids`` (identical prompts,
  fresh randomness: the attempt index must enter the seed, §5.1), overwrites them in the turn's
  ``Generation`` and returns their new turn scores (``tti.turn_scores(new.hook_reports)``).
* ``discarded_tokens(positions)`` (optional) returns the number of response tokens the rows at those
  positions hold *now*; it is called just before each regeneration, so it counts the tokens of the
  samples about to be discarded (``t2po/tds/extra_gen_tokens``). Without it that metric is not logged.
* ``finished`` (optional) flags envs that are already done. Missing scores (§5.2):
  ``intended``: a missing current or previous score makes the row ineligible at that attempt, and the
  collector should pass only active envs (finished rows passed anyway are never regenerated).
  ``released``: missing scores count as 0 and finished envs are regenerated too (deviation #4): the
  collector generates for every env of the batch and passes ``finished`` so that the metrics still count
  active env-turns only.

``start_episode_batch`` forgets the remembered scores; ``metrics()`` returns and resets the §9 TDS
metrics (keys whose denominator is zero are left out) and ``t2po/tds/eta``, the η in use.

``eta=None`` (``t2po.tds.eta=auto``): at every turn t >= 1, η is recomputed from a window of recent
eligible base Δ, this turn's included, so that a fraction ``target_rate`` of them lies in the band
(``hooks.calibration.eta_for_rate``); ``t2po/tds/eta`` is then the mean η over the step's turns. The
window is the sampler's only cross-step state (``state_dict``/``load_state_dict``, saved in checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from t2po_cli.hooks.base import Regenerate
from t2po_cli.hooks.calibration import RunningWindow, eta_for_rate
from t2po_cli.tracking import keys


@dataclass
class _Tally:
    """TDS counters since the last ``metrics()`` call."""

    eligible: int = 0
    resampled: int = 0
    extra_generations: int = 0
    exhausted: int = 0
    accept_attempts: list[int] = field(default_factory=list)
    deltas: list[float] = field(default_factory=list)
    extra_gen_tokens: int = 0
    tokens_counted: bool = False
    etas: list[float] = field(default_factory=list)


class DynamicalSampler:
    """``TurnHook`` implementing TDS (see the module docstring for the collector contract)."""

    def __init__(
        self,
        eta: float | None = 0.3,
        max_resamples: int = 2,
        compat: str = "intended",
        *,
        target_rate: float = 0.2,
        window: int = 512,
    ) -> None:
        """Args:
        eta: η, the upper edge of the open band 0 < Δ < η (``t2po.tds.eta``); None = self-calibrating.
        max_resamples: extra generations per environment-turn (``t2po.tds.max_resamples``).
        compat: ``intended`` or ``released`` (missing scores and finished envs, §5.2).
        target_rate: with ``eta=None``, the resample rate η is tuned to (``t2po.tds.target_rate``).
        window: with ``eta=None``, recent eligible Δ kept (``t2po.tds.window``).
        """
        if eta is None and compat == "released":
            raise ValueError("a self-calibrating eta is not part of compat=released")
        # With auto, η before the first eligible turn; it only names the starting point (turn 0 never resamples).
        self.eta = 0.0 if eta is None else eta
        self.auto = eta is None
        self.target_rate = target_rate
        self._window = RunningWindow(window) if eta is None else None
        self.max_resamples = max_resamples
        self.released = compat == "released"
        self._previous: dict[int, float | None] = {}
        self._tally = _Tally()

    @property
    def window(self) -> RunningWindow | None:
        """The auto-η window of recent eligible Δ; None for a fixed η."""
        return self._window

    def state_dict(self) -> dict[str, list[float]]:
        """Cross-step state (JSON-serialisable): the auto-η window; empty for a fixed η."""
        return {"eta_window": self._window.state_dict()} if self._window is not None else {}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        """Restore ``state_dict()``'s output (a checkpoint's ``t2po_hooks.tds``)."""
        if self._window is not None:
            self._window.load_state_dict(state.get("eta_window", []))

    def start_episode_batch(self, num_envs: int) -> None:
        """Forget every remembered score: a new rollout of ``num_envs`` environments begins."""
        del num_envs  # env ids are dict keys; nothing is preallocated
        self._previous.clear()

    def delta(self, score: float | None, previous: float | None) -> float | None:
        """Δ = |s − ŝ|, or None when a score is missing (``intended``); ``released`` reads missing as 0."""
        if self.released:
            return abs((score or 0.0) - (previous or 0.0))
        if score is None or previous is None:
            return None
        return abs(score - previous)

    def in_band(self, delta: float | None) -> bool:
        """The §5.1 predicate 0 < Δ < η (Δ = 0 and Δ = η are both outside)."""
        return delta is not None and 0.0 < delta < self.eta

    def refine(
        self,
        turn: int,
        rows: list[int],
        scores: list[float | None],
        regenerate: Regenerate,
        *,
        finished: Sequence[bool] | None = None,
        discarded_tokens: Callable[[list[int]], int] | None = None,
    ) -> list[float | None]:
        """Run the §5.1 procedure for one turn and return the accepted score per row.

        Args:
            turn: 0-based turn index t.
            rows: environment ids (stable across turns) of the batch's rows.
            scores: the base sample's turn score per row.
            regenerate: regenerates rows (positions in ``rows``) and returns their new scores.
            finished: per row, the env is already done (see the module docstring).
            discarded_tokens: per call, the tokens held by the rows about to be regenerated.

        Returns:
            The accepted (last) sample's score per row, also remembered as ŝ^t per env id.
        """
        current = list(scores)
        done = list(finished) if finished is not None else [False] * len(rows)
        if turn >= 1:
            self._resample(rows, current, done, regenerate, discarded_tokens)
        for env_id, score in zip(rows, current, strict=True):
            self._previous[env_id] = score
        return current

    def _resample(
        self,
        rows: list[int],
        current: list[float | None],
        done: list[bool],
        regenerate: Regenerate,
        discarded_tokens: Callable[[list[int]], int] | None,
    ) -> None:
        """Steps 2-4 of §5.1, in place on ``current``; updates the tally."""
        previous = [self._previous.get(env_id) for env_id in rows]
        # Finished envs: skipped (intended) or regenerated but never counted (released, §5.2).
        candidates = [i for i in range(len(rows)) if self.released or not done[i]]
        base = {i: self.delta(current[i], previous[i]) for i in candidates}
        counted = [i for i in candidates if not done[i] and base[i] is not None]
        if self._window is not None and counted:
            # Auto η: this turn's base Δ join the window first, so the rate holds from the very first step.
            self._window.extend(base[i] for i in counted)  # type: ignore[misc]  # counted rows have a Δ
            self.eta = eta_for_rate(self._window.values(), self.target_rate)
        if counted:
            self._tally.etas.append(self.eta)
        band = [i for i in candidates if self.in_band(base[i])]
        attempt_left = dict.fromkeys(counted, 0)
        ever = set(band)
        attempt = 0
        while band and attempt < self.max_resamples:
            if discarded_tokens is not None:
                # Every sample about to be overwritten is discarded, finished envs' included (cost).
                self._tally.extra_gen_tokens += discarded_tokens(band)
                self._tally.tokens_counted = True
            new_scores = regenerate(band)
            if len(new_scores) != len(band):
                raise ValueError(f"regenerate returned {len(new_scores)} scores for {len(band)} rows")
            for i, score in zip(band, new_scores, strict=True):
                current[i] = score
            attempt += 1
            self._tally.extra_generations += sum(1 for i in band if i in attempt_left)
            band = [i for i in band if self.in_band(self.delta(current[i], previous[i]))]
            for i in attempt_left:
                if i in ever and i not in band and attempt_left[i] == 0:
                    attempt_left[i] = attempt
        t = self._tally
        t.eligible += len(counted)
        t.resampled += sum(1 for i in counted if i in ever)
        t.exhausted += sum(1 for i in band if i in attempt_left)
        for i in counted:
            # Left the band at attempt k, or accepted in the band after the last allowed resample.
            t.accept_attempts.append(attempt if i in band else attempt_left[i])
            t.deltas.append(base[i])  # type: ignore[arg-type]  # counted rows have a Δ

    def metrics(self) -> dict[str, float]:
        """The §9 TDS metrics since the last call, then reset.

        Histogram entries ``t2po/tds/accept_attempt_hist/{k}`` are fractions of eligible env-turns.
        """
        t, self._tally = self._tally, _Tally()
        # timing_s/tds is written once, by the collector, around the whole turn hook (scoring included).
        # η of the step: the fixed value, or the mean of the per-turn auto values (the last one before any turn).
        eta = sum(t.etas) / len(t.etas) if t.etas else self.eta
        out: dict[str, float] = {keys.TDS_ELIGIBLE: float(t.eligible), keys.TDS_ETA: eta}
        # Tokens are only known when the collector passes ``discarded_tokens``; with no resample, 0 is exact.
        if t.tokens_counted or t.extra_generations == 0:
            out[keys.TDS_EXTRA_GEN_TOKENS] = float(t.extra_gen_tokens)
        if t.eligible == 0:
            return out
        n = float(t.eligible)
        out[keys.TDS_RESAMPLE_RATE] = t.resampled / n
        out[keys.TDS_RESAMPLES_PER_TURN] = t.extra_generations / n
        out[keys.TDS_EXHAUSTED_RATE] = t.exhausted / n
        for k in range(self.max_resamples + 1):
            out[f"{keys.TDS_ACCEPT_ATTEMPT_HIST}/{k}"] = t.accept_attempts.count(k) / n
        out.update(delta_stats(t.deltas, eta))
        return out


def delta_stats(deltas: Sequence[float], eta: float) -> dict[str, float]:
    """Distribution of the base-sample Δ over eligible env-turns (t2po.md §9).

    Args:
        deltas: Δ per eligible env-turn (non-empty).
        eta: η.

    Returns:
        Mean, p10/p50/p90 (linear interpolation) and the Δ = 0 / 0 < Δ < η / Δ >= η rates.
    """
    d = torch.tensor(list(deltas), dtype=torch.float64)
    q = torch.quantile(d, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    n = float(d.numel())
    return {
        keys.TDS_DELTA_MEAN: float(d.mean()),
        keys.TDS_DELTA_P10: q[0],
        keys.TDS_DELTA_P50: q[1],
        keys.TDS_DELTA_P90: q[2],
        keys.TDS_DELTA_ZERO_RATE: float((d == 0).sum()) / n,
        keys.TDS_DELTA_IN_BAND_RATE: float(((d > 0) & (d < eta)).sum()) / n,
        keys.TDS_DELTA_ABOVE_ETA_RATE: float((d >= eta).sum()) / n,
    }
