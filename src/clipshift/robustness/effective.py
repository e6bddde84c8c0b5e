"""Effective robustness of every model in a long results table, with bootstrap intervals.

Input: a long DataFrame with columns ``model, dataset, metric, value, num_examples`` (+ any
metadata columns, carried through one value per model); only ``metric == "top1"`` rows are used,
values are accuracies as fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

import re
import warnings
from pathlib import Path

from .baseline import BaselineFit, bootstrap_lines
from .tables import NATURAL_SHIFTS, read_results
from .transforms import CLIP_EPSILON, get_transform

AVERAGE = "average"  # the pseudo-dataset of a model's mean accuracy over the shifts
CORE_COLUMNS = ("model", "dataset", "metric", "value", "num_examples")
ER_COLUMNS = ["model", "dataset", "id_dataset", "id_accuracy", "shift_accuracy", "baseline_accuracy",
              "effective_robustness", "ci_low", "ci_high", "is_baseline"]
FIT_COLUMNS = ["dataset", "id_dataset", "transform", "slope", "intercept", "r2", "num_models", "clip_epsilon"]


def _as_names(values, what: str) -> list:
    """A list of names from a string or an iterable of names; duplicates rejected."""
    names = [values] if isinstance(values, str) else list(values)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what}: duplicate name(s) {dupes}")
    return names


def _check_request(id_dataset, id_datasets: dict, shift_datasets: list, n_bootstrap, confidence) -> None:
    if not shift_datasets:
        raise ValueError("shift_datasets: need at least one shift dataset, got none")
    unknown = sorted(set(id_datasets) - set(shift_datasets) - {AVERAGE})
    if unknown:
        raise ValueError(f"id_datasets: {unknown} are not among the shift datasets {shift_datasets}")
    for bad in [id_dataset, *id_datasets.values(), AVERAGE]:
        if bad in shift_datasets:
            raise ValueError(f"shift_datasets: {bad!r} cannot be a shift (it is an id dataset or the reserved "
                             f"name {AVERAGE!r})")
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


def _check_datasets(top1: pd.DataFrame, id_of: dict, shift_datasets: list, baseline_models: list) -> None:
    present = set(top1["dataset"])
    for shift in [AVERAGE, *shift_datasets]:
        if id_of[shift] not in present:
            raise ValueError(f"id_dataset {id_of[shift]!r} not in results; top1 datasets present: {sorted(present)}")
    absent = [d for d in shift_datasets if d not in present]
    if absent:
        raise ValueError(f"shift_datasets {absent} not in results; top1 datasets present: {sorted(present)}")
    if not baseline_models:
        raise ValueError("baseline_models: no baseline models given (need at least 2), got 0")
    unknown = sorted(set(baseline_models) - set(top1["model"]))
    if unknown:
        raise ValueError(f"baseline models {unknown[:5]}{' ...' if len(unknown) > 5 else ''} have no top1 results")
    if len(baseline_models) < 2:
        raise ValueError(f"baseline_models: need at least 2 baseline models, got {len(baseline_models)}")


def _baseline_rows(acc: pd.DataFrame, baseline_models: list, x_col: str, datasets: list, what: str) -> np.ndarray:
    """Mask over `acc` rows: baseline models with results on `x_col` and all of `datasets` (at least 2)."""
    mask = acc.index.isin(baseline_models) & acc[[x_col, *datasets]].notna().all(axis=1).to_numpy()
    if mask.sum() < 2:
        raise ValueError(f"{what}: need at least 2 baseline models with results on {[x_col, *datasets]}, "
                         f"got {int(mask.sum())}")
    return mask


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


def _er_rows(dataset, id_dataset, x: pd.Series, y: pd.Series, x_draws, y_draws, fit: BaselineFit, lines,
             base: set, quantiles) -> pd.DataFrame:
    """ER table of one dataset for models with both accuracies; `*_draws`: (draws, all models)."""
    t = get_transform(fit.transform)
    valid = (x.notna() & y.notna()).to_numpy()
    slope, intercept = lines
    pred_draws = t.inverse(slope[:, None] * t.forward(x_draws[:, valid]) + intercept[:, None])
    diff = y_draws[:, valid] - pred_draws
    # np.quantile is vectorised over columns; nanquantile (needed only when a degenerate resample left NaN) is not
    low, high = (np.nanquantile if np.isnan(diff).any() else np.quantile)(diff, quantiles, axis=0)
    models = x.index[valid]
    predicted = fit.predict(x[valid].to_numpy())
    return pd.DataFrame({"model": models, "dataset": dataset, "id_dataset": id_dataset,
                         "id_accuracy": x[valid].to_numpy(), "shift_accuracy": y[valid].to_numpy(),
                         "baseline_accuracy": predicted, "effective_robustness": y[valid].to_numpy() - predicted,
                         "ci_low": low, "ci_high": high, "is_baseline": [m in base for m in models]})


def compute_effective_robustness(results: pd.DataFrame, id_dataset: str, shift_datasets, *, baseline_models,
                                 id_datasets: dict | None = None, transform: str = "logit", n_bootstrap: int = 1000,
                                 confidence: float = 0.95, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Effective robustness per (model, shift) and on the average over shifts (``average``).

    For each shift dataset and for ``average`` (a model's mean accuracy over `shift_datasets`),
    a ``BaselineFit`` is fit on `baseline_models` and every model with an id accuracy gets
    ``ER = shift_accuracy - baseline(id_accuracy)`` (fractions).

    The id accuracy of a shift is `id_dataset`'s unless `id_datasets` maps that shift to another
    dataset: imagenet-testbed plots ImageNet-R/A and ObjectNet against ImageNet accuracy on their
    class subset, e.g. ``{"imagenet-r": "imagenet@imagenet-r-classes"}``. ``average`` uses
    `id_dataset` (or ``id_datasets["average"]``).

    Confidence interval (level `confidence`): percentile bootstrap with ``numpy.random.default_rng(seed)``,
    `n_bootstrap` draws, vectorised. Each draw (a) resamples the baseline models with replacement
    and refits the line (resamples with all-equal id accuracy are redrawn, see ``bootstrap_lines``),
    and (b) where ``num_examples`` is known (non-null, > 0) draws the model's own id and shift
    accuracies as Binomial(n, acc) / n; for ``average`` each shift is drawn then averaged.

    Missing data: a model without the id accuracy of a shift gets no row for it; a model lacking
    some shift gets no ``average`` row. A shift's line is fitted on the baseline models that have
    both accuracies (at least 2); the average's on those that have every shift.

    Returns ``(er, fits)``: ``er`` has one row per (model, dataset) with columns ``ER_COLUMNS`` then
    the metadata columns of `results` (first non-null value per model); ``fits`` has one row per
    dataset with columns ``FIT_COLUMNS``.
    """
    shift_datasets = _as_names(shift_datasets, "shift_datasets")
    baseline_models = list(dict.fromkeys(_as_names(baseline_models, "baseline_models")))
    id_of = {d: (id_datasets or {}).get(d, id_dataset) for d in [*shift_datasets, AVERAGE]}
    get_transform(transform)
    _check_request(id_dataset, dict(id_datasets or {}), shift_datasets, n_bootstrap, confidence)
    top1 = _top1(results)
    _check_datasets(top1, id_of, shift_datasets, baseline_models)
    meta = _metadata(top1, results.columns)
    acc = top1.pivot(index="model", columns="dataset", values="value").astype(float)
    counts = (top1.pivot(index="model", columns="dataset", values="num_examples").astype(float)
              if "num_examples" in top1.columns else acc * np.nan)
    rng = np.random.default_rng(seed)
    id_names = list(dict.fromkeys(id_of.values()))
    draws = {d: _binomial(rng, acc[d], counts[d], n_bootstrap) for d in [*id_names, *shift_datasets]}
    acc[AVERAGE] = acc[shift_datasets].mean(axis=1, skipna=False)
    draws[AVERAGE] = np.mean([draws[d] for d in shift_datasets], axis=0)
    base, alpha = set(baseline_models), (1 - confidence) / 2
    t = get_transform(transform)
    er_parts, fit_rows = [], []
    for dataset in [*shift_datasets, AVERAGE]:
        id_name = id_of[dataset]
        x, y = acc[id_name], acc[dataset]
        needed = shift_datasets if dataset == AVERAGE else [dataset]
        is_base = _baseline_rows(acc, baseline_models, id_name, needed, f"dataset {dataset!r}")
        fit = BaselineFit(transform, CLIP_EPSILON).fit(x[is_base].to_numpy(), y[is_base].to_numpy())
        fit_rows.append(dict(dataset=dataset, id_dataset=id_name, transform=transform, slope=fit.slope_,
                             intercept=fit.intercept_, r2=fit.r2_, num_models=fit.num_models_,
                             clip_epsilon=CLIP_EPSILON))
        lines = bootstrap_lines(rng, t.forward(x[is_base]), t.forward(y[is_base]), n_bootstrap)
        er_parts.append(_er_rows(dataset, id_name, x, y, draws[id_name], draws[dataset], fit, lines, base,
                                 [alpha, 1 - alpha]))
    er = pd.concat(er_parts, ignore_index=True)
    er = er.join(meta, on="model")
    return er, pd.DataFrame(fit_rows, columns=FIT_COLUMNS)


# --- one call from tables to effective robustness -------------------------------------------------------------

def _load(table, what: str) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
        return table.copy()
    if isinstance(table, (str, Path)):
        return read_results(table)
    raise TypeError(f"{what}: expected a path or a DataFrame, got {type(table).__name__}")


def _select(models: list, baseline_filter) -> list:
    if baseline_filter is None:
        return models
    if callable(baseline_filter):
        return [m for m in models if baseline_filter(m)]
    pattern = re.compile(baseline_filter)
    return [m for m in models if pattern.search(str(m))]


def combine_tables(results: pd.DataFrame, baseline: pd.DataFrame | None = None,
                   baseline_filter=None) -> tuple[pd.DataFrame, list]:
    """One long table and the baseline model ids.

    Without `baseline`, the baseline models are the rows of `results` whose ``group`` is
    ``baseline``. With it, they are `baseline`'s models and its rows are added to `results` (a model
    in both tables must have the same values). `baseline_filter` (a regular expression searched in
    the model id, or a predicate) keeps only some of them, e.g. ``r"_in1k$"`` for timm models trained
    on ImageNet-1k alone."""
    if baseline is None:
        models = (list(dict.fromkeys(results.loc[results["group"] == "baseline", "model"]))
                  if "group" in results.columns else [])
        if not models:
            why = ("the results have no 'group' column" if "group" not in results.columns else
                   f"none of the {results['model'].nunique()} models in the results is marked")
            raise ValueError(f"no baseline models: give a baseline table, or mark baseline rows of the "
                             f"results with group = 'baseline' ({why})")
        table = results
        where = "rows of the results with group = 'baseline'"
    else:
        models = list(dict.fromkeys(baseline["model"]))
        table = pd.concat([results, baseline], ignore_index=True)
        table = table.drop_duplicates(subset=[c for c in ("model", "dataset", "metric", "value") if c in table])
        where = "models in the baseline table"
    chosen = _select(models, baseline_filter)
    if not chosen:
        extra = f" matching {baseline_filter!r}" if baseline_filter is not None else ""
        raise ValueError(f"no baseline models: found {len(models)} {where}, {len(chosen)}{extra}")
    if baseline is not None and len(chosen) < len(models):
        # the baseline table's other models stay in, as models in their own right (e.g. timm models
        # pre-trained on more data): their group says they were left out of the baseline
        left_out = table["model"].isin(set(models) - set(chosen)) & ~table["model"].isin(set(results["model"]))
        group = table["group"].astype(object) if "group" in table else pd.Series(None, index=table.index, dtype=object)
        table = table.assign(group=group.where(~left_out, group.fillna("baseline table").astype(str)
                                               + " (not in baseline)"))
    return table, chosen


def default_shifts(table: pd.DataFrame, id_datasets: set, baseline_models: list) -> tuple[list, list]:
    """Shift datasets to use when none are named, and those passed over.

    With ImageNet as the id dataset: the natural shifts present. Otherwise every other dataset. A
    candidate needs results from at least 2 baseline models, else it is passed over."""
    top1 = table[table["metric"] == "top1"]
    present = list(dict.fromkeys(top1["dataset"]))
    if "imagenet" in id_datasets:
        candidates = [d for d in NATURAL_SHIFTS if d in present]
    else:
        candidates = [d for d in present if d not in id_datasets]
    base = top1[top1["model"].isin(baseline_models)]
    counts = base.groupby("dataset")["model"].nunique()
    keep = [d for d in candidates if counts.get(d, 0) >= 2]
    return keep, [d for d in candidates if d not in keep]


def effective_robustness(results, baseline=None, *, id_dataset: str = "imagenet", shifts=None,
                         id_datasets: dict | None = None, baseline_filter=None, transform: str = "logit",
                         n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                         return_fits: bool = False):
    """Effective robustness of every model in `results` above the baseline, in one call.

    `results` and `baseline`: paths of any table ``read_results`` reads (this project's long CSV,
    open_clip's ``openclip_results.csv``, a timm ``results-*.csv`` folder, CLIP_benchmark JSON) or
    long DataFrames. Baseline models as in ``combine_tables``. `shifts`: names (default: see
    ``default_shifts``). Everything else as ``compute_effective_robustness``.

    Returns the ER table (one row per model and shift, plus ``average``; fractions), or
    ``(er, fits)`` with `return_fits`. The shifts passed over for lack of baseline models are
    listed in ``er.attrs["skipped_shifts"]`` (and a warning says so).
    """
    table, models = combine_tables(_load(results, "results"),
                                   None if baseline is None else _load(baseline, "baseline"), baseline_filter)
    skipped: list = []
    if shifts is None:
        ids = {id_dataset, *(id_datasets or {}).values()}
        shifts, skipped = default_shifts(table, ids, models)
        if skipped:
            warnings.warn(f"shifts {skipped} skipped: fewer than 2 baseline models have results on them",
                          stacklevel=2)
        if not shifts:
            raise ValueError(f"no shift datasets with results from at least 2 baseline models; top1 datasets "
                             f"present: {sorted(set(table.loc[table['metric'] == 'top1', 'dataset']))}")
    er, fits = compute_effective_robustness(table, id_dataset, shifts, baseline_models=models,
                                            id_datasets=id_datasets, transform=transform,
                                            n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    er.attrs["skipped_shifts"] = list(skipped)
    return (er, fits) if return_fits else er
