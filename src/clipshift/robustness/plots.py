"""The standard effective-robustness plot (Taori et al. 2020): both axes in transformed space with
% tick labels, y = x, the baseline fit with its bootstrap band, baseline models in one colour,
other models coloured by ``group`` with vertical ER-interval error bars.

Uses ``matplotlib.figure.Figure`` with an explicit Agg canvas: no pyplot, no global backend change.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .baseline import bootstrap_lines
from .effective import AVG_SHIFTS
from .transforms import get_transform

TICK_SETS = (  # finest first; the finest set with at most MAX_TICKS ticks in range is used
    [0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999],
    [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999],
    [0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999],
)
MAX_TICKS = 8
COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
BASELINE_COLOUR = "#7f7f7f"
BAND_DRAWS, BAND_SEED, BAND_LEVEL = 500, 0, 0.95
FIGSIZE, DPI = (6.4, 5.6), 150  # → 960 × 840 pixels


def choose_ticks(p_lo: float, p_hi: float) -> np.ndarray:
    """Tick positions as accuracies (fractions) inside [p_lo, p_hi]: round values such as 10%, 30%, ... 99%."""
    for ticks in TICK_SETS:
        inside = np.array([v for v in ticks if p_lo <= v <= p_hi])
        if len(inside) <= MAX_TICKS:
            break
    if len(inside) < 3:  # a narrow range: evenly spaced round values instead
        inside = np.round(MaxNLocator(nbins=6, steps=[1, 2, 5, 10]).tick_values(p_lo, p_hi), 12)
        inside = inside[(inside >= p_lo - 1e-12) & (inside <= p_hi + 1e-12) & (inside > 0) & (inside < 1)]
    return inside


def _fit_curve(fit: pd.Series, rows: pd.DataFrame, grid: np.ndarray, axis_t) -> tuple[np.ndarray, np.ndarray]:
    """Baseline line and its (2, len(grid)) bootstrap band, in axis space, at axis-space x `grid`.

    The fit's own transform (``fits.transform``) is used for the line, so it is drawn correctly on
    either axis transform. The band refits on baseline models resampled with a fixed seed.
    """
    fit_t = get_transform(fit.get("transform", axis_t.name))
    gx = fit_t.forward(axis_t.inverse(grid))
    line = axis_t.forward(fit_t.inverse(fit["slope"] * gx + fit["intercept"]))
    base = rows[rows["is_baseline"].astype(bool)]
    slopes, intercepts = bootstrap_lines(np.random.default_rng(BAND_SEED), fit_t.forward(base["id_accuracy"]),
                                         fit_t.forward(base["shift_accuracy"]), BAND_DRAWS)
    alpha = (1 - BAND_LEVEL) / 2
    band = np.nanquantile(slopes[:, None] * gx + intercepts[:, None], [alpha, 1 - alpha], axis=0)
    return line, axis_t.forward(fit_t.inverse(band))


def _error_bars(part: pd.DataFrame, py: np.ndarray, t) -> np.ndarray:
    """(2, n) lower/upper vertical bar lengths in axis space: the ER interval as shift accuracies."""
    low, high = (np.clip((part["baseline_accuracy"] + part[c]).to_numpy(float), 0, 1) for c in ("ci_low", "ci_high"))
    low, high = (np.where(np.isnan(b), np.nan, t.forward(np.nan_to_num(b, nan=0.5))) for b in (low, high))
    return np.nan_to_num(np.clip([py - low, high - py], 0, None))  # missing intervals draw no bar


def _draw_models(ax, rows: pd.DataFrame, t, label_models: bool) -> None:
    base = rows[rows["is_baseline"].astype(bool)]
    ax.scatter(t.forward(base["id_accuracy"]), t.forward(base["shift_accuracy"]), color=BASELINE_COLOUR, s=28,
               label="baseline models", zorder=3)
    others = rows[~rows["is_baseline"].astype(bool)]
    groups = others["group"].fillna("other").astype(str) if "group" in others else pd.Series("other", others.index)
    for i, group in enumerate(sorted(groups.unique())):
        part = others[groups == group]
        px, py = t.forward(part["id_accuracy"]), t.forward(part["shift_accuracy"])
        ax.errorbar(px, py, yerr=_error_bars(part, py, t), fmt="o", color=COLOURS[i % len(COLOURS)], ms=7,
                    capsize=3, label=group, zorder=4)
        if label_models:
            for name, a, b in zip(part["model"], px, py):
                ax.annotate(str(name), (a, b), textcoords="offset points", xytext=(5, 4), fontsize=7)


def _set_axes(ax, lo: float, hi: float, t, dataset: str, title) -> None:
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ticks = choose_ticks(float(t.inverse(lo)), float(t.inverse(hi)))
    labels = [f"{100 * v:g}%" for v in ticks]
    ax.set_xticks(t.forward(ticks), labels)
    ax.set_yticks(t.forward(ticks), labels)
    ax.set_xlabel(f"in-distribution accuracy ({t.name} scale)")
    ax.set_ylabel(f"{dataset} accuracy ({t.name} scale)")
    ax.set_title(title or f"Effective robustness: {dataset}")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="upper left")


def save_png_atomic(fig: Figure, path, dpi: int = DPI) -> Path:
    """Write `fig` as PNG to `path` via a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_effective_robustness(er: pd.DataFrame, fits: pd.DataFrame, dataset: str, path, *, title=None,
                              transform: str = "logit", label_models: bool = True) -> Path:
    """Draw the ER plot of `dataset` (a shift or ``avg_shifts``) from the tables of
    ``compute_effective_robustness`` to the PNG `path` (960 × 840 px); returns the path."""
    rows = er[er["dataset"] == dataset]
    if rows.empty or dataset not in set(fits["dataset"]):
        raise ValueError(f"dataset {dataset!r} not in er/fits; datasets: {sorted(fits['dataset'])}")
    t = get_transform(transform)
    x, y = t.forward(rows["id_accuracy"]), t.forward(rows["shift_accuracy"])
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    pad = 0.08 * (hi - lo) + 0.15
    lo, hi = lo - pad, hi + pad
    fig = Figure(figsize=FIGSIZE)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=1, label="y = x")
    fit = fits.set_index("dataset").loc[dataset]
    grid = np.linspace(lo, hi, 200)
    line, band = _fit_curve(fit, rows, grid, t)
    ax.fill_between(grid, band[0], band[1], color="black", alpha=0.12, lw=0, label="95% bootstrap band")
    ax.plot(grid, line, color="black", lw=1.5, label=f"baseline fit (R² {fit['r2']:.2f})")
    _draw_models(ax, rows, t, label_models)
    _set_axes(ax, lo, hi, t, dataset, title)
    fig.tight_layout()
    return save_png_atomic(fig, path)


def plot_all(er: pd.DataFrame, fits: pd.DataFrame, out_dir, **kwargs) -> list[Path]:
    """One ``er_<dataset>.png`` per dataset in `fits` under `out_dir` (created), ``avg_shifts`` first.
    Characters other than letters, digits, ``._-`` in a dataset name become ``_`` in the file name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = sorted(fits["dataset"], key=lambda d: (d != AVG_SHIFTS, str(d)))
    return [plot_effective_robustness(er, fits, d, out_dir / f"er_{re.sub(r'[^A-Za-z0-9._-]', '_', str(d))}.png",
                                      **kwargs) for d in datasets]
