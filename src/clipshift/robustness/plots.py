"""The standard effective-robustness plot: transformed axes with % ticks, y = x, the baseline
with its bootstrap band, baseline models in one colour, other models by group."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .effective import _bootstrap_lines
from .transforms import get_transform

TICKS = np.array([0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999])
COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _ticks(ax_set, lo: float, hi: float, t) -> None:
    inside = TICKS[(TICKS >= lo) & (TICKS <= hi)]
    ax_set(t.forward(inside), [f"{100 * v:g}%" for v in inside])


def plot_effective_robustness(er: pd.DataFrame, fits: pd.DataFrame, dataset: str, path, *, title=None,
                              transform: str = "logit", label_models: bool = True) -> Path:
    """Draw the ER plot of `dataset` (a shift or ``avg_shifts``) to the PNG `path`."""
    rows = er[er["dataset"] == dataset]
    if rows.empty:
        raise ValueError(f"no rows for dataset {dataset!r}; datasets: {sorted(er['dataset'].unique())}")
    fit = fits.set_index("dataset").loc[dataset]
    t = get_transform(transform)
    x, y = t.forward(rows["id_accuracy"]), t.forward(rows["shift_accuracy"])
    lo = min(x.min(), y.min()) - 0.4
    hi = max(x.max(), y.max()) + 0.4
    fig = Figure(figsize=(6.4, 5.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    grid = np.linspace(x.min() - 0.3, x.max() + 0.3, 100)
    ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=1, label="y = x")
    base = rows[rows["is_baseline"]]
    slopes, intercepts = _bootstrap_lines(np.random.default_rng(0), t.forward(base["id_accuracy"]),
                                          t.forward(base["shift_accuracy"]), 500)
    lines = slopes[:, None] * grid + intercepts[:, None]
    band = np.nanquantile(lines, [0.025, 0.975], axis=0)
    ax.fill_between(grid, band[0], band[1], color="black", alpha=0.12, lw=0)
    ax.plot(grid, fit["slope"] * grid + fit["intercept"], color="black", lw=1.5,
            label=f"baseline fit (R² {fit['r2']:.2f})")
    ax.scatter(t.forward(base["id_accuracy"]), t.forward(base["shift_accuracy"]), color="#7f7f7f", s=28,
               label="baseline models", zorder=3)
    others = rows[~rows["is_baseline"]]
    groups = others["group"].fillna("other") if "group" in others else pd.Series("other", index=others.index)
    for colour, group in zip(COLOURS * 3, sorted(groups.unique())):
        part = others[groups == group]
        px, py = t.forward(part["id_accuracy"]), t.forward(part["shift_accuracy"])
        err = [py - t.forward(np.clip(part["shift_accuracy"] - (part["effective_robustness"] - part["ci_low"]), 1e-4, 1 - 1e-4)),
               t.forward(np.clip(part["shift_accuracy"] + (part["ci_high"] - part["effective_robustness"]), 1e-4, 1 - 1e-4)) - py]
        ax.errorbar(px, py, yerr=np.abs(err), fmt="o", color=colour, ms=7, capsize=3, label=group, zorder=4)
        if label_models:
            for name, a, b in zip(part["model"], px, py):
                ax.annotate(name, (a, b), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    p_lo, p_hi = t.inverse(lo), t.inverse(hi)
    _ticks(lambda v, l: (ax.set_xticks(v), ax.set_xticklabels(l)), p_lo, p_hi, t)
    _ticks(lambda v, l: (ax.set_yticks(v), ax.set_yticklabels(l)), p_lo, p_hi, t)
    ax.set_xlabel(f"in-distribution accuracy ({transform} scale)")
    ax.set_ylabel(f"{dataset} accuracy ({transform} scale)")
    ax.set_title(title or f"Effective robustness: {dataset}")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name, dpi=150)
    os.replace(tmp.name, path)
    return path


def plot_all(er: pd.DataFrame, fits: pd.DataFrame, out_dir, **kwargs) -> list[Path]:
    """One ``er_<dataset>.png`` per dataset in `fits` (the average over shifts first)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = sorted(fits["dataset"], key=lambda d: (d != "avg_shifts", d))
    return [plot_effective_robustness(er, fits, d, out_dir / f"er_{d}.png", **kwargs) for d in datasets]
