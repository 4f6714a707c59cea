"""Self-calibrating T2PO thresholds: ``t2po.tds.eta=auto`` and ``t2po.tti.tau=auto`` (issue #17).

At CPU scale the paper's fixed thresholds misfire: on ALFWorld almost every eligible turn has
0 < Δ < η = 0.3 (t2po.md §5.3), so TDS regenerates ~100 % of turns. The auto modes pick the threshold
from the running distribution of the quantity it is compared with:

* η_t = ``eta_for_rate(window ∪ this turn's Δ, target_rate)``: the η that puts ``target_rate`` of the
  recent eligible Δ strictly inside the band 0 < Δ < η (Δ = 0 never resamples, §5.1, so zeros count in
  the denominator but can never be selected).
* τ = ``quantile(window of recent per-token |ΔM|, tau_quantile)``: a low quantile of how much the
  signal moves per token, fixed for one generate call and updated after it (training calls only).

The windows are bounded (most recent values kept) and their contents are the whole state, saved in the
checkpoint (``state_dict``) so that a resumed run picks exactly the thresholds an uninterrupted one would.
With several ranks (ddp/fsdp) each rank adds its own episodes' values during a step; after the step's rollout
every rank's window is rebuilt from the window at the step's start plus every rank's new values in rank order
(``RunningWindow.rebuild``), so all ranks enter the next step with the same window, holding every episode's
values as one process's would (in another order, which only matters for which values the bound drops).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

AUTO = "auto"
"""The config value that switches a threshold to self-calibration."""


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default, type 7).

    Args:
        values: n >= 1 numbers, any order.
        q: level in [0, 1].

    Returns:
        x_(⌊h⌋) + (h − ⌊h⌋)·(x_(⌊h⌋+1) − x_(⌊h⌋)) with h = (n − 1)·q over the sorted values x_(0..n−1).
    """
    if not values:
        raise ValueError("quantile of an empty sequence")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile level {q} is outside [0, 1]")
    xs = sorted(values)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def eta_for_rate(deltas: Sequence[float], rate: float) -> float:
    """η such that a fraction ``rate`` of ``deltas`` falls in the open band 0 < Δ < η (as near as n allows).

    With n deltas, k = round(rate·n) of the smallest positive ones are put in the band: η is the midpoint
    between the k-th and (k+1)-th smallest positive Δ (ties at the midpoint cannot occur: the midpoint of
    two distinct values lies strictly between them; equal values move together). k = 0 gives the smallest
    positive Δ (nothing strictly below it); k >= number of positive Δ gives the next float above the largest.

    Args:
        deltas: Δ = |s^t − ŝ^{t−1}| of eligible env-turns (n >= 1, all >= 0).
        rate: target fraction in [0, 1].

    Returns:
        η > 0, or 0.0 when no Δ is positive (then nothing can be resampled anyway).
    """
    if not deltas:
        raise ValueError("eta_for_rate needs at least one delta")
    pos = sorted(d for d in deltas if d > 0)
    if not pos:
        return 0.0
    k = round(rate * len(deltas))
    if k <= 0:
        return pos[0]
    if k >= len(pos):
        return math.nextafter(pos[-1], math.inf)
    return 0.5 * (pos[k - 1] + pos[k])


class RunningWindow:
    """The most recent ``size`` values of a stream; its contents are its whole state."""

    def __init__(self, size: int) -> None:
        """Args:
        size: how many values to keep (> 0).
        """
        if size <= 0:
            raise ValueError(f"window size must be > 0, got {size}")
        self._values: deque[float] = deque(maxlen=size)
        self._added = 0

    def extend(self, values: Iterable[float]) -> None:
        """Append values, dropping the oldest beyond ``size``."""
        new = [float(v) for v in values]
        self._values.extend(new)
        self._added += len(new)

    @property
    def added(self) -> int:
        """How many values were ever appended: a mark for ``since``."""
        return self._added

    def since(self, mark: int) -> list[float]:
        """The values appended after ``added`` was ``mark`` that are still kept, oldest first."""
        n = min(self._added - mark, len(self._values))
        return list(self._values)[len(self._values) - n:] if n > 0 else []

    def rebuild(self, start: Sequence[float], parts: Sequence[Sequence[float]]) -> None:
        """Set the contents to ``start`` followed by each of ``parts`` in order (the oldest dropped beyond
        ``size``): how ranks merge the values each of them added during a step (``trainer/loop.py``)."""
        self.load_state_dict(start)
        for part in parts:
            self.extend(part)

    def values(self) -> list[float]:
        """The kept values, oldest first."""
        return list(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def state_dict(self) -> list[float]:
        """JSON-serialisable state (floats round-trip exactly through JSON)."""
        return self.values()

    def load_state_dict(self, state: Sequence[float]) -> None:
        """Restore ``state_dict()``'s output."""
        self._values.clear()
        self.extend(state)


class TauCalibrator:
    """τ = a low quantile of the running per-token |ΔM| distribution (``t2po.tti.tau=auto``)."""

    def __init__(self, q: float, window: int, warmup_tau: float) -> None:
        """Args:
        q: ``t2po.tti.tau_quantile``.
        window: ``t2po.tti.window``, per-token |ΔM| values kept.
        warmup_tau: τ used until the window holds any value (the first generate call).
        """
        self.q = q
        self.warmup_tau = warmup_tau
        self.window = RunningWindow(window)

    def value(self) -> float:
        """The τ the next generate call uses."""
        return quantile(self.window.values(), self.q) if len(self.window) else self.warmup_tau

    def observe(self, abs_diffs: Iterable[float]) -> None:
        """Add one training call's |M_t − M_{t−1}| values (every active row's consecutive steps)."""
        self.window.extend(abs_diffs)
