"""The figure of one hypothesis: its models against the baseline, and ER with intervals over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...robustness.effective import AVERAGE
from ...robustness.plots import BASELINE_COLOUR, COLOURS, fit_curve, save_png_atomic, set_axes
from ...robustness.transforms import get_transform
from .hypotheses import Hypothesis


def plot_hypothesis(hypothesis: Hypothesis, rows: list[dict], er: pd.DataFrame, fits: pd.DataFrame, path: Path,
                    id_dataset: str) -> Path:
    """Left: average-shift vs ID accuracy (logit axes) with the baseline models and fit, each seed's
    model small and each configuration's mean large (joined along a sweep). Right: ER per
    configuration with its interval over seeds and the seeds as dots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    
    t = get_transform("logit")
    avg = er[er["dataset"] == AVERAGE]
    keys = [r["config"] for r in rows]
    mine = avg[avg["config"].isin(keys)]
    base = avg[avg["is_baseline"].astype(bool)]
    shown = pd.concat([base, mine])
    x, y = t.forward(shown["id_accuracy"]), t.forward(shown["shift_accuracy"])
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    pad = 0.08 * (hi - lo) + 0.15
    lo, hi = lo - pad, hi + pad
    fig = Figure(figsize=(12, 5.2))
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1, 1.15]))
    grid = np.linspace(lo, hi, 200)
    fit = fits.set_index("dataset").loc[AVERAGE]
    line, band = fit_curve(fit, avg, grid, t)
    ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=1, label="y = x")
    ax.fill_between(grid, band[0], band[1], color="black", alpha=0.12, lw=0, label="95% bootstrap band")
    ax.plot(grid, line, color="black", lw=1.5, label=f"baseline fit (R² {fit['r2']:.2f})")
    ax.scatter(t.forward(base["id_accuracy"]), t.forward(base["shift_accuracy"]), color=BASELINE_COLOUR, s=28,
               lw=0, label=f"baseline models ({len(base)})", zorder=3)
    ordered = hypothesis.axis != "categorical"
    colours = {k: COLOURS[i % len(COLOURS)] for i, k in enumerate(keys)}
    means = []
    for row in rows:
        part = mine[mine["config"] == row["config"]]
        c = colours[row["config"]]
        ax.scatter(t.forward(part["id_accuracy"]), t.forward(part["shift_accuracy"]), color=c, s=14, alpha=0.45, lw=0,
                   zorder=4)
        mx, my = float(t.forward(row["id_accuracy"])), float(t.forward(row["shift_accuracy"]))
        ax.scatter([mx], [my], color=c, s=70, edgecolor="white", lw=0.8, zorder=5, label=_short(hypothesis, row))
        means.append((mx, my))
    if ordered and len(means) > 1:
        ax.plot(*zip(*means), color="dimgrey", lw=1, zorder=4.5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    set_axes(ax, lo, hi, t, AVERAGE, id_dataset, "Average over shifts vs in-distribution accuracy")
    ax.legend(fontsize=7, loc="upper left")

    positions = _positions(hypothesis, rows)
    for pos, row in zip(positions, rows):
        c = colours[row["config"]]
        part = mine[mine["config"] == row["config"]]
        er_pp = 100 * row["effective_robustness"]
        bx.errorbar([pos], [er_pp], yerr=[[er_pp - 100 * row["ci_low"]], [100 * row["ci_high"] - er_pp]], fmt="o",
                    color=c, ms=8, capsize=4, lw=1.5, zorder=4)
        jitter = np.linspace(-0.06, 0.06, len(part)) * (np.ptp(positions) or 1) if len(part) > 1 else [0.0]
        bx.scatter(pos + np.asarray(jitter), 100 * part["effective_robustness"], color=c, s=14, alpha=0.5, lw=0,
                   zorder=3)
    if ordered and len(rows) > 1:
        bx.plot(positions, [100 * r["effective_robustness"] for r in rows], color="dimgrey", lw=1, zorder=2)
    bx.axhline(0, color="black", lw=1)
    bx.set_ylabel("effective robustness, average over shifts (pp)")
    bx.grid(alpha=0.25)
    if hypothesis.axis == "train_size":
        bx.set_xscale("log")
        bx.set_xticks(positions, [f"{r['train_size']}" for r in rows])
        bx.minorticks_off()
        bx.set_xlabel("training-set size (images, log scale)")
    elif hypothesis.axis == "diverse_fraction":
        bx.set_xticks(positions, [f"{100 * r['diverse_fraction']:g}%" for r in rows])
        bx.set_xlabel("fraction of diverse data in the training set")
    else:
        bx.set_xticks(positions, [_short(hypothesis, r).replace(" · ", "\n") for r in rows], fontsize=8)
        bx.set_xlim(-0.6, len(rows) - 0.4)
    bx.set_title("ER: mean and 95% interval over seeds (dots: single seeds)")
    fig.suptitle(hypothesis.title, fontsize=13, fontweight="bold")
    fig.tight_layout()
    return save_png_atomic(fig, path)


def _short(hypothesis: Hypothesis, row: dict) -> str:
    if hypothesis.axis == "train_size":
        return f"n = {row['train_size']}"
    if hypothesis.axis == "diverse_fraction":
        return f"{100 * row['diverse_fraction']:g}% diverse"
    return str(row["label"]).replace(f" (n={row['train_size']})", "")


def _positions(hypothesis: Hypothesis, rows: list[dict]) -> list[float]:
    if hypothesis.axis != "categorical":
        return [float(r[hypothesis.axis]) for r in rows]
    return [float(i) for i in range(len(rows))]
