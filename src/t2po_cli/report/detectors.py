"""Collapse and instability detectors: pure functions over one run's metric series.

Every detector takes ``steps`` and ``values`` (1-D numpy arrays of equal length, sorted by step) and a
``Thresholds`` instance, and returns a ``Detection`` (the first step where it fires) or ``None``. They
read nothing from disk and keep no state, so they are tested on synthetic series
(tests/report/test_detectors.py) and reused on MLflow histories.

Two severities. ``collapse`` detectors mark the run as collapsed: the learning signal (reward, success)
or the policy itself (entropy, KL, response length, non-finite updates) has broken down and did not come
back. ``warning`` detectors are reported but do not by themselves mean collapse: a single gradient-norm
spike is survivable with clipping, and groups with zero reward variance saturate both when the policy
has collapsed *and* when it solves every task (the GRPO/GiGPO "no signal" regime; DAPO §3.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from t2po_cli.tracking import keys as K

COLLAPSE = "collapse"
WARNING = "warning"


class Series(NamedTuple):
    """One metric over training: ``steps`` (int) and ``values`` (float, may hold nan/inf), sorted by step."""

    steps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class Thresholds:
    """Detector thresholds. Defaults are tuned for success rates and rewards in [0, 1] (the embedded envs)."""

    smooth_window: int = 3
    """Centred rolling-median width applied to reward/success before the collapse test (1 = none);
    a median of 3 ignores a single bad batch but keeps the step of a real drop."""
    reward_rel_drop: float = 0.5
    """Reward collapse: the smoothed value falls by at least this fraction of |running best| ..."""
    reward_min_drop: float = 0.05
    """... and by at least this much in absolute terms (protects series that hover near 0) ..."""
    reward_noise_k: float = 4.0
    """... and by at least this many noise sigmas (robust: 1.4826·MAD of first differences / sqrt 2)."""
    recover_window: int = 10
    """Reward collapse: steps after the drop within which the series must climb back above the
    threshold for the drop to count as a dip rather than a collapse."""
    min_points_below: int = 2
    """Reward collapse: at least this many (smoothed) points must sit below the threshold."""
    min_points: int = 4
    """Detectors need at least this many finite points; shorter series are not judged."""
    baseline_points: int = 3
    """Entropy/length baselines: median of the first this many finite points."""
    persist: int = 3
    """Entropy, length, zero-variance: consecutive points the condition must hold (or hold to the end
    of the run, for at least two points)."""
    entropy_collapse_frac: float = 0.1
    """Entropy collapse: below this fraction of the baseline entropy."""
    entropy_explode_factor: float = 3.0
    """Entropy explosion: above this multiple of the baseline entropy."""
    grad_z: float = 8.0
    """Gradient-norm spike: robust z-score (median/MAD) above this ..."""
    grad_min_ratio: float = 3.0
    """... and at least this multiple of the median gradient norm (guards MAD ≈ 0)."""
    kl_max: float = 1.0
    """KL blow-up: PPO KL or KL loss above this absolute value ..."""
    kl_factor: float = 20.0
    """... or above this multiple of its early median (first quarter of the run) ..."""
    kl_min: float = 0.1
    """... provided it also exceeds this floor (tiny KLs multiply easily)."""
    length_collapse_frac: float = 0.2
    """Response-length collapse: mean length below this fraction of the baseline."""
    length_explode_factor: float = 3.0
    """Response-length explosion: mean length above this multiple of the baseline."""
    zero_var_rate: float = 0.9
    """Zero-variance saturation: fraction of groups with identical rewards at or above this."""
    nonfinite_collapse_steps: int = 3
    """Non-finite steps: this many or more steps with nan/inf metrics mark a collapse (fewer: warning,
    since the trainer's nan_guard skips an isolated bad step)."""

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Detection:
    """One detector that fired."""

    name: str
    step: int
    severity: str
    detail: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class RunVerdict:
    """What the detectors say about one run."""

    collapsed: bool
    collapse_step: int | None
    detections: tuple[Detection, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "collapsed": self.collapsed,
            "collapse_step": self.collapse_step,
            "detections": [d.to_dict() for d in self.detections],
        }


# --- helpers -----------------------------------------------------------------------------------------


def _finite(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=float)
    s = np.asarray(steps)
    ok = np.isfinite(v)
    return s[ok], v[ok]


def rolling_median(values: np.ndarray, window: int) -> np.ndarray:
    """Centred rolling median with shrinking windows at the edges (``window`` 1 returns a copy)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v.copy()
    half = window // 2
    return np.array([np.median(v[max(0, i - half) : i + half + 1]) for i in range(v.size)])


def robust_noise(values: np.ndarray) -> float:
    """Point-to-point noise sigma from the MAD of first differences (insensitive to one big jump)."""
    if values.size < 3:
        return 0.0
    d = np.diff(values)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def first_persistent(mask: np.ndarray, persist: int) -> int | None:
    """Index where ``mask`` first holds for ``persist`` consecutive points, or to the end of the series
    for at least ``min(persist, 2)`` points. ``None`` if never."""
    run = 0
    n = mask.size
    for i, m in enumerate(mask):
        run = run + 1 if m else 0
        start = i - run + 1
        if run >= persist or (i == n - 1 and run >= min(persist, 2)):
            return start
    return None


def _baseline(values: np.ndarray, th: Thresholds) -> float:
    return float(np.median(values[: th.baseline_points]))


# --- detectors ---------------------------------------------------------------------------------------


def detect_drop_collapse(
    steps: np.ndarray, values: np.ndarray, th: Thresholds, name: str = "reward_collapse"
) -> Detection | None:
    """A drop from the running best that does not recover within ``th.recover_window`` steps.

    On the smoothed series s (rolling median), the threshold at point i is
    ``best_i − max(reward_rel_drop·|best_i|, reward_min_drop, reward_noise_k·σ)`` with best_i the
    running maximum of s before i. The first i below it fires, unless s climbs back above the threshold
    within the window, or fewer than ``min_points_below`` points follow below it.

    Returns:
        The detection at the step of the first point of the drop, or None.
    """
    s_steps, raw = _finite(steps, values)
    if raw.size < th.min_points:
        return None
    s = rolling_median(raw, th.smooth_window)
    sigma = robust_noise(raw)
    best = s[0]
    i = 1
    while i < s.size:
        drop = max(th.reward_rel_drop * abs(best), th.reward_min_drop, th.reward_noise_k * sigma)
        level = best - drop
        if s[i] < level:
            in_window = (s_steps > s_steps[i]) & (s_steps <= s_steps[i] + th.recover_window)
            recovered = bool(np.any(s[in_window] >= level))
            below = int(np.sum(s[i:][s_steps[i:] <= s_steps[i] + th.recover_window] < level))
            if not recovered and below >= th.min_points_below:
                return Detection(
                    name, int(s_steps[i]), COLLAPSE,
                    f"fell to {s[i]:.3g} from a best of {best:.3g} (threshold {level:.3g}) and stayed there",
                )
        best = max(best, s[i])
        i += 1
    return None


def _level_detector(
    steps: np.ndarray, mask_of: np.ndarray, vals: np.ndarray, th: Thresholds, name: str, what: str
) -> Detection | None:
    i = first_persistent(mask_of, th.persist)
    if i is None:
        return None
    return Detection(name, int(steps[i]), COLLAPSE, f"{what} ({vals[i]:.3g})")


def _relative_level(
    steps: np.ndarray, values: np.ndarray, th: Thresholds, factor: float, *, above: bool, name: str, what: str
) -> Detection | None:
    """The series stays beyond ``factor`` × its baseline (above or below it) for ``persist`` points."""
    s, v = _finite(steps, values)
    if v.size < th.min_points:
        return None
    base = _baseline(v, th)
    if base <= 0:
        return None
    limit = factor * base
    mask = v > limit if above else v < limit
    return _level_detector(s, mask, v, th, name, f"{what} {'above' if above else 'below'} {limit:.3g}")


def detect_entropy_collapse(steps: np.ndarray, values: np.ndarray, th: Thresholds) -> Detection | None:
    """Entropy stays below ``entropy_collapse_frac`` × its baseline (the policy became deterministic)."""
    return _relative_level(steps, values, th, th.entropy_collapse_frac, above=False, name="entropy_collapse",
                           what="entropy")


def detect_entropy_explosion(steps: np.ndarray, values: np.ndarray, th: Thresholds) -> Detection | None:
    """Entropy stays above ``entropy_explode_factor`` × its baseline (the policy degenerated to noise)."""
    return _relative_level(steps, values, th, th.entropy_explode_factor, above=True, name="entropy_explosion",
                           what="entropy")


def detect_grad_spikes(steps: np.ndarray, values: np.ndarray, th: Thresholds) -> Detection | None:
    """Gradient-norm spikes: robust z = (x − median) / (1.4826·MAD) above ``grad_z`` and x above
    ``grad_min_ratio`` × median. Severity warning; the detail counts every spike.

    Steps with a zero gradient norm made no update (every advantage was 0, e.g. after a reward collapse
    left every group without spread) and are left out, as the live ``diag/grad_norm_z`` leaves them out:
    otherwise a run that spends most of its steps there has median 0 and every real step is a "spike".
    """
    s, v = _finite(steps, values)
    s, v = s[v != 0], v[v != 0]
    if v.size < th.min_points:
        return None
    med = float(np.median(v))
    mad = 1.4826 * float(np.median(np.abs(v - med)))
    # MAD is 0 on a flat series; a tiny floor relative to the median keeps z finite.
    z = (v - med) / max(mad, 1e-12 + 1e-6 * abs(med))
    spikes = np.flatnonzero((z > th.grad_z) & (v > th.grad_min_ratio * med))
    if spikes.size == 0:
        return None
    i = int(spikes[0])
    return Detection(
        "grad_norm_spike", int(s[i]), WARNING,
        f"{spikes.size} spike(s); first {v[i]:.3g} vs median {med:.3g} (robust z {z[i]:.1f})",
    )


def detect_kl_blowup(
    steps: np.ndarray, values: np.ndarray, th: Thresholds, name: str = "kl_blowup"
) -> Detection | None:
    """KL above ``kl_max``, or above ``kl_factor`` × its early median and above ``kl_min``."""
    s, v = _finite(steps, values)
    if v.size < th.min_points:
        return None
    early = float(np.median(v[: max(th.baseline_points, v.size // 4)]))
    mask = (v > th.kl_max) | ((v > th.kl_factor * max(early, 0.0)) & (v > th.kl_min))
    hits = np.flatnonzero(mask)
    if hits.size == 0:
        return None
    i = int(hits[0])
    return Detection(name, int(s[i]), COLLAPSE, f"KL {v[i]:.3g} (early median {early:.3g})")


def detect_length_collapse(steps: np.ndarray, values: np.ndarray, th: Thresholds) -> Detection | None:
    """Mean response length stays below ``length_collapse_frac`` × its baseline."""
    return _relative_level(steps, values, th, th.length_collapse_frac, above=False, name="length_collapse",
                           what="response length")


def detect_length_explosion(steps: np.ndarray, values: np.ndarray, th: Thresholds) -> Detection | None:
    """Mean response length stays above ``length_explode_factor`` × its baseline."""
    return _relative_level(steps, values, th, th.length_explode_factor, above=True, name="length_explosion",
                           what="response length")


def detect_zero_variance(steps: np.ndarray, values: np.ndarray, th: Thresholds) -> Detection | None:
    """Zero-variance group rate at or above ``zero_var_rate`` for ``persist`` points (warning)."""
    s, v = _finite(steps, values)
    if v.size < th.min_points:
        return None
    i = first_persistent(v >= th.zero_var_rate, th.persist)
    if i is None:
        return None
    return Detection(
        "zero_variance_saturation", int(s[i]), WARNING,
        f"{v[i]:.0%} of groups have identical rewards (no learning signal)",
    )


def detect_nonfinite(series: Mapping[str, Series], th: Thresholds) -> Detection | None:
    """Steps where any metric is nan or ±inf; collapse from ``nonfinite_collapse_steps`` such steps."""
    bad: set[int] = set()
    for steps, values in series.values():
        v = np.asarray(values, dtype=float)
        bad.update(int(x) for x in np.asarray(steps)[~np.isfinite(v)])
    if not bad:
        return None
    first = min(bad)
    severity = COLLAPSE if len(bad) >= th.nonfinite_collapse_steps else WARNING
    return Detection("nonfinite", first, severity, f"{len(bad)} step(s) with nan/inf metrics")


# Which series each single-series detector reads. Train rows are preferred (dense); success falls back
# to validation rows when a run logged no train success.
DETECTOR_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward_collapse", (K.REWARD_MEAN,)),
    ("success_collapse", (K.SUCCESS_RATE, K.val(K.SUCCESS_RATE))),
    ("entropy_collapse", (K.ENTROPY,)),
    ("entropy_explosion", (K.ENTROPY,)),
    ("grad_norm_spike", (K.GRAD_NORM,)),
    ("ppo_kl_blowup", (K.PPO_KL,)),
    ("kl_loss_blowup", (K.KL_LOSS,)),
    ("length_collapse", (K.RESPONSE_LENGTH_MEAN,)),
    ("length_explosion", (K.RESPONSE_LENGTH_MEAN,)),
    ("zero_variance_saturation", (K.ZERO_VARIANCE_GROUPS,)),
)


def _run_one(name: str, s: Series, th: Thresholds) -> Detection | None:
    if name in ("reward_collapse", "success_collapse"):
        return detect_drop_collapse(s.steps, s.values, th, name)
    if name in ("ppo_kl_blowup", "kl_loss_blowup"):
        return detect_kl_blowup(s.steps, s.values, th, name)
    fn = {
        "entropy_collapse": detect_entropy_collapse,
        "entropy_explosion": detect_entropy_explosion,
        "grad_norm_spike": detect_grad_spikes,
        "length_collapse": detect_length_collapse,
        "length_explosion": detect_length_explosion,
        "zero_variance_saturation": detect_zero_variance,
    }[name]
    return fn(s.steps, s.values, th)


def judge_run(series: Mapping[str, Series], th: Thresholds | None = None) -> RunVerdict:
    """Run every detector whose metric is present; the run is collapsed if any collapse detector fired.

    Args:
        series: metric key (``val/`` prefix for validation rows) → Series.
        th: thresholds (defaults when None).

    Returns:
        collapsed flag, first collapse step, and every detection sorted by step.
    """
    th = th or Thresholds()
    found: list[Detection] = []
    for name, candidates in DETECTOR_KEYS:
        key = next((k for k in candidates if k in series and series[k].steps.size), None)
        if key is None:
            continue
        hit = _run_one(name, series[key], th)
        if hit is not None:
            found.append(hit)
    nf = detect_nonfinite(series, th)
    if nf is not None:
        found.append(nf)
    found.sort(key=lambda d: (d.step, d.name))
    steps = [d.step for d in found if d.severity == COLLAPSE]
    return RunVerdict(bool(steps), min(steps) if steps else None, tuple(found))


DETECTOR_DOCS: dict[str, str] = {
    "reward_collapse": "train reward mean drops from its running best by max(rel·|best|, min, k·σ) and does "
    "not recover within the window",
    "success_collapse": "the same test on the success rate (train, else validation)",
    "entropy_collapse": "actor entropy stays below a fraction of its initial value",
    "entropy_explosion": "actor entropy stays above a multiple of its initial value",
    "grad_norm_spike": "gradient norm with robust (median/MAD) z-score above the limit (warning)",
    "ppo_kl_blowup": "PPO KL above an absolute limit or a multiple of its early median",
    "kl_loss_blowup": "KL-to-reference loss above an absolute limit or a multiple of its early median",
    "length_collapse": "mean response length stays below a fraction of its initial value",
    "length_explosion": "mean response length stays above a multiple of its initial value",
    "zero_variance_saturation": "most groups have identical rewards for several steps (warning)",
    "nonfinite": "steps with nan/inf metrics (collapse from several steps, else warning)",
}
