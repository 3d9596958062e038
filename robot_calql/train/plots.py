"""PNG plots written at the end of a run (matplotlib, Agg backend: no display needed).

- `success.png`: evaluation success rate against online environment steps (fine-tuning), with
  the offline (step 0) success as a dashed line; with `interventions`, a panel beside it with
  each episode's share of human steps (takeovers) against the same steps.
- `calibration.png`: learned Q(s, pi(s)) against the Monte-Carlo return of held-out data, one
  point per state, with the y = x line. A calibrated critic (Cal-QL) sits near the line; a
  conservative one (CQL) sits well below it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_success(
    steps: np.ndarray | list,
    success: np.ndarray | list,
    out: str | os.PathLike,
    title: str = "success rate during online fine-tuning",
    curves: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    checks: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    checks_label: str = "other placements",
    interventions: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """Success rate (0..1) against online steps. `curves` adds named extra curves (benchmarks);
    `checks[name] = (x, rates)` marks, in that curve's colour, separate evaluations at steps `x`
    (rates: one row per seed, one column per step) as hollow squares at the seeds' mean with bars
    from their lowest to their highest. `interventions[name] = (x, rate)`: per-episode share of
    human steps at online step x (episode ends), drawn in a second panel to the right."""
    plt = _plt()
    if interventions:
        fig, (ax, ax_h) = plt.subplots(1, 2, figsize=(11, 4))
        _plot_interventions(ax_h, interventions)
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
    steps, success = np.asarray(steps), np.asarray(success)
    if len(steps):
        ax.plot(steps, success, marker="o", ms=3, label="success (eval)")
        ax.axhline(float(success[0]), ls="--", color="gray", lw=1, label="offline (step 0)")
    for name, (x, y) in (curves or {}).items():
        (line,) = ax.plot(np.asarray(x), np.asarray(y), marker="o", ms=3, label=name)
        if name in (checks or {}):
            cx, rates = (np.asarray(v, dtype=np.float64) for v in checks[name])
            rates = rates.reshape(-1, len(cx))
            mean = rates.mean(axis=0)
            ax.errorbar(cx, mean, yerr=[mean - rates.min(axis=0), rates.max(axis=0) - mean], fmt="s", ms=7,
                        mfc="none", color=line.get_color(), capsize=3, label=f"{name}, {checks_label}")
    ax.set_xlabel("online environment steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:  # nothing to label when no evaluation ran
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    return _save(plt, fig, out)


def _plot_interventions(ax, interventions: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Per-episode intervention share (dots) and its running mean over 10 episodes (line)."""
    for name, (x, rate) in interventions.items():
        x, rate = np.asarray(x, dtype=np.float64), np.asarray(rate, dtype=np.float64)
        if not len(x):
            continue
        (pts,) = ax.plot(x, rate, "o", ms=2, alpha=0.35)
        k = min(10, len(rate))
        smooth = np.convolve(rate, np.ones(k) / k, mode="valid")
        ax.plot(x[k - 1:], smooth, color=pts.get_color(), label=f"{name} (mean of {k} episodes)")
    ax.set_xlabel("online environment steps")
    ax.set_ylabel("share of human steps per episode")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("human takeovers")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)


def plot_calibration(
    q: np.ndarray, mc_return: np.ndarray, out: str | os.PathLike, title: str = "critic calibration (held-out data)",
    label: str = "held-out data", extra: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """Scatter of learned Q(s, pi(s)) against MC return-to-go, with y = x. `extra` adds named
    (q, mc_return) series in other colours (fine-tuning: the policy's own recent episodes)."""
    plt = _plt()
    series = {label: (q, mc_return), **(extra or {})}
    series = {k: (np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)) for k, (a, b) in series.items()}
    fig, ax = plt.subplots(figsize=(5, 5))
    lines = []
    for name, (qs, mcs) in series.items():
        if len(qs):
            ax.scatter(mcs, qs, s=6, alpha=0.5, label=name)
            lines.append(f"{name}: mean Q {qs.mean():.2f}, mean MC {mcs.mean():.2f}")
    every = [v for pair in series.values() for v in pair if len(v)]
    if every:
        lo = float(min(v.min() for v in every))
        hi = float(max(v.max() for v in every))
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="Q = MC return")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title("\n".join([title, *lines]), fontsize=9)
    ax.set_xlabel("Monte-Carlo return-to-go")
    ax.set_ylabel("learned Q(s, pi(s))")
    ax.grid(alpha=0.3)
    return _save(plt, fig, out)


def _save(plt, fig, out: str | os.PathLike) -> Path:
    """Lay out, write the PNG (creating its folder) and free the figure."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
