"""Early-warning rules: signals that precede a collapse, evaluated on metrics rows (live and in the report).

The collapse detectors (``report/detectors.py``) say a run *has* collapsed; these rules say it *may*.
Each rule reads one ``diag/*`` series (tracking/keys.py) and fires at the first step where its condition
holds, judged only on the rows up to that step (causal), so the trainer can run the same rules after every
step and ``t2po report`` finds the same first steps afterwards. Rules need ``min_history`` points of their
metric before they may fire, and treat a metric logged only on some steps (sparse series) as the sequence
of its logged points.

The rules and their sources:
- ``reward_spread_drop``: the within-group reward spread falls below a fraction of its running peak
  (RAGEN / StarPO-S: reward std falls ~50 steps before mean reward collapses).
- ``zero_spread_groups``: most groups have identical rewards while success is not saturated (no signal).
- ``entropy_adv_cov``: entropy–advantage covariance stays positive while entropy falls (ΔH ≈ −η·Cov,
  "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617).
- ``logp_mult_error``: rollout/trainer token probability mismatch above 1.05 (NeMo-RL's
  ``token_mult_prob_error``: stale inference weights, precision or padding bugs).
- ``entropy_rise``: the token entropy stays well above its first steps' (the policy diffuses: an update too
  large for the policy's trust region; invalid actions, longer episodes and an entropy explosion follow).
- ``grad_norm_z``: the gradient norm's robust z-score against its recent window above 4.

Pure stdlib (no numpy, no torch), in tracking/ so that both the trainer (live) and `t2po report` use it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from t2po_cli.config.schema import WarningThresholds
from t2po_cli.tracking import keys as K

Points = list[tuple[int, float]]
"""A metric's finite points ``(step, value)``, sorted by step."""


@dataclass(frozen=True)
class Warning:  # shadows the builtin inside this module only; the name bench/collapse.py imports
    """One rule that fired: its first step, the metric and value that made it fire, a readable message, and
    ``since``: the step where the condition that made it fire began (the first point of its window or run of
    points; ``step`` for single-point rules). ``trainer.on_collapse=rollback`` goes back to before it."""

    rule: str
    step: int
    metric: str
    value: float
    message: str
    since: int = -1

    def __post_init__(self) -> None:
        if self.since < 0:
            object.__setattr__(self, "since", self.step)

    def line(self) -> str:
        """The console line: ``warning: step 12 diag/reward_spread fell to … — collapse may follow``."""
        return f"warning: step {self.step} {self.message} — collapse may follow"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EarlyWarning = Warning
"""Alias for readers who prefer not to shadow the builtin name."""

Hit = tuple[int, float, str, int]
"""A rule's firing: (index into its points, value, message, index where its condition began: the first point of
the window or run of points that made it fire)."""


@dataclass(frozen=True)
class Rule:
    """One early-warning rule: its name, the metric it reads, what it means, and its causal scan."""

    name: str
    metric: str
    doc: str
    scan: Callable[[Points, Mapping[str, dict[int, float]], WarningThresholds], Hit | None]


# --- series helpers ----------------------------------------------------------------------------------


def train_points(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, float]]:
    """Train rows (tracking/jsonl.py format) → ``{key: {step: value}}`` of finite numeric values."""
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        if str(row.get("split", "train")) != "train":
            continue
        step = int(row["step"])
        for key, value in row["metrics"].items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            out.setdefault(key, {})[step] = float(value)
    return out


def _sorted(by_step: Mapping[int, float] | None) -> Points:
    return sorted(by_step.items()) if by_step else []


def persistent_index(flags: list[bool], persist: int, start: int = 0) -> int | None:
    """First index i ≥ ``start`` at which ``flags`` has held for ``persist`` consecutive entries ending at i.

    >>> persistent_index([True, False, True, True], 2)
    3
    """
    run = 0
    for i, f in enumerate(flags):
        run = run + 1 if f else 0
        if i >= start and run >= max(1, persist):
            return i
    return None


def _entropy(aux: Mapping[str, dict[int, float]]) -> dict[int, float]:
    # The trainer's token entropy (dense on the update) or, failing that, the rollout's.
    return aux.get(K.ENTROPY) or aux.get(K.ROLLOUT_ENTROPY) or {}


# --- rules -------------------------------------------------------------------------------------------


def _persistent_hit(pts: Points, flags: list[bool], persist: int, history: int,
                    message: Callable[[float], str]) -> Hit | None:
    """The hit of a rule that fires when ``flags`` has held for ``persist`` consecutive points, from point
    ``history`` on: that point, its value, ``message(value)``, and the first point of the run."""
    i = persistent_index(flags, persist, start=history - 1)
    if i is None:
        return None
    v = pts[i][1]
    return i, v, message(v), i - max(1, persist) + 1


def scan_reward_spread(pts: Points, aux: Mapping[str, dict[int, float]], th: WarningThresholds) -> Hit | None:
    """Smoothed spread s_i (trailing mean of ``spread_smooth`` points) ≤ ``spread_frac`` × max_{j<i} s_j,
    with that peak ≥ ``spread_min_peak``, from point ``min_history`` on."""
    vals = [v for _, v in pts]
    peak = -math.inf
    for i in range(len(vals)):
        window = vals[max(0, i - th.spread_smooth + 1) : i + 1]
        s = sum(window) / len(window)
        if i >= th.min_history - 1 and peak >= th.spread_min_peak and s <= th.spread_frac * peak:
            pct = 100.0 * s / peak
            return (i, s, f"{K.DIAG_REWARD_SPREAD} fell to {s:.3g} ({pct:.0f}% of its peak {peak:.3g})",
                    max(0, i - th.spread_smooth + 1))
        peak = max(peak, s)
    return None


def scan_zero_spread(pts: Points, aux: Mapping[str, dict[int, float]], th: WarningThresholds) -> Hit | None:
    """Zero-spread fraction ≥ ``zero_spread_rate`` for ``zero_spread_persist`` points while success (at the
    same step, when logged) < ``zero_spread_max_success``, after an earlier point ≤ ``zero_spread_from``."""
    success = aux.get(K.SUCCESS_RATE, {})
    had_signal = False
    flags = []
    for step, v in pts:
        flags.append(had_signal and v >= th.zero_spread_rate and success.get(step, 0.0) < th.zero_spread_max_success)
        had_signal = had_signal or v <= th.zero_spread_from
    return _persistent_hit(pts, flags, th.zero_spread_persist, th.min_history,
                           lambda v: f"{K.DIAG_ZERO_SPREAD_GROUPS} at {v:.0%} of groups for "
                           f"{th.zero_spread_persist} steps")


def scan_entropy_adv_cov(pts: Points, aux: Mapping[str, dict[int, float]], th: WarningThresholds) -> Hit | None:
    """Covariance > ``cov_min`` on the last ``cov_persist`` points and the entropy over those steps fell by at
    least ``cov_entropy_drop`` of its value at the first of them."""
    ent = _entropy(aux)
    k = max(2, th.cov_persist)
    for i in range(max(th.min_history, k) - 1, len(pts)):
        window = pts[i - k + 1 : i + 1]
        if not all(v > th.cov_min for _, v in window):
            continue
        es = [ent[s] for s, _ in window if s in ent]
        if len(es) < 2 or es[0] <= 0:
            continue
        drop = (es[0] - es[-1]) / es[0]
        if drop >= th.cov_entropy_drop:
            v = pts[i][1]
            return i, v, (f"{K.DIAG_ENTROPY_ADV_COV} positive ({v:.3g}) for {k} steps while entropy fell "
                          f"{drop:.0%}"), i - k + 1
    return None


def scan_mult_error(pts: Points, aux: Mapping[str, dict[int, float]], th: WarningThresholds) -> Hit | None:
    """Mean exp|Δ log p| > ``mult_error_max`` for ``mult_error_persist`` consecutive points."""
    flags = [v > th.mult_error_max for _, v in pts]
    return _persistent_hit(pts, flags, th.mult_error_persist, th.min_history,
                           lambda v: f"{K.DIAG_LOGP_MULT_ERROR} at {v:.3g} (> {th.mult_error_max}): rollout and "
                           "trainer disagree")


def scan_entropy_rise(pts: Points, aux: Mapping[str, dict[int, float]], th: WarningThresholds) -> Hit | None:
    """Entropy ≥ ``entropy_rise_factor`` × its baseline (the median of its first ``entropy_rise_baseline``
    points) for ``entropy_rise_persist`` consecutive points, from point ``min_history`` on."""
    if len(pts) < th.entropy_rise_baseline:
        return None
    base = statistics.median(v for _, v in pts[: th.entropy_rise_baseline])
    if base <= 0:
        return None
    flags = [v >= th.entropy_rise_factor * base for _, v in pts]
    return _persistent_hit(pts, flags, th.entropy_rise_persist, max(th.min_history, th.entropy_rise_baseline),
                           lambda v: f"{K.ENTROPY} rose to {v:.3g} ({v / base:.1f}x its first steps' {base:.3g}): "
                           "the policy is diffusing")


def scan_grad_norm_z(pts: Points, aux: Mapping[str, dict[int, float]], th: WarningThresholds) -> Hit | None:
    """Robust z-score of the gradient norm > ``grad_z_max``."""
    for i in range(max(0, th.min_history - 1), len(pts)):
        v = pts[i][1]
        if v > th.grad_z_max:
            return i, v, f"{K.DIAG_GRAD_NORM_Z} at {v:.2g} (> {th.grad_z_max:g}): gradient-norm spike", i
    return None


RULES: tuple[Rule, ...] = (
    Rule("reward_spread_drop", K.DIAG_REWARD_SPREAD,
         "within-group reward spread fell below a fraction of its running peak", scan_reward_spread),
    Rule("zero_spread_groups", K.DIAG_ZERO_SPREAD_GROUPS,
         "most groups have identical rewards for several steps while success is not saturated", scan_zero_spread),
    Rule("entropy_adv_cov", K.DIAG_ENTROPY_ADV_COV,
         "entropy–advantage covariance positive for several steps while entropy falls", scan_entropy_adv_cov),
    Rule("logp_mult_error", K.DIAG_LOGP_MULT_ERROR,
         "rollout vs trainer token probabilities disagree (mean exp|Δ log p| > 1.05)", scan_mult_error),
    Rule("entropy_rise", K.ENTROPY,
         "token entropy well above its first steps' for several steps (the policy diffuses; format breakdown "
         "and entropy explosion follow)", scan_entropy_rise),
    Rule("grad_norm_z", K.DIAG_GRAD_NORM_Z,
         "gradient norm far above its recent median (robust z-score)", scan_grad_norm_z),
)
"""Every rule, in the order they are reported."""

RULE_DOCS: dict[str, str] = {r.name: r.doc for r in RULES}


def warnings_from_points(series: Mapping[str, Mapping[int, float]], th: WarningThresholds | None = None
                         ) -> list[Warning]:
    """``first_warnings`` on series already split by key: ``{key: {step: value}}`` (train values only)."""
    th = th or WarningThresholds()
    aux = {k: dict(v) for k, v in series.items()}
    found: list[Warning] = []
    for rule in RULES:
        pts = [(s, v) for s, v in _sorted(aux.get(rule.metric)) if math.isfinite(v)]
        if not pts:
            continue
        hit = rule.scan(pts, aux, th)
        if hit is not None:
            i, value, message, began = hit
            found.append(Warning(rule.name, pts[i][0], rule.metric, float(value), message, pts[began][0]))
    found.sort(key=lambda w: (w.step, w.rule))
    return found


def first_warnings(rows: Iterable[Mapping[str, Any]], th: WarningThresholds | None = None) -> list[Warning]:
    """The first firing of every rule on a run's metrics rows, sorted by step.

    Args:
        rows: metrics rows ``{"step", "split", "metrics"}`` (tracking/jsonl.py); only train rows are read.
        th: thresholds (defaults when None).

    Returns:
        At most one ``Warning`` per rule, sorted by (step, rule). Rules whose metric is absent are skipped.
        Causal: the warnings of a prefix of the rows are the warnings of all rows with step ≤ its last step.
    """
    return warnings_from_points(train_points(rows), th)


def new_warnings(rows: Iterable[Mapping[str, Any]], step: int, th: WarningThresholds | None = None) -> list[Warning]:
    """Warnings whose first firing is exactly at ``step`` (the trainer calls this after logging ``step``)."""
    return [w for w in first_warnings(rows, th) if w.step == step]


# --- lead times (report) -------------------------------------------------------------------------------

ANY_RULE = "any rule"
"""The pooled row for the earliest warning of any rule."""


@dataclass(frozen=True)
class RunWarnings:
    """One run's warnings next to its collapse step (``report/detectors.py``; None = did not collapse)."""

    name: str
    variant: str
    collapse_step: int | None
    warnings: tuple[Warning, ...]

    def lead(self, w: Warning) -> int | None:
        """Steps from the warning to the collapse (> 0: the warning came first); None without a collapse."""
        return None if self.collapse_step is None else self.collapse_step - w.step

    def first(self, rule: str) -> Warning | None:
        """The rule's warning (``ANY_RULE``: the earliest of all), or None."""
        ws = self.warnings if rule == ANY_RULE else tuple(w for w in self.warnings if w.rule == rule)
        return min(ws, key=lambda w: w.step) if ws else None


def _median(xs: list[int]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return math.nan if not n else (ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2)


def pooled_leads(runs: Iterable[RunWarnings], min_lead: int = 1) -> list[dict[str, Any]]:
    """Per rule (and ``any rule``), pooled over runs.

    Returns:
        One dict per rule: ``collapsed`` (collapsed runs), ``warned_before`` (collapsed runs where the rule
        fired at least ``min_lead`` steps before the collapse), ``leads`` (those lead times), ``median_lead``,
        ``late`` (collapsed runs where it fired later than that), ``false_alarms`` (runs that did not
        collapse but where it fired) and ``quiet`` (non-collapsed runs).
    """
    runs = list(runs)
    out = []
    for rule in [*(r.name for r in RULES), ANY_RULE]:
        leads: list[int] = []
        late = false_alarms = 0
        for r in runs:
            w = r.first(rule)
            if w is None:
                continue
            lead = r.lead(w)
            if lead is None:
                false_alarms += 1
            elif lead >= min_lead:
                leads.append(lead)
            else:
                late += 1
        collapsed = sum(r.collapse_step is not None for r in runs)
        out.append({
            "rule": rule, "collapsed": collapsed, "warned_before": len(leads), "leads": leads,
            "median_lead": _median(leads), "late": late, "false_alarms": false_alarms,
            "quiet": len(runs) - collapsed,
        })
    return out
