"""Effective robustness of every model in a long results table, with bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .baseline import BaselineFit
from .transforms import CLIP_EPSILON, get_transform

AVG_SHIFTS = "avg_shifts"
CORE_COLUMNS = ("model", "dataset", "metric", "value", "num_examples")


def _validate(results: pd.DataFrame, id_dataset, shift_datasets, baseline_models) -> pd.DataFrame:
    missing = [c for c in ("model", "dataset", "metric", "value") if c not in results.columns]
    if missing:
        raise ValueError(f"results: missing column(s) {missing}; found {list(results.columns)}")
    top1 = results[results["metric"] == "top1"]
    dupes = top1[top1.duplicated(["model", "dataset"], keep=False)]
    if len(dupes):
        row = dupes.iloc[0]
        raise ValueError(f"results: duplicate top1 rows for model {row['model']!r} on dataset {row['dataset']!r}")
    present = set(top1["dataset"])
    for name in [id_dataset, *shift_datasets]:
        if name not in present:
            raise ValueError(f"dataset {name!r} not in results; datasets present: {sorted(present)}")
    if not shift_datasets:
        raise ValueError("shift_datasets must name at least one shift")
    if len(baseline_models) < 2:
        raise ValueError(f"baseline_models: need at least 2 baseline models, got {len(baseline_models)}")
    for model in baseline_models:
        have = set(top1.loc[top1["model"] == model, "dataset"])
        lacking = [d for d in [id_dataset, *shift_datasets] if d not in have]
        if lacking:
            raise ValueError(f"baseline model {model!r} has no top1 result on {lacking}")
    return top1


def _binomial(rng, p: np.ndarray, n: np.ndarray, draws: int) -> np.ndarray:
    """(draws, models) resampled accuracies; models without a known count keep p."""
    p, n = np.asarray(p, float), np.asarray(n, float)
    known = np.isfinite(n) & (n > 0)
    out = np.broadcast_to(p, (draws, len(p))).copy()
    if known.any():
        out[:, known] = rng.binomial(n[known].astype(np.int64), p[known], size=(draws, known.sum())) / n[known]
    return out


def _bootstrap_lines(rng, tx: np.ndarray, ty: np.ndarray, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and intercepts (draws,) of OLS refits on baseline models resampled with replacement.
    Resamples whose x values are all equal cannot define a line and give NaN (ignored later)."""
    idx = rng.integers(0, len(tx), size=(draws, len(tx)))
    x, y = tx[idx], ty[idx]
    xm, ym = x.mean(1, keepdims=True), y.mean(1, keepdims=True)
    var = ((x - xm) ** 2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(var > 0, ((x - xm) * (y - ym)).sum(1) / var, np.nan)
    return slope, ym[:, 0] - slope * xm[:, 0]


def compute_effective_robustness(results: pd.DataFrame, id_dataset: str, shift_datasets, *, baseline_models,
                                 transform: str = "logit", n_bootstrap: int = 1000, confidence: float = 0.95,
                                 seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ER per (model, shift) and on the average over shifts (``avg_shifts``), and the fits.

    Intervals: percentile bootstrap over baseline models (fit uncertainty) and, where
    ``num_examples`` is known, binomial resampling of each model's own accuracies. A model
    lacking some shift gets rows for the shifts it has and no ``avg_shifts`` row.
    """
    shift_datasets = list(shift_datasets)
    top1 = _validate(results, id_dataset, shift_datasets, list(baseline_models))
    t = get_transform(transform)
    acc = top1.pivot(index="model", columns="dataset", values="value")
    counts = (top1.pivot(index="model", columns="dataset", values="num_examples")
              if "num_examples" in top1.columns else acc * np.nan).astype(float)
    meta_cols = [c for c in results.columns if c not in CORE_COLUMNS]
    meta = top1.drop_duplicates("model").set_index("model")[meta_cols]
    rng = np.random.default_rng(seed)
    is_base = acc.index.isin(list(baseline_models))
    has_id = acc[id_dataset].notna()
    id_draws = _binomial(rng, acc[id_dataset].fillna(0.5), counts[id_dataset], n_bootstrap)
    shift_draws = {d: _binomial(rng, acc[d].fillna(0.5), counts[d], n_bootstrap) for d in shift_datasets}
    alpha = (1 - confidence) / 2
    er_rows, fit_rows = [], []
    for dataset in [*shift_datasets, AVG_SHIFTS]:
        if dataset == AVG_SHIFTS:
            y = acc[shift_datasets].mean(axis=1, skipna=False)
            y_draws = np.mean([shift_draws[d] for d in shift_datasets], axis=0)
        else:
            y, y_draws = acc[dataset], shift_draws[dataset]
        fit = BaselineFit(transform).fit(acc.loc[is_base, id_dataset], y[is_base])
        fit_rows.append(dict(dataset=dataset, transform=transform, slope=fit.slope_, intercept=fit.intercept_,
                             r2=fit.r2_, n_models=fit.n_models_, clip_epsilon=CLIP_EPSILON))
        base_x, base_y = t.forward(acc.loc[is_base, id_dataset]), t.forward(y[is_base])
        slope, intercept = _bootstrap_lines(rng, base_x, base_y, n_bootstrap)
        valid = (has_id & y.notna()).to_numpy()
        pred_draws = t.inverse(slope[:, None] * t.forward(id_draws[:, valid]) + intercept[:, None])
        er_draws = y_draws[:, valid] - pred_draws
        low, high = np.nanquantile(er_draws, [alpha, 1 - alpha], axis=0)
        models = acc.index[valid]
        predicted = fit.predict(acc.loc[models, id_dataset])
        for i, model in enumerate(models):
            er_rows.append(dict(model=model, dataset=dataset, id_accuracy=acc.at[model, id_dataset],
                                shift_accuracy=y[model], baseline_accuracy=predicted[i],
                                effective_robustness=y[model] - predicted[i], ci_low=low[i], ci_high=high[i],
                                is_baseline=bool(model in set(baseline_models)), **meta.loc[model].to_dict()))
    return pd.DataFrame(er_rows), pd.DataFrame(fit_rows)
