"""Effective robustness of every model in a long results table, with bootstrap intervals.

Input: a long DataFrame with columns ``model, dataset, metric, value, num_examples`` (+ any
metadata columns, carried through one value per model); only ``metric == "top1"`` rows are used,
values are accuracies as fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from .baseline import BaselineFit, bootstrap_lines
from .transforms import CLIP_EPSILON, check_accuracies, get_transform

AVG_SHIFTS = "avg_shifts"
CORE_COLUMNS = ("model", "dataset", "metric", "value", "num_examples")
ER_COLUMNS = ["model", "dataset", "id_accuracy", "shift_accuracy", "baseline_accuracy", "effective_robustness",
              "ci_low", "ci_high", "is_baseline"]
FIT_COLUMNS = ["dataset", "transform", "slope", "intercept", "r2", "n_models", "clip_epsilon"]


def _as_names(values, what: str) -> list:
    """A list of names from a string or an iterable of names; duplicates rejected."""
    names = [values] if isinstance(values, str) else list(values)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what}: duplicate name(s) {dupes}")
    return names


def _check_request(id_dataset, shift_datasets: list, n_bootstrap, confidence) -> None:
    if not shift_datasets:
        raise ValueError("shift_datasets: need at least one shift dataset, got none")
    if id_dataset in shift_datasets or AVG_SHIFTS in shift_datasets:
        bad = id_dataset if id_dataset in shift_datasets else AVG_SHIFTS
        raise ValueError(f"shift_datasets: {bad!r} cannot be a shift (it is the id dataset or the reserved "
                         f"name {AVG_SHIFTS!r})")
    if not (isinstance(n_bootstrap, (int, np.integer)) and n_bootstrap >= 1):
        raise ValueError(f"n_bootstrap must be an integer >= 1, got {n_bootstrap!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _top1(results: pd.DataFrame) -> pd.DataFrame:
    """The top1 rows, after checking columns, duplicates and that values are fractions."""
    missing = [c for c in ("model", "dataset", "metric", "value") if c not in results.columns]
    if missing:
        raise ValueError(f"results: missing column(s) {missing}; found {list(results.columns)}")
    top1 = results[results["metric"] == "top1"]
    dupes = top1[top1.duplicated(["model", "dataset"], keep=False)]
    if len(dupes):
        row = dupes.iloc[0]
        raise ValueError(f"results: duplicate top1 rows for model {row['model']!r} on dataset {row['dataset']!r}")
    bad = top1[~((top1["value"] >= 0) & (top1["value"] <= 1))]
    if len(bad):
        row = bad.iloc[0]
        raise ValueError(f"results: top1 value {float(row['value'])!r} of model {row['model']!r} on dataset "
                         f"{row['dataset']!r} is not an accuracy fraction in [0, 1]")
    return top1


def _check_datasets(top1: pd.DataFrame, id_dataset, shift_datasets: list, baseline_models: list) -> None:
    present = set(top1["dataset"])
    if id_dataset not in present:
        raise ValueError(f"id_dataset {id_dataset!r} not in results; top1 datasets present: {sorted(present)}")
    absent = [d for d in shift_datasets if d not in present]
    if absent:
        raise ValueError(f"shift_datasets {absent} not in results; top1 datasets present: {sorted(present)}")
    if not baseline_models:
        raise ValueError("baseline_models: no baseline models given (need at least 2), got 0")
    for model in baseline_models:
        have = set(top1.loc[top1["model"] == model, "dataset"])
        lacking = [d for d in [id_dataset, *shift_datasets] if d not in have]
        if lacking:
            raise ValueError(f"baseline model {model!r} has no top1 result on {lacking}")
    if len(baseline_models) < 2:
        raise ValueError(f"baseline_models: need at least 2 baseline models, got {len(baseline_models)}")


def _metadata(top1: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """One row per model (index) of the extra columns: the first non-null value of each."""
    meta_cols = [c for c in columns if c not in CORE_COLUMNS]
    clash = [c for c in meta_cols if c in ER_COLUMNS]
    if clash:
        raise ValueError(f"results: column(s) {clash} clash with output columns of the same name; rename them")
    return top1.groupby("model", sort=False)[meta_cols].first()


def _binomial(rng: np.random.Generator, p: pd.Series, n: pd.Series, draws: int) -> np.ndarray:
    """(draws, models) accuracies drawn as Binomial(n, p) / n; models with unknown n (null, <= 0) keep p."""
    p, n = p.fillna(0.5).to_numpy(float), n.to_numpy(float)
    known = np.isfinite(n) & (n > 0)
    out = np.broadcast_to(p, (draws, len(p))).copy()
    if known.any():
        counts = n[known].astype(np.int64)
        out[:, known] = rng.binomial(counts, p[known], size=(draws, int(known.sum()))) / counts
    return out


def _er_rows(dataset, x: pd.Series, y: pd.Series, x_draws, y_draws, fit: BaselineFit, lines, base: set,
             quantiles) -> pd.DataFrame:
    """ER table of one dataset for models with both accuracies; `*_draws`: (draws, all models)."""
    t = get_transform(fit.transform)
    valid = (x.notna() & y.notna()).to_numpy()
    slope, intercept = lines
    pred_draws = t.inverse(slope[:, None] * t.forward(x_draws[:, valid]) + intercept[:, None])
    low, high = np.nanquantile(y_draws[:, valid] - pred_draws, quantiles, axis=0)
    models = x.index[valid]
    predicted = fit.predict(x[valid].to_numpy())
    return pd.DataFrame({"model": models, "dataset": dataset, "id_accuracy": x[valid].to_numpy(),
                         "shift_accuracy": y[valid].to_numpy(), "baseline_accuracy": predicted,
                         "effective_robustness": y[valid].to_numpy() - predicted, "ci_low": low, "ci_high": high,
                         "is_baseline": [m in base for m in models]})


def compute_effective_robustness(results: pd.DataFrame, id_dataset: str, shift_datasets, *, baseline_models,
                                 transform: str = "logit", n_bootstrap: int = 1000, confidence: float = 0.95,
                                 seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Effective robustness per (model, shift) and on the average over shifts (``avg_shifts``).

    For each shift dataset and for ``avg_shifts`` (a model's mean accuracy over `shift_datasets`),
    a ``BaselineFit`` is fit on `baseline_models` and every model with an id accuracy gets
    ``ER = shift_accuracy - baseline(id_accuracy)`` (fractions).

    Confidence interval (level `confidence`): percentile bootstrap with ``numpy.random.default_rng(seed)``,
    `n_bootstrap` draws, vectorised. Each draw (a) resamples the baseline models with replacement
    and refits the line (resamples with all-equal id accuracy are redrawn, see ``bootstrap_lines``),
    and (b) where ``num_examples`` is known (non-null, > 0) draws the model's own id and shift
    accuracies as Binomial(n, acc) / n; for ``avg_shifts`` each shift is drawn then averaged.

    Missing data: a model without an `id_dataset` result gets no rows; a model lacking some shift
    gets rows only for the shifts it has and no ``avg_shifts`` row. Baseline models must have all.

    Returns ``(er, fits)``: ``er`` has one row per (model, dataset) with columns ``ER_COLUMNS`` then
    the metadata columns of `results` (first non-null value per model); ``fits`` has one row per
    dataset with columns ``FIT_COLUMNS``.
    """
    shift_datasets = _as_names(shift_datasets, "shift_datasets")
    baseline_models = list(dict.fromkeys(_as_names(baseline_models, "baseline_models")))
    get_transform(transform)
    _check_request(id_dataset, shift_datasets, n_bootstrap, confidence)
    top1 = _top1(results)
    _check_datasets(top1, id_dataset, shift_datasets, baseline_models)
    meta = _metadata(top1, results.columns)
    acc = top1.pivot(index="model", columns="dataset", values="value").astype(float)
    counts = (top1.pivot(index="model", columns="dataset", values="num_examples").astype(float)
              if "num_examples" in top1.columns else acc * np.nan)
    rng = np.random.default_rng(seed)
    x = acc[id_dataset]
    x_draws = _binomial(rng, x, counts[id_dataset], n_bootstrap)
    y_draws = {d: _binomial(rng, acc[d], counts[d], n_bootstrap) for d in shift_datasets}
    acc[AVG_SHIFTS] = acc[shift_datasets].mean(axis=1, skipna=False)
    y_draws[AVG_SHIFTS] = np.mean([y_draws[d] for d in shift_datasets], axis=0)
    base, alpha = set(baseline_models), (1 - confidence) / 2
    is_base = acc.index.isin(baseline_models)
    er_parts, fit_rows = [], []
    for dataset in [*shift_datasets, AVG_SHIFTS]:
        y = acc[dataset]
        fit = BaselineFit(transform, CLIP_EPSILON).fit(x[is_base].to_numpy(), y[is_base].to_numpy())
        fit_rows.append(dict(dataset=dataset, transform=transform, slope=fit.slope_, intercept=fit.intercept_,
                             r2=fit.r2_, n_models=fit.n_models_, clip_epsilon=CLIP_EPSILON))
        t = get_transform(transform)
        lines = bootstrap_lines(rng, t.forward(x[is_base]), t.forward(y[is_base]), n_bootstrap)
        er_parts.append(_er_rows(dataset, x, y, x_draws, y_draws[dataset], fit, lines, base, [alpha, 1 - alpha]))
    er = pd.concat(er_parts, ignore_index=True)
    er = er.join(meta, on="model")
    return er, pd.DataFrame(fit_rows, columns=FIT_COLUMNS)
