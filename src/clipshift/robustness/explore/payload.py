"""The explorer page's data: er.csv and fits.csv as compact columnar JSON.

One entry per model (its id, name, pretrained tag, source table, training data, baseline or not, the
user's own or not, its colour) and, per dataset (each shift and ``average``), the rows of the models
that have it as index arrays into the models with rounded accuracies; per dataset also the baseline
fit and its 95% bootstrap band, as accuracies along a grid of id accuracies, so that the page draws
them on either axis scale (logit or probit) without refitting.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..colours import BASELINE_COLOUR, model_colours
from ..effective import AVERAGE
from ..plots import TICK_SETS, fit_curve, plane_weights
from ..transforms import CLIP_EPSILON, get_transform

DIGITS = 5  # accuracies and ER as fractions: 0.85596 is 85.596%, finer than any published table
GRID_POINTS = 80
MAX_DEFAULT_USER = 60  # without user_models, the non-baseline models are the user's when there are at most this many
ROW_COLUMNS = {"x": "id_accuracy", "y": "shift_accuracy", "b": "baseline_accuracy", "e": "effective_robustness",
               "l": "ci_low", "h": "ci_high"}


def _rounded(values) -> list:
    """Floats rounded to DIGITS decimals; NaN becomes None (JSON null)."""
    out = np.round(np.asarray(values, dtype=float), DIGITS)
    return [None if math.isnan(v) else float(v) for v in out]


def _texts(values) -> list:
    """Strings, with missing values as ''."""
    return ["" if pd.isna(v) else str(v) for v in values]


def _categories(values) -> tuple[list, list]:
    """(distinct non-empty labels in order of appearance, each value's index into them or -1)."""
    labels = list(dict.fromkeys(v for v in _texts(values) if v))
    index = {label: i for i, label in enumerate(labels)}
    return labels, [index.get(v, -1) for v in _texts(values)]


def default_user_models(er: pd.DataFrame) -> list:
    """The models to highlight when none are named: those whose ``role`` is ``user`` where er has roles
    (``clipshift er``: the models of the results table), else the non-baseline ones if there are at most
    ``MAX_DEFAULT_USER`` of them (a run's own models beside its baseline), else none."""
    if "role" in er:
        return list(dict.fromkeys(er.loc[er["role"] == "user", "model"]))
    others = list(dict.fromkeys(er.loc[~er["is_baseline"].astype(bool), "model"]))
    return others if len(others) <= MAX_DEFAULT_USER else []


def _models(er: pd.DataFrame, user: list, colours: dict) -> dict:
    """One entry per model, as columns."""
    first = er.drop_duplicates("model").set_index("model", drop=False)
    base = er.groupby("model", sort=False)["is_baseline"].any().reindex(first.index)
    sources, source_index = _categories(first["source"]) if "source" in first else ([], [-1] * len(first))
    user_set = set(user)
    out = {"model": _texts(first["model"]), "source": source_index, "sources": sources,
           "baseline": [int(bool(v)) for v in base], "user": [int(m in user_set) for m in first.index],
           "colour": [colours.get(m, "") for m in first.index]}
    for column in ("name", "pretrained", "training_data", "group"):
        if column in first and first[column].notna().any():
            out[column] = _texts(first[column])
    return out


def _fit_entry(fit: pd.Series, rows: pd.DataFrame) -> dict:
    """The fit of one dataset: its numbers, and line and band as accuracies along a grid of id accuracies."""
    t = get_transform(str(fit.get("transform", "logit")))
    entry = {"r2": round(float(fit["r2"]), 4), "n": int(fit["num_models"]), "transform": t.name}
    weights = plane_weights(fit)
    if weights:  # Shi et al.'s plane: x is its prediction, y = x is the plane itself
        entry["plane"] = {name: round(w, 4) for name, w in weights.items()}
        entry["intercept"] = round(float(fit["intercept"]), 4)
        return entry
    entry.update(slope=round(float(fit["slope"]), 4), intercept=round(float(fit["intercept"]), 4))
    x = t.forward(rows["id_accuracy"].to_numpy(float))
    pad = 0.08 * (x.max() - x.min()) + 0.5
    grid = np.linspace(x.min() - pad, x.max() + pad, GRID_POINTS)
    line, band = fit_curve(fit, rows, grid, t)
    entry["grid"], entry["line"] = _rounded(t.inverse(grid)), _rounded(t.inverse(line))
    entry["lo"], entry["hi"] = _rounded(t.inverse(band[0])), _rounded(t.inverse(band[1]))
    return entry


def _datasets(fits: pd.DataFrame) -> list:
    """Datasets of the fits: ``average`` first, then the shifts in their order."""
    names = [str(d) for d in fits["dataset"]]
    return sorted(names, key=lambda d: d != AVERAGE)


def build_payload(er: pd.DataFrame, fits: pd.DataFrame, *, user_models=None, transform: str = "logit",
                  title: str = "Effective robustness explorer", colours: dict | None = None) -> dict:
    """The page's data (a JSON-ready dict) from the tables of ``compute_effective_robustness``.

    `user_models`: model ids to highlight and label (default: :func:`default_user_models`);
    `colours`: {model: CSS colour} for them (default: their colour in the static figures,
    ``colours.model_colours(er)``: by group);
    `transform`: the axis scale the page opens with (``logit`` or ``probit``)."""
    get_transform(transform)
    missing = [c for c in ["model", "dataset", "is_baseline", *ROW_COLUMNS.values()] if c not in er.columns]
    if missing:
        raise ValueError(f"er: missing column(s) {missing}; found {list(er.columns)}")
    user = [m for m in (default_user_models(er) if user_models is None else list(user_models))
            if m in set(er["model"])]
    models = _models(er, user, {**model_colours(er), **(colours or {})})
    index = {m: i for i, m in enumerate(models["model"])}
    fit_rows = fits.assign(dataset=fits["dataset"].astype(str)).set_index("dataset")
    data, fit_data = {}, {}
    for dataset in _datasets(fits):
        rows = er[er["dataset"].astype(str) == dataset]
        if rows.empty:
            continue
        data[dataset] = {"i": [index[str(m)] for m in rows["model"]],
                         **{key: _rounded(rows[column]) for key, column in ROW_COLUMNS.items()}}
        fit_data[dataset] = _fit_entry(fit_rows.loc[dataset], rows)
    id_dataset = str(er["id_dataset"].iloc[0]) if "id_dataset" in er and len(er) else "in-distribution"
    return {"title": title, "transform": transform, "id_dataset": id_dataset, "average": AVERAGE,
            "datasets": list(data), "models": models, "data": data, "fits": fit_data,
            "baseline_colour": BASELINE_COLOUR, "ticks": [list(t) for t in TICK_SETS], "epsilon": CLIP_EPSILON}
