"""Effective robustness of every model in a long results table, with bootstrap intervals.

Input: a long DataFrame with columns ``model, dataset, metric, value, num_examples`` (+ any
metadata columns, carried through one value per model); only ``metric == "top1"`` rows are used,
values are accuracies as fractions in [0, 1].

One id dataset: the line of Taori et al. (``BaselineFit``). Several: the plane of Shi et al. (2023)
over all of them (``multi_id.PlaneFit``); see ``compute_effective_robustness``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

import re
import warnings
from pathlib import Path

from .baseline import BaselineFit, bootstrap_lines
from .multi_id import PlaneFit, bootstrap_planes
from .protocols import PROTOCOL_COLUMN, check_protocols
from .reference import assign_roles, check_overlap, is_published_name, load_references, new_references
from .tables import NATURAL_SHIFTS, read_results
from .transforms import CLIP_EPSILON, get_transform

AVERAGE = "average"  # the pseudo-dataset of a model's mean accuracy over the shifts
CORE_COLUMNS = ("model", "dataset", "metric", "value", "num_examples")
ER_COLUMNS = ["model", "dataset", "id_dataset", "id_accuracy", "shift_accuracy", "baseline_accuracy",
              "effective_robustness", "ci_low", "ci_high", "is_baseline"]
FIT_COLUMNS = ["dataset", "id_dataset", "transform", "slope", "intercept", "r2", "num_models", "clip_epsilon"]
# several id datasets: ``id_dataset`` is their names joined by ID_SEPARATOR, er gains one
# ``id_accuracy_<name>`` column and fits one ``weight_<name>`` column per id dataset
ID_SEPARATOR = "+"
ID_ACCURACY_PREFIX = "id_accuracy_"
WEIGHT_PREFIX = "weight_"


def _as_names(values, what: str) -> list:
    """A list of names from a string or an iterable of names; duplicates rejected."""
    names = [values] if isinstance(values, str) else list(values)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what}: duplicate name(s) {dupes}")
    return names


def _check_request(ids: list, id_datasets: dict, shift_datasets: list, n_bootstrap, confidence) -> None:
    if not shift_datasets:
        raise ValueError("shift_datasets: need at least one shift dataset, got none")
    unknown = sorted(set(id_datasets) - set(shift_datasets) - {AVERAGE})
    if unknown:
        raise ValueError(f"id_datasets: {unknown} are not among the shift datasets {shift_datasets}")
    if not ids:
        raise ValueError("id_dataset: need at least one id dataset, got none")
    if len(ids) > 1 and id_datasets:
        raise ValueError(f"id_datasets (an id dataset per shift) cannot be combined with several id datasets "
                         f"{ids}: the plane uses all of them for every shift")
    for bad in [*ids, *id_datasets.values(), AVERAGE]:
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


def _check_datasets(top1: pd.DataFrame, id_of: dict, ids: list, shift_datasets: list, baseline_models: list) -> None:
    present = set(top1["dataset"])
    for name in [*(id_of[shift] for shift in [AVERAGE, *shift_datasets]), *ids]:
        if name not in present:
            raise ValueError(f"id_dataset {name!r} not in results; top1 datasets present: {sorted(present)}")
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


def _baseline_rows(acc: pd.DataFrame, baseline_models: list, x_col, datasets: list, what: str,
                   minimum: int = 2) -> np.ndarray:
    """Mask over `acc` rows: baseline models with results on `x_col` (a name or a list of names) and all
    of `datasets` (at least `minimum`)."""
    needed = [x_col, *datasets] if isinstance(x_col, str) else [*x_col, *datasets]
    mask = acc.index.isin(baseline_models) & acc[needed].notna().all(axis=1).to_numpy()
    if mask.sum() < minimum:
        raise ValueError(f"{what}: need at least {minimum} baseline models with results on {needed}, "
                         f"got {int(mask.sum())}")
    return mask


def _metadata(top1: pd.DataFrame, columns: Iterable[str], reserved: Iterable[str] = ()) -> pd.DataFrame:
    """One row per model (index) of the extra columns: the first non-null value of each."""
    meta_cols = [c for c in columns if c not in CORE_COLUMNS and c != PROTOCOL_COLUMN]  # stamps are per dataset
    clash = [c for c in meta_cols if c in ER_COLUMNS or c in set(reserved)]
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


def _plane_er_rows(dataset, ids: list, x: pd.DataFrame, y: pd.Series, x_draws, y_draws, fit: PlaneFit, planes,
                   base: set, quantiles) -> pd.DataFrame:
    """ER table of one dataset against a plane; `x`: (models, K) id accuracies, `x_draws`: (draws, models, K)."""
    t = get_transform(fit.transform)
    valid = (x.notna().all(axis=1) & y.notna()).to_numpy()
    weights, intercepts = planes
    z = np.einsum("dmk,dk->dm", t.forward(x_draws[:, valid]), weights) + intercepts[:, None]
    diff = y_draws[:, valid] - t.inverse(z)
    low, high = (np.nanquantile if np.isnan(diff).any() else np.quantile)(diff, quantiles, axis=0)
    models = x.index[valid]
    predicted = fit.predict(x[valid].to_numpy())
    frame = pd.DataFrame({"model": models, "dataset": dataset, "id_dataset": ID_SEPARATOR.join(ids),
                          "id_accuracy": x[valid].iloc[:, 0].to_numpy(), "shift_accuracy": y[valid].to_numpy(),
                          "baseline_accuracy": predicted, "effective_robustness": y[valid].to_numpy() - predicted,
                          "ci_low": low, "ci_high": high, "is_baseline": [m in base for m in models]})
    for name in ids:
        frame[ID_ACCURACY_PREFIX + name] = x.loc[valid, name].to_numpy()
    return frame


def _fit_row(dataset, id_name, transform, fit, weights: dict | None = None) -> dict:
    slope = getattr(fit, "slope_", np.nan)
    row = dict(dataset=dataset, id_dataset=id_name, transform=transform, slope=slope, intercept=fit.intercept_,
               r2=fit.r2_, num_models=fit.num_models_, clip_epsilon=CLIP_EPSILON)
    return {**row, **{WEIGHT_PREFIX + k: v for k, v in (weights or {}).items()}}


def _resolve_strata(baseline_strata, meta: pd.DataFrame, baseline_models: list) -> pd.Series | None:
    """The bootstrap stratum of each baseline model (a Series indexed by model), from a metadata column
    name or a mapping model → group; None without strata."""
    if baseline_strata is None:
        return None
    if isinstance(baseline_strata, str):
        if baseline_strata not in meta.columns:
            raise ValueError(f"baseline_strata: {baseline_strata!r} is not a metadata column of the results; "
                             f"metadata columns: {sorted(meta.columns)}")
        strata = meta[baseline_strata]
    elif isinstance(baseline_strata, Mapping):
        strata = pd.Series(dict(baseline_strata), dtype=object)
    else:
        raise TypeError(f"baseline_strata: expected a metadata column name or a mapping model -> group, got "
                        f"{type(baseline_strata).__name__}")
    strata = strata.reindex(baseline_models)
    missing = [m for m, group in strata.items() if pd.isna(group)]
    if missing:
        raise ValueError(f"baseline_strata: no group for baseline model(s) {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}")
    return strata


def _strata_of(strata: pd.Series | None, models) -> np.ndarray | None:
    return None if strata is None else strata.reindex(models).to_numpy(dtype=object)


def _single_id_tables(acc, counts, id_of: dict, shifts: list, baseline_models: list, transform: str,
                      n_bootstrap: int, quantiles, rng, strata: pd.Series | None) -> tuple[list, list]:
    """ER rows and fit rows against lines (Taori et al.), one id dataset per shift; `strata`: the
    baseline models' bootstrap strata (None: uniform resampling)."""
    id_names = list(dict.fromkeys(id_of.values()))
    draws = {d: _binomial(rng, acc[d], counts[d], n_bootstrap) for d in [*id_names, *shifts]}
    acc[AVERAGE] = acc[shifts].mean(axis=1, skipna=False)
    draws[AVERAGE] = np.mean([draws[d] for d in shifts], axis=0)
    base, t = set(baseline_models), get_transform(transform)
    er_parts, fit_rows = [], []
    for dataset in [*shifts, AVERAGE]:
        id_name = id_of[dataset]
        x, y = acc[id_name], acc[dataset]
        needed = shifts if dataset == AVERAGE else [dataset]
        is_base = _baseline_rows(acc, baseline_models, id_name, needed, f"dataset {dataset!r}")
        fit = BaselineFit(transform, CLIP_EPSILON).fit(x[is_base].to_numpy(), y[is_base].to_numpy())
        fit_rows.append(_fit_row(dataset, id_name, transform, fit))
        lines = bootstrap_lines(rng, t.forward(x[is_base]), t.forward(y[is_base]), n_bootstrap,
                                _strata_of(strata, x.index[is_base]))
        er_parts.append(_er_rows(dataset, id_name, x, y, draws[id_name], draws[dataset], fit, lines, base, quantiles))
    return er_parts, fit_rows


def _multi_id_tables(acc, counts, ids: list, shifts: list, baseline_models: list, transform: str,
                     n_bootstrap: int, quantiles, rng, strata: pd.Series | None) -> tuple[list, list]:
    """ER rows and fit rows against planes over several id datasets (Shi et al. 2023); `strata` as for
    ``_single_id_tables``."""
    draws = {d: _binomial(rng, acc[d], counts[d], n_bootstrap) for d in [*ids, *shifts]}
    acc[AVERAGE] = acc[shifts].mean(axis=1, skipna=False)
    draws[AVERAGE] = np.mean([draws[d] for d in shifts], axis=0)
    base, t = set(baseline_models), get_transform(transform)
    x, x_draws = acc[ids], np.stack([draws[d] for d in ids], axis=-1)
    er_parts, fit_rows = [], []
    for dataset in [*shifts, AVERAGE]:
        y = acc[dataset]
        needed = shifts if dataset == AVERAGE else [dataset]
        is_base = _baseline_rows(acc, baseline_models, ids, needed, f"dataset {dataset!r}", minimum=len(ids) + 1)
        fit = PlaneFit(transform, CLIP_EPSILON).fit(x[is_base].to_numpy(), y[is_base].to_numpy())
        fit_rows.append(_fit_row(dataset, ID_SEPARATOR.join(ids), transform, fit, dict(zip(ids, fit.weights_))))
        planes = bootstrap_planes(rng, t.forward(x[is_base].to_numpy()), t.forward(y[is_base].to_numpy()),
                                  n_bootstrap, _strata_of(strata, x.index[is_base]))
        er_parts.append(_plane_er_rows(dataset, ids, x, y, x_draws, draws[dataset], fit, planes, base, quantiles))
    return er_parts, fit_rows


def compute_effective_robustness(results: pd.DataFrame, id_dataset, shift_datasets, *, baseline_models,
                                 id_datasets: dict | None = None, transform: str = "logit", n_bootstrap: int = 1000,
                                 confidence: float = 0.95, seed: int = 0, baseline_strata: str | Mapping | None = None,
                                 allow_mixed_protocols: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Effective robustness per (model, shift) and on the average over shifts (``average``).

    One id dataset (`id_dataset` a name, or a list of one name: the same output): for each shift
    and for ``average`` (a model's mean accuracy over `shift_datasets`), a ``BaselineFit`` line is
    fit on `baseline_models` and every model with an id accuracy gets
    ``ER = shift_accuracy - baseline(id_accuracy)`` (fractions). The id accuracy of a shift is
    `id_dataset`'s unless `id_datasets` maps that shift to another dataset (imagenet-testbed's
    class-subset convention, e.g. ``{"imagenet-r": "imagenet@imagenet-r-classes"}``; ``average``:
    ``id_datasets["average"]``).

    Several id datasets (`id_dataset` a list, Shi et al. 2023): a ``PlaneFit``,
    transform(shift) = Σ_k w_k · transform(id_k) + c, over baseline models with results on every id
    dataset (at least K + 1 of them; include models trained on each distribution), and
    ``ER = shift_accuracy - plane(id accuracies)``. `id_datasets` cannot be combined with this.

    Confidence interval (level `confidence`): percentile bootstrap with ``numpy.random.default_rng(seed)``,
    `n_bootstrap` draws, vectorised: each draw resamples the baseline models and refits the line or
    plane (degenerate resamples are redrawn), and, where ``num_examples`` is known (non-null, > 0),
    draws the model's own accuracies as Binomial(n, acc) / n (for ``average`` each shift is drawn
    then averaged). A model lacking an id accuracy or a shift gets no row for it; a fit uses the
    baseline models that have all its accuracies.

    `baseline_strata` makes the resampling of baseline models stratified: the name of a metadata
    column of `results` (e.g. ``"train_distribution"``) or a mapping model id → group, giving every
    baseline model a group. Each draw then resamples with replacement within each group, so every
    group keeps its number of models in every draw (with the plane, no draw loses the models trained
    on one distribution, which would leave that direction to one or two models); a group of one
    model is that model in every draw. It applies to the line and the plane alike. Without it
    (None) the models are resampled uniformly, as before (same draws for the same seed).

    Rows with a ``protocol`` stamp (:mod:`.protocols`) are checked first: two rows of one dataset used here
    that were measured differently (class space, images, ObjectNet's crop, ImageNet-V2's variant) are a
    ``MixedProtocolsError`` naming both stamps, unless `allow_mixed_protocols`. ``er.attrs["protocols"]``:
    each dataset's protocol, one line (not a column of ``er``: a model's stamps differ per dataset).

    Returns ``(er, fits)``. ``er``: one row per (model, dataset), columns ``ER_COLUMNS``, then with
    several id datasets ``id_accuracy_<name>`` per id dataset (``id_dataset`` is the names joined by
    ``+``, ``id_accuracy`` the first one's, ``baseline_accuracy`` the plane's prediction), then the
    metadata columns of `results` (first non-null value per model). ``fits``: one row per dataset,
    columns ``FIT_COLUMNS`` (several id datasets: ``slope`` empty, then ``weight_<name>`` per id dataset).
    """
    ids = _as_names(id_dataset, "id_dataset")
    shift_datasets = _as_names(shift_datasets, "shift_datasets")
    baseline_models = list(dict.fromkeys(_as_names(baseline_models, "baseline_models")))
    _check_request(ids, dict(id_datasets or {}), shift_datasets, n_bootstrap, confidence)
    id_of = {d: (id_datasets or {}).get(d, ids[0]) for d in [*shift_datasets, AVERAGE]}
    get_transform(transform)
    top1 = _top1(results)
    _check_datasets(top1, id_of, ids, shift_datasets, baseline_models)
    protocols = check_protocols(top1, [*ids, *id_of.values(), *shift_datasets], allow_mixed_protocols)
    multi = len(ids) > 1
    meta = _metadata(top1, results.columns, [ID_ACCURACY_PREFIX + d for d in ids] if multi else ())
    strata = _resolve_strata(baseline_strata, meta, baseline_models)
    acc = top1.pivot(index="model", columns="dataset", values="value").astype(float)
    counts = (top1.pivot(index="model", columns="dataset", values="num_examples").astype(float)
              if "num_examples" in top1.columns else acc * np.nan)
    rng, alpha = np.random.default_rng(seed), (1 - confidence) / 2
    tables = _multi_id_tables if multi else _single_id_tables
    er_parts, fit_rows = tables(acc, counts, ids if multi else id_of, shift_datasets, baseline_models, transform,
                                n_bootstrap, [alpha, 1 - alpha], rng, strata)
    er = pd.concat(er_parts, ignore_index=True).join(meta, on="model")
    er.attrs["protocols"] = protocols
    columns = FIT_COLUMNS + ([WEIGHT_PREFIX + d for d in ids] if multi else [])
    return er, pd.DataFrame(fit_rows, columns=columns)


# --- one call from tables to effective robustness -------------------------------------------------------------

def _load(table, what: str, options: dict | None = None, datasets=()) -> pd.DataFrame:
    if is_published_name(table):  # the shipped tables: the in1k-only timm models
        from .published import published_baseline

        return published_baseline()
    if isinstance(table, pd.DataFrame):
        if options:
            raise ValueError(f"{what}: reading options {sorted(options)} apply to a file, not a DataFrame")
        return table.copy()
    if isinstance(table, (str, Path)):
        return read_results(table, datasets=datasets, **(options or {}))
    raise TypeError(f"{what}: expected a path or a DataFrame, got {type(table).__name__}")


def _load_results(results, options: dict | None, wanted) -> tuple[pd.DataFrame, list]:
    """The user's table, or several (a list or tuple) stacked, and ``(name, frame)`` for each; a model in two
    of them is a one-line error naming both."""
    items = list(results) if isinstance(results, (list, tuple)) else [results]
    if not items:
        raise ValueError("results: no table given")
    named = [(str(item) if isinstance(item, (str, Path)) else f"results[{i}]", _load(item, "results", options, wanted))
             for i, item in enumerate(items)]
    seen: dict = {}
    for name, frame in named:
        for model in dict.fromkeys(frame["model"]):
            if seen.setdefault(model, name) != name:
                raise ValueError(f"{name}: model {model!r} is in {seen[model]} too: each model may come from one "
                                 f"results table only (rename one, e.g. with --model-column)")
    table = named[0][1] if len(named) == 1 else pd.concat([f for _, f in named], ignore_index=True)
    table.attrs["notes"] = [note for _, frame in named for note in frame.attrs.get("notes", [])]
    return table, named


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


def effective_robustness(results, baseline=None, *, id_dataset="imagenet", shifts=None,
                         id_datasets: dict | None = None, baseline_filter=None, transform: str = "logit",
                         n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                         return_fits: bool = False, results_options: dict | None = None,
                         baseline_strata: str | Mapping | None = None, allow_mixed_protocols: bool = False,
                         compare=None):
    """Effective robustness of every model in `results` above the baseline, in one call.

    `results` (one, or a list of several whose models are all the user's) and `baseline`: paths of any
    table ``read_results`` reads (this project's long CSV,
    open_clip's ``openclip_results.csv``, a timm ``results-*.csv`` folder, CLIP_benchmark JSON or its
    built CSV, JSON lines) or long DataFrames. `results_options`: keyword arguments of
    ``read_results`` for the `results` file (``model_columns``, ``dataset_column``, ``value_column``,
    ``where``). `baseline` ``"published"`` (the string): the shipped timm models trained on ImageNet-1k
    alone (:mod:`.published`). Baseline models as in ``combine_tables``. `compare`: reference models
    (:mod:`.reference`; ``"published"``, ``"openclip"``, ``"timm"``, results files or DataFrames, one or a
    list), given an ER and intervals against the same fit but never in it: the fit and every other row
    are those without them. `id_dataset`: a name, or a list of names for
    the multi-ID plane of Shi et al. `shifts`: names (default: see ``default_shifts``). Everything
    else (``baseline_strata`` for a stratified bootstrap, ``allow_mixed_protocols`` included) as
    ``compute_effective_robustness``.

    Returns the ER table (one row per model and shift, plus ``average``; fractions; ``role`` baseline,
    user (a model of `results`) or reference, and ``source``, ``training_data``, ``pretrained``), or
    ``(er, fits)`` with `return_fits`. The shifts passed over for lack of baseline models are
    listed in ``er.attrs["skipped_shifts"]``, and what the readers left out of the tables (datasets
    that are not ImageNet or its shifts, other tasks) in ``er.attrs["notes"]``; a warning says each.
    """
    ids = _as_names(id_dataset, "id_dataset")
    wanted = [*ids, *(shifts or []), *(id_datasets or {}).values()]  # kept by readers that drop other datasets
    user, named = _load_results(results, results_options, wanted)
    frames = [user]
    if baseline is not None:
        frames.append(_load(baseline, "baseline", None, wanted))
    references = load_references(compare, wanted)
    notes = [note for frame in [*frames, *([] if references is None else [references])]
             for note in frame.attrs.get("notes", [])]
    for note in notes:
        warnings.warn(note, stacklevel=2)
    table, models = combine_tables(frames[0], frames[1] if baseline is not None else None, baseline_filter)
    skipped: list = []
    if shifts is None:
        shifts, skipped = default_shifts(table, {*ids, *(id_datasets or {}).values()}, models)
        if skipped:
            warnings.warn(f"shifts {skipped} skipped: fewer than 2 baseline models have results on them",
                          stacklevel=2)
        if not shifts:
            raise ValueError(f"no shift datasets with results from at least 2 baseline models; top1 datasets "
                             f"present: {sorted(set(table.loc[table['metric'] == 'top1', 'dataset']))}")
    options = dict(id_datasets=id_datasets, transform=transform, n_bootstrap=n_bootstrap, confidence=confidence,
                   seed=seed, baseline_strata=baseline_strata, allow_mixed_protocols=allow_mixed_protocols)
    er, fits = compute_effective_robustness(table, id_dataset, shifts, baseline_models=models, **options)
    if baseline is not None:  # the results' own models must meet the baseline somewhere
        for where, frame in named:
            check_overlap(frame, where, [*ids, *(id_datasets or {}).values()], shifts)
    protocols = er.attrs["protocols"]
    if references is not None:
        references, more = new_references(references, table, frames[0]["model"])
        notes += more
        if len(references):  # a second pass, so that the fit and every other row stay those without them
            both, _ = compute_effective_robustness(pd.concat([table, references], ignore_index=True), id_dataset,
                                                   shifts, baseline_models=models, **options)
            er = pd.concat([er, both[both["model"].isin(set(references["model"]))]], ignore_index=True)
            protocols = both.attrs["protocols"]
    er = assign_roles(er, frames[0]["model"])
    er.attrs["protocols"] = protocols
    er.attrs["skipped_shifts"] = list(skipped)
    er.attrs["notes"] = notes
    return (er, fits) if return_fits else er
