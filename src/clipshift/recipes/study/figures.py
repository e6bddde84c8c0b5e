"""The figure of one hypothesis: its models against the baseline, and ER with intervals over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...robustness.effective import AVERAGE
from ...robustness.colours import BASELINE_COLOUR, COLOURS, assign_colours
from ...robustness.plots import fit_curve, save_png_atomic, set_axes
from ...robustness.transforms import get_transform
from .hypotheses import REGISTRY, Hypothesis


def config_colours(rows_of: dict[str, list[dict]]) -> dict[str, str]:
    """Configuration → colour for all the hypothesis figures of a run (`rows_of`: hypothesis name →
    its rows): one configuration has one colour in every figure, those of one figure differ
    (:func:`~clipshift.robustness.colours.assign_colours`). The per-shift figure colours its two
    roles (with and without the shift's domain), not configurations, and is left out."""
    return assign_colours([r["config"] for r in rows] for name, rows in rows_of.items()
                          if REGISTRY[name].axis != "shift")


def plot_hypothesis(hypothesis: Hypothesis, rows: list[dict], er: pd.DataFrame, fits: pd.DataFrame, path: Path,
                    id_dataset: str, colours: dict | None = None) -> Path:
    """Left: average-shift vs ID accuracy (logit axes) with the baseline models and fit, each seed's
    model small and each configuration's mean large (joined along a sweep). Right: ER per
    configuration with its interval over seeds and the seeds as dots. `colours`: configuration →
    colour shared by the run's figures (:func:`config_colours`; default: the rows' in order)."""
    if hypothesis.axis == "shift":
        return plot_per_shift(hypothesis, rows, er, path)
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
    fig = _figure((12, 5.2))
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
    colours = assign_colours([keys], given={k: c for k, c in (colours or {}).items() if k in keys})
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


def _figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def plot_per_shift(hypothesis: Hypothesis, rows: list[dict], er: pd.DataFrame, path: Path) -> Path:
    """ER on each shift of configurations compared per shift (rows in pairs: with, then without that
    shift's domain): means with 95% intervals over seeds, each seed a dot."""
    fig = _figure((9, 5))
    ax = fig.subplots()
    shifts = list(dict.fromkeys(r["dataset"] for r in rows))
    styles = [("with the shift's domain", COLOURS[0], -0.14), ("without it", COLOURS[1], 0.14)]
    for i, shift in enumerate(shifts):
        pair = [r for r in rows if r["dataset"] == shift]
        for (label, colour, offset), row in zip(styles, pair):
            seeds = er[(er["dataset"] == shift) & (er["config"] == row["config"])]["effective_robustness"]
            mean = 100 * row["effective_robustness"]
            ax.errorbar([i + offset], [mean], yerr=[[mean - 100 * row["ci_low"]], [100 * row["ci_high"] - mean]],
                        fmt="o", color=colour, ms=8, capsize=4, lw=1.5, zorder=4, label=label if i == 0 else None)
            ax.scatter(i + offset + np.linspace(-0.03, 0.03, len(seeds)), 100 * seeds, color=colour, s=14, alpha=0.5,
                       lw=0, zorder=3)
    ax.axhline(0, color="black", lw=1)
    ax.set_xticks(range(len(shifts)), shifts)
    ax.set_xlim(-0.6, len(shifts) - 0.4)
    ax.set_xlabel("shift (the domain removed is that shift's own)")
    ax.set_ylabel("effective robustness on the shift (pp)")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{hypothesis.title}\nCLIP on diverse data with and without each shift's domain "
                 "(mean, 95% interval over seeds; dots: seeds)", fontsize=10)
    fig.tight_layout()
    return save_png_atomic(fig, path)


def plot_finetune_curves(curves: dict[str, list[dict]], path: Path) -> Path:
    """Held-out accuracy per epoch of each early-stopped fine-tune; the kept (best) epoch marked."""
    fig = _figure((7.5, 4.5))
    ax = fig.subplots()
    for i, (name, records) in enumerate(curves.items()):
        epochs = [r["epoch"] for r in records]
        acc = [100 * r["holdout_accuracy"] for r in records]
        colour = COLOURS[i % len(COLOURS)]
        ax.plot(epochs, acc, "-o", color=colour, ms=3, lw=1.2, label=name)
        best = records[-1]["best_epoch"]
        ax.scatter([best], [acc[epochs.index(best)]], s=90, facecolor="none", edgecolor=colour, lw=1.5, zorder=4)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("held-out accuracy (%)")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("SimCLR + text-matched fine-tune: held-out accuracy (circle: the epoch kept)", fontsize=10)
    fig.tight_layout()
    return save_png_atomic(fig, path)
