"""Report figures (PNG), drawn with matplotlib's object API on the Agg canvas.

``matplotlib.figure.Figure`` is used directly instead of pyplot: no global figure registry, no GUI
backend selection, nothing that leaks between reports built in one process. Every ``plot_*`` function
returns a Figure, or a string saying why the plot was skipped (its metrics were not logged), which the
report prints in place of the image.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from t2po_cli.report.detectors import RunVerdict
from t2po_cli.report.load import ENV_KEY, RunData, fmt_value
from t2po_cli.report.tables import RunSummary
from t2po_cli.tracking import keys as K

Groups = Mapping[str, Sequence[RunData]]


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def pooled(runs: Sequence[RunData], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean and sd across runs of one metric on the union of their steps.

    Each run is linearly interpolated inside its own step range and missing outside it, so a run that
    stopped early does not drag the mean to zero. Returns (steps, mean, sd) or None when no run has it.
    """
    series = [s for s in (r.get(key) for r in runs) if s is not None]
    series = [(s.steps[np.isfinite(s.values)], s.values[np.isfinite(s.values)]) for s in series]
    series = [(x, y) for x, y in series if x.size]
    if not series:
        return None
    grid = np.unique(np.concatenate([x for x, _ in series]))
    stack = np.full((len(series), grid.size), np.nan)
    for i, (x, y) in enumerate(series):
        inside = (grid >= x[0]) & (grid <= x[-1])
        stack[i, inside] = np.interp(grid[inside], x, y)
    with warnings.catch_warnings():  # grid points no run covers: "mean of empty slice" is expected
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stack, axis=0)
        sd = np.nanstd(stack, axis=0)
    return grid, mean, sd


def _draw_band(ax: Any, runs: Sequence[RunData], key: str, label: str, color: Any) -> bool:
    p = pooled(runs, key)
    if p is None:
        return False
    grid, mean, sd = p
    ax.plot(grid, mean, color=color, label=f"{label} (n={len(runs)})", lw=1.6)
    if len(runs) > 1:
        ax.fill_between(grid, mean - sd, mean + sd, color=color, alpha=0.18, lw=0)
    return True


def _no_data(ax: Any, key: str) -> None:
    ax.text(0.5, 0.5, f"{key}\nnot logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
    ax.set_xticks([])
    ax.set_yticks([])


def _envs(groups: Groups) -> list[str]:
    return sorted({fmt_value(r.params.get(ENV_KEY)) for runs in groups.values() for r in runs})


def plot_learning_curves(groups: Groups, verdicts: Mapping[str, RunVerdict]) -> Figure | str:
    """Success (train and, when logged, validation) per env: mean ± sd across seeds, × at collapses."""
    rows = [k for k in (K.SUCCESS_RATE, K.val(K.SUCCESS_RATE)) if _any(groups, k)]
    if not rows and _any(groups, K.REWARD_MEAN):
        rows = [K.REWARD_MEAN]
    if not rows:
        return f"no {K.SUCCESS_RATE}, {K.val(K.SUCCESS_RATE)} or {K.REWARD_MEAN} logged"
    envs = _envs(groups)
    colors = _colors(list(groups))
    fig = Figure(figsize=(5.2 * len(envs), 3.4 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(envs), squeeze=False)
    for j, env in enumerate(envs):
        for i, key in enumerate(rows):
            ax = axes[i][j]
            for label, runs in groups.items():
                subset = [r for r in runs if fmt_value(r.params.get(ENV_KEY)) == env]
                if not subset or not _draw_band(ax, subset, key, label, colors[label]):
                    continue
                _collapse_marks(ax, subset, key, verdicts, colors[label])
            ax.set_title(f"{env}: {key}", fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    _legend(fig, axes)
    return fig


def _collapse_marks(ax: Any, runs: Sequence[RunData], key: str, verdicts: Mapping[str, RunVerdict], color: Any) -> None:
    p = pooled(runs, key)
    if p is None:
        return
    grid, mean, _ = p
    for r in runs:
        step = verdicts[r.source].collapse_step
        if step is not None and np.isfinite(mean).any():
            ok = np.isfinite(mean)
            y = float(np.interp(step, grid[ok], mean[ok]))
            ax.plot([step], [y], marker="X", ms=9, color=color, mec="black", mew=0.8, ls="none")


def _legend(fig: Figure, axes: Any, title: str = "variant (seeds); × = collapse") -> None:
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
                   ncols=min(3, len(labels)), fontsize=8, title=title)


def _any(groups: Groups, key: str) -> bool:
    return any(r.get(key) is not None for runs in groups.values() for r in runs)


def _panel(groups: Groups, keys: Sequence[str], title: str, log_keys: Sequence[str] = ()) -> Figure | str:
    present = [k for k in keys if _any(groups, k)]
    if not present:
        return f"none of {', '.join(keys)} logged"
    colors = _colors(list(groups))
    ncols = 2 if len(keys) == 4 else min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, key in zip(np.ravel(axes), keys, strict=False):
        if key not in present:
            _no_data(ax, key)
            continue
        for label, runs in groups.items():
            _draw_band(ax, runs, key, label, colors[label])
        if key in log_keys and _all_positive(groups, key):
            ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in np.ravel(axes)[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    _legend(fig, axes)
    return fig


def _all_positive(groups: Groups, key: str) -> bool:
    vals = [s.values for runs in groups.values() for r in runs if (s := r.get(key)) is not None]
    v = np.concatenate(vals) if vals else np.array([])
    v = v[np.isfinite(v)]
    return bool(v.size) and bool(np.all(v > 0))


def plot_stability(groups: Groups) -> Figure | str:
    """Gradient norm, entropy, KL and response length per variant (mean ± sd across seeds)."""
    kl = K.PPO_KL if _any(groups, K.PPO_KL) or not _any(groups, K.KL_LOSS) else K.KL_LOSS
    keys = (K.GRAD_NORM, K.ENTROPY, kl, K.RESPONSE_LENGTH_MEAN)
    return _panel(groups, keys, "stability", log_keys=(K.GRAD_NORM, K.PPO_KL, K.KL_LOSS))


def plot_t2po(groups: Groups) -> Figure | str:
    """T2PO activity: TTI intervention rate, TDS resample rate, tokens per episode."""
    if not (_any(groups, K.TTI_INTERVENTION_RATE) or _any(groups, K.TDS_RESAMPLE_RATE)):
        return f"neither {K.TTI_INTERVENTION_RATE} nor {K.TDS_RESAMPLE_RATE} logged (T2PO off everywhere?)"
    return _panel(groups, (K.TTI_INTERVENTION_RATE, K.TDS_RESAMPLE_RATE, K.TOKENS_PER_EPISODE), "T2PO activity")


def plot_diagnostics(groups: Groups, warnings: Mapping[str, Sequence[Any]]) -> Figure | str:
    """The ``diag/*`` early-warning signals that were logged (mean ± sd across seeds per variant), with a ▼ at
    each run's first warning on the metric its rule reads.

    Args:
        groups: variant → runs.
        warnings: run source → its ``early_warning.Warning`` list.
    """
    keys = [k for k in K.DIAG_KEYS if _any(groups, k)]
    if not keys:
        return "no diag/* metric logged (runs from before the early-warning signals)"
    fig = _panel(groups, keys, "early-warning signals; ▼ = a run's first warning")
    if isinstance(fig, str):
        return fig
    colors = _colors(list(groups))
    axes = {ax.get_title(): ax for ax in fig.axes}
    for label, runs in groups.items():
        for r in runs:
            for w in warnings.get(r.source, ()):
                if w.metric in axes:
                    axes[w.metric].plot([w.step], [w.value], marker="v", ms=8, color=colors[label],
                                        mec="black", mew=0.6, ls="none")
    return fig


def plot_thresholds(groups: Groups) -> Figure | str:
    """Threshold trajectories: the TDS η and TTI τ each step chose (``t2po.tds.eta=auto`` /
    ``t2po.tti.tau=auto``), for whichever of the two a run logged."""
    keys = [k for k in (K.TDS_ETA, K.TTI_TAU) if _any(groups, k)]
    if not keys:
        return f"neither {K.TDS_ETA} nor {K.TTI_TAU} logged (fixed thresholds everywhere)"
    return _panel(groups, keys, "threshold trajectories", log_keys=(K.TTI_TAU,))


def plot_sensitivity(sens: Mapping[str, Mapping[str, list[dict[str, Any]]]]) -> Figure | str:
    """Final success and collapse rate against tau and eta, one line per env.

    Args:
        sens: ``{"tau": tables.sensitivity(...), "eta": ...}``.
    """
    present = {name: s for name, s in sens.items() if s}
    if not present:
        return "no environment has runs at two or more values of tau (TTI on) or eta (TDS on)"
    envs = sorted({env for s in present.values() for env in s})
    colors = _colors(envs)
    fig = Figure(figsize=(5.0 * len(present), 6.0), layout="constrained")
    axes = fig.subplots(2, len(present), squeeze=False)
    for j, (name, by_env) in enumerate(present.items()):
        for env, rows in by_env.items():
            x = np.array([r["value"] for r in rows])
            y = np.array([r["final_success"].mean for r in rows])
            err = np.nan_to_num(np.array([r["final_success"].sd for r in rows]))
            axes[0][j].errorbar(x, y, yerr=err, marker="o", capsize=3, color=colors[env], label=env)
            axes[1][j].plot(x, [r["collapse_rate"] for r in rows], marker="s", color=colors[env], label=env)
        for i, ylabel in enumerate(("final success", "collapse rate")):
            ax = axes[i][j]
            xs = [r["value"] for rows in by_env.values() for r in rows]
            if min(xs) > 0 and max(xs) / min(xs) >= 10:  # tau spans decades (1e-5 … 1e-2)
                ax.set_xscale("log")
            ax.set_xlabel(name)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[1][j].set_ylim(-0.05, 1.05)
        axes[0][j].set_title(f"sensitivity to {name}", fontsize=9)
    _legend(fig, axes, title="environment")
    return fig


def plot_efficiency(groups: Groups, summaries: Mapping[str, RunSummary]) -> Figure | str:
    """Final success against tokens per episode: one dot per run, mean ± sd cross per variant."""
    if not _any(groups, K.TOKENS_PER_EPISODE):
        return f"{K.TOKENS_PER_EPISODE} not logged"
    colors = _colors(list(groups))
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for label, runs in groups.items():
        pts = np.array([(summaries[r.source].tokens, summaries[r.source].final) for r in runs], dtype=float)
        pts = pts[np.isfinite(pts).all(axis=1)]
        if not pts.size:
            continue
        ax.scatter(pts[:, 0], pts[:, 1], color=colors[label], alpha=0.45, s=18)
        sd = pts.std(axis=0, ddof=1) if len(pts) > 1 else np.zeros(2)
        ax.errorbar(pts[:, 0].mean(), pts[:, 1].mean(), xerr=sd[0], yerr=sd[1], marker="D", ms=7,
                    color=colors[label], capsize=3, label=f"{label} (n={len(pts)})")
    ax.set_xlabel("tokens per episode (mean over training)")
    ax.set_ylabel("final success")
    ax.grid(alpha=0.3)
    _legend(fig, np.array([ax]), title="variant (seeds): mean ± sd")
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Render on the Agg canvas and write a PNG."""
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=150)  # crisp when stretched to the page width
    return path
