"""The standard effective-robustness plot (Taori et al. 2020): both axes in transformed space with
% tick labels, y = x, the baseline fit with its bootstrap band, baseline models in one colour,
other models coloured by ``group`` with vertical ER-interval error bars.

Uses ``matplotlib.figure.Figure`` with an explicit Agg canvas: no pyplot, no global backend change.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..io import atomic_write
from .baseline import bootstrap_lines
from .colours import BASELINE_COLOUR, COLOURS, group_of, run_colours  # noqa: F401  (COLOURS: re-exported)
from .effective import AVERAGE, WEIGHT_PREFIX
from .transforms import get_transform

TICK_SETS = (  # finest first; the finest set with at most MAX_TICKS ticks in range is used
    [0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999],
    [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999],
    [0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999],
)
MAX_TICKS = 8
BAND_DRAWS, BAND_SEED, BAND_LEVEL = 500, 0, 0.95
FIGSIZE, DPI = (6.4, 5.6), 150  # → 960 × 840 pixels
MAX_LABELLED = 10  # with more non-baseline models than this, only the ones with the highest ER are named


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


def fit_curve(fit: pd.Series, rows: pd.DataFrame, grid: np.ndarray, axis_t) -> tuple[np.ndarray, np.ndarray]:
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


def _labelled(others: pd.DataFrame, label_models) -> set:
    """Models whose names are written next to their point: all of them (True / "auto" with few
    models), none (False), the `MAX_LABELLED` highest effective robustness ("auto" with many), or
    those of a collection of model names."""
    if label_models is False:
        return set()
    if not isinstance(label_models, (bool, str)):
        return set(label_models) & set(others["model"])
    if label_models is True or len(others) <= MAX_LABELLED:
        return set(others["model"])
    return set(others.nlargest(MAX_LABELLED, "effective_robustness")["model"])


def _draw_models(ax, rows: pd.DataFrame, t, label_models, colours=None) -> bool:
    """Scatter baseline and other models, a group in its colour of `colours` (group → colour; groups
    it lacks, or all without it, numbered in sorted order: :func:`.colours.run_colours`); returns
    whether "auto" labelled only some of them."""
    base = rows[rows["is_baseline"].astype(bool)]
    many = len(base) > 60
    ax.scatter(t.forward(base["id_accuracy"]), t.forward(base["shift_accuracy"]), color=BASELINE_COLOUR,
               s=8 if many else 28, alpha=0.5 if many else 1.0, lw=0, label=f"baseline models ({len(base)})",
               zorder=3)
    others = rows[~rows["is_baseline"].astype(bool)]
    labels, colours = [], run_colours(rows, given=colours)
    if "role" in others:  # reference models (published, --compare): small, faint, unnamed, below the user's
        _draw_references(ax, others[others["role"] == "reference"], t, colours)
        others = others[others["role"] != "reference"]
    groups = group_of(others)
    named = _labelled(others, label_models)
    crowded = len(others) > 40
    for group in sorted(groups.unique()):
        part = others[groups == group]
        px, py = t.forward(part["id_accuracy"]), t.forward(part["shift_accuracy"])
        ax.errorbar(px, py, yerr=_error_bars(part, py, t), fmt="o", color=colours[group],
                    ms=4 if crowded else 7, capsize=0 if crowded else 3, elinewidth=0.6 if crowded else 1.0,
                    alpha=0.8 if crowded else 1.0, label=f"{group} ({len(part)})" if crowded else group, zorder=4)
        labels += [(str(n), a, b) for n, a, b in zip(part["model"], px, py) if n in named]
    _place_labels(ax, labels, fontsize=6 if crowded else 7)
    return isinstance(label_models, str) and 0 < len(named) < len(others)


def _draw_references(ax, refs: pd.DataFrame, t, colours: dict) -> None:
    """Reference models (``role`` reference): dots in their group's colour, small and faint, without
    intervals or names, so that hundreds of them leave the user's models readable."""
    groups = group_of(refs)
    for group in sorted(groups.unique()):
        part = refs[groups == group]
        ax.scatter(t.forward(part["id_accuracy"]), t.forward(part["shift_accuracy"]), color=colours[group], s=7,
                   alpha=0.35, lw=0, label=f"reference: {group} ({len(part)})", zorder=3.5)


def _place_labels(ax, labels: list, fontsize: float) -> None:
    """Write model names beside their points without overlapping one another: names go right of
    the point (left of it in the right quarter of the axes) and are pushed down, in order of
    height, until they are a line apart; a thin leader joins a moved name to its point."""
    lo, hi = ax.get_xlim()
    step = (hi - lo) * fontsize / 300  # about one line of text in data units on a 5.6-inch axes
    placed = None
    for name, a, b in sorted(labels, key=lambda item: -item[2]):
        y = b if placed is None else min(b, placed - step)
        placed = y
        left = a > lo + 0.75 * (hi - lo)
        moved = abs(y - b) > step / 3
        ax.annotate(name, (a, b), xytext=(a + (hi - lo) * (-0.015 if left else 0.015), y), fontsize=fontsize,
                    va="center", ha="right" if left else "left", zorder=5,
                    arrowprops=dict(arrowstyle="-", lw=0.4, color="dimgrey") if moved else None)


def set_axes(ax, lo: float, hi: float, t, dataset: str, id_dataset: str, title) -> None:
    """Square limits [lo, hi] (axis space) on both axes, percentage ticks, labels naming the sets and
    the transform `t`, the title (default: the dataset's), a light grid and the legend."""
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ticks = choose_ticks(float(t.inverse(lo)), float(t.inverse(hi)))
    labels = [f"{100 * v:g}%" for v in ticks]
    ax.set_xticks(t.forward(ticks), labels)
    ax.set_yticks(t.forward(ticks), labels)
    ax.set_xlabel(f"{id_dataset} accuracy, in distribution ({t.name} scale)")
    ax.set_ylabel(f"{'average shift' if dataset == AVERAGE else dataset} accuracy ({t.name} scale)")
    ax.set_title(title or f"Effective robustness: {dataset}")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="upper left")




def _padded_limits(x, y) -> tuple[float, float]:
    """Common axis limits (transformed scale) holding every point, with a margin."""
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    pad = 0.08 * (hi - lo) + 0.15
    return lo - pad, hi + pad


def save_png_atomic(fig: Figure, path, dpi: int = DPI) -> Path:
    """Write `fig` as PNG to `path` via a temp file in the same directory and ``os.replace``."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi), binary=True)


def plot_effective_robustness(er: pd.DataFrame, fits: pd.DataFrame, dataset: str, path, *, title=None,
                              transform: str = "logit", label_models="auto", overlay=None, colours=None) -> Path:
    """Draw the ER plot of `dataset` (a shift or ``average``) from the tables of
    ``compute_effective_robustness`` to the PNG `path` (960 × 840 px); returns the path.

    `label_models`: True names every non-baseline model, False none, ``"auto"`` all of them when
    there are at most ``MAX_LABELLED``, else the ``MAX_LABELLED`` with the highest ER, or a collection
    of the model names to write. `overlay`: a function ``(ax, transform)`` that draws more in axis
    space (e.g. a path through some of the models) before the legend is made. `colours`: group →
    colour shared by a run's figures (:func:`~clipshift.robustness.colours.run_colours`); default:
    this figure's groups numbered in sorted order."""
    rows = er[er["dataset"] == dataset]
    if rows.empty or dataset not in set(fits["dataset"]):
        raise ValueError(f"dataset {dataset!r} not in er/fits; datasets: {sorted(fits['dataset'])}")
    if plane_weights(fits.set_index("dataset").loc[dataset]):
        return plot_multi_id_fit(er, fits, dataset, path, title=title, transform=transform,
                                 label_models=label_models, colours=colours)
    t = get_transform(transform)
    x, y = t.forward(rows["id_accuracy"]), t.forward(rows["shift_accuracy"])
    lo, hi = _padded_limits(x, y)
    fig = Figure(figsize=FIGSIZE)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=1, label="y = x")
    fit = fits.set_index("dataset").loc[dataset]
    grid = np.linspace(lo, hi, 200)
    line, band = fit_curve(fit, rows, grid, t)
    ax.fill_between(grid, band[0], band[1], color="black", alpha=0.12, lw=0, label="95% bootstrap band")
    ax.plot(grid, line, color="black", lw=1.5, label=f"baseline fit (R² {fit['r2']:.2f})")
    if title is None and dataset == AVERAGE:
        shifts = [str(d) for d in fits["dataset"] if d != AVERAGE]
        title = "Effective robustness: average over\n" + ", ".join(shifts)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    some = _draw_models(ax, rows, t, label_models, colours)
    if overlay is not None:
        overlay(ax, t)
    id_dataset = str(rows["id_dataset"].iloc[0]) if "id_dataset" in rows else "in-distribution"
    set_axes(ax, lo, hi, t, dataset, id_dataset, title)
    if some:
        ax.text(0.99, 0.01, f"named: the {MAX_LABELLED} highest ER", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=7, color="dimgrey")
    fig.tight_layout()
    return save_png_atomic(fig, path)


def plane_weights(fit: pd.Series) -> dict:
    """{id dataset: weight} of a multi-ID plane's fit row; empty for a line."""
    return {str(k)[len(WEIGHT_PREFIX):]: float(v) for k, v in fit.items()
            if str(k).startswith(WEIGHT_PREFIX) and pd.notna(v)}


def _plane_text(fit: pd.Series, t) -> str:
    terms = " + ".join(f"{w:.2f}·{t.name}({name})" for name, w in plane_weights(fit).items())
    return f"{t.name}(shift) = {terms} {'+' if fit['intercept'] >= 0 else '−'} {abs(fit['intercept']):.2f}"


def plot_multi_id_fit(er: pd.DataFrame, fits: pd.DataFrame, dataset: str, path, *, title=None,
                      transform: str = "logit", label_models="auto", colours=None) -> Path:
    """The multi-ID fit of Shi et al. for `dataset` as a PNG at `path` (960 × 840 px): each model's shift
    accuracy (y) against the plane's prediction from its id accuracies (x), both on the `transform`
    scale with % ticks. y = x is the plane itself, so the baseline models' scatter about it shows the
    fit (R² and the plane's equation in the legend) and a model's height above it is its effective
    robustness, drawn with its interval. `colours`: as for :func:`plot_effective_robustness`. Returns
    the path."""
    rows = er[er["dataset"] == dataset]
    if rows.empty or dataset not in set(fits["dataset"]):
        raise ValueError(f"dataset {dataset!r} not in er/fits; datasets: {sorted(fits['dataset'])}")
    fit = fits.set_index("dataset").loc[dataset]
    if not plane_weights(fit):
        raise ValueError(f"dataset {dataset!r}: fits has no {WEIGHT_PREFIX}<id dataset> columns (a one-id-dataset "
                         f"line: use plot_effective_robustness)")
    t = get_transform(transform)
    shown = rows.assign(id_accuracy=rows["baseline_accuracy"])  # x: the plane's prediction
    x, y = t.forward(shown["id_accuracy"]), t.forward(shown["shift_accuracy"])
    lo, hi = _padded_limits(x, y)
    fig = Figure(figsize=FIGSIZE)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([lo, hi], [lo, hi], color="black", lw=1.5,
            label=f"y = x: the plane (R² {fit['r2']:.2f}, {int(fit['num_models'])} models)\n{_plane_text(fit, t)}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    some = _draw_models(ax, shown, t, label_models, colours)
    ids = " + ".join(plane_weights(fit))
    set_axes(ax, lo, hi, t, dataset, ids, title or f"Effective robustness over {len(plane_weights(fit))} id sets "
              f"({ids}):\n{'average over shifts' if dataset == AVERAGE else dataset}")
    ax.set_xlabel(f"accuracy predicted by the plane from {', '.join(plane_weights(fit))} ({t.name} scale)")
    if some:
        ax.text(0.99, 0.01, f"named: the {MAX_LABELLED} highest ER", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=7, color="dimgrey")
    fig.tight_layout()
    return save_png_atomic(fig, path)


def plot_all(er: pd.DataFrame, fits: pd.DataFrame, out_dir, **kwargs) -> list[Path]:
    """One ``er_<dataset>.png`` per dataset in `fits` under `out_dir` (created), ``average`` first.
    Characters other than letters, digits, ``._-`` in a dataset name become ``_`` in the file name.
    The figures share one group → colour mapping, ``colours`` in `kwargs` or ``run_colours(er)``."""
    kwargs["colours"] = run_colours(er, given=kwargs.get("colours"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = sorted(fits["dataset"], key=lambda d: (d != AVERAGE, str(d)))
    return [plot_effective_robustness(er, fits, d, out_dir / f"er_{re.sub(r'[^A-Za-z0-9._-]', '_', str(d))}.png",
                                      **kwargs) for d in datasets]
