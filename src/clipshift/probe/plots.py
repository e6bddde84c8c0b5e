"""Figures of the probes: sorted per-dimension magnitudes, kurtosis vs effective robustness, CKA.

``matplotlib.figure.Figure`` with an explicit Agg canvas (no pyplot, no global backend change),
written atomically with :func:`clipshift.robustness.plots.save_png_atomic`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..robustness.colours import BASELINE_COLOUR, assign_colours
from ..robustness.plots import save_png_atomic

DPI = 150


def _group_colours(groups: Mapping[str, str], colours: Mapping[str, str] | None = None) -> dict[str, str]:
    """Model → colour: baseline models grey, other groups in their colour of `colours` (group →
    colour, the run's: :func:`~clipshift.robustness.colours.run_colours`), the groups it lacks in the
    package's palette around it."""
    names = sorted({g for g in groups.values() if g != "baseline"})
    palette = assign_colours([names], given={g: c for g, c in (colours or {}).items() if g in names})
    return {m: BASELINE_COLOUR if g == "baseline" else palette[g] for m, g in groups.items()}


def plot_magnitudes(profiles: Mapping[str, np.ndarray], path, *, groups: Mapping[str, str] | None = None,
                    ratio: float | None = None, title: str | None = None,
                    colours: Mapping[str, str] | None = None) -> Path:
    """Per model, the mean |activation| of every dimension divided by the median dimension's,
    sorted from largest (log scale): outlier features stand out at the left. `ratio` draws the
    outlier threshold; `colours`: group → colour of the run's figures."""
    groups = dict(groups or {m: m for m in profiles})
    colours = _group_colours({m: groups.get(m, m) for m in profiles}, colours)
    fig = Figure(figsize=(7.2, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for model, values in profiles.items():
        values = np.sort(np.asarray(values, dtype=float))[::-1]
        baseline = groups.get(model) == "baseline"
        ax.plot(np.arange(1, len(values) + 1), values, color=colours[model], lw=0.9 if baseline else 1.6,
                alpha=0.6 if baseline else 1.0, label=model)
    if ratio is not None:
        ax.axhline(ratio, color="black", ls="--", lw=1, label=f"outlier threshold ({ratio:g}× median)")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("feature dimension, sorted by mean |activation| (rank)")
    ax.set_ylabel("mean |activation| / median dimension's")
    ax.set_title(title or "Per-dimension activation magnitudes of h (in-distribution set)")
    ax.grid(alpha=0.25, which="both")
    ax.legend(fontsize=6, ncol=2, loc="upper right")
    fig.tight_layout()
    return save_png_atomic(fig, path, dpi=DPI)


def plot_kurtosis_vs_er(summary: pd.DataFrame, path, *, title: str | None = None,
                        colours: Mapping[str, str] | None = None) -> Path:
    """One point per model: mean kurtosis of h on the in-distribution set (horizontal bar: 95%
    interval of the mean) against average effective robustness in pp (vertical bar: its interval).
    `summary` columns: model, group, kurtosis_mean, kurtosis_sem, effective_robustness
    [, ci_low, ci_high] (fractions); models without ER are left out. `colours`: group → colour of
    the run's figures."""
    rows = summary.dropna(subset=["effective_robustness", "kurtosis_mean"])
    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = _group_colours(dict(zip(rows["model"], rows["group"].astype(str))), colours)
    for group in sorted(rows["group"].astype(str).unique(), key=lambda g: (g != "baseline", g)):
        part = rows[rows["group"].astype(str) == group]
        y = 100 * part["effective_robustness"].to_numpy(float)
        if {"ci_low", "ci_high"} <= set(part.columns):
            low = np.clip(y - 100 * part["ci_low"].to_numpy(float), 0, None)
            high = np.clip(100 * part["ci_high"].to_numpy(float) - y, 0, None)
            yerr = np.nan_to_num(np.stack([low, high]))
        else:
            yerr = None
        ax.errorbar(part["kurtosis_mean"], y, xerr=1.96 * part["kurtosis_sem"].fillna(0), yerr=yerr, fmt="o",
                    color=colours[part["model"].iloc[0]], capsize=3, ms=6, label=group, zorder=3)
        for name, a, b in zip(part["model"], part["kurtosis_mean"], y):
            ax.annotate(str(name), (a, b), xytext=(4, 3), textcoords="offset points", fontsize=6)
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.axvline(3, color="grey", lw=0.8, ls="--", label="Gaussian (κ = 3)")
    ax.set_xlabel("kurtosis of h, mean over in-distribution images")
    ax.set_ylabel("average effective robustness (pp)")
    ax.set_title(title or "Outlier features vs effective robustness")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_png_atomic(fig, path, dpi=DPI)


def plot_cka(matrix: pd.DataFrame, path, *, title: str | None = None) -> Path:
    """Heat map of a symmetric CKA matrix (0 to 1), values written in the cells when few models."""
    k = len(matrix)
    size = max(4.5, 0.45 * k + 2.5)
    fig = Figure(figsize=(size + 0.8, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(matrix.to_numpy(float), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(k), [str(c) for c in matrix.columns], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), [str(i) for i in matrix.index], fontsize=7)
    if k <= 16:
        for i in range(k):
            for j in range(k):
                value = matrix.iat[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if value > 0.6 else "white")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="linear CKA")
    ax.set_title(title or "Similarity of representations (linear CKA)")
    fig.tight_layout()
    return save_png_atomic(fig, path, dpi=DPI)
