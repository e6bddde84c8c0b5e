"""Agreement on the line over several shifts, with effective robustness, and its prediction files.

:func:`agreement_on_the_line` runs ALine-S and ALine-D (:mod:`.agreement`) for every shift and puts
the estimates beside the true accuracies where labels exist; with baseline models it adds each
model's effective robustness from the estimates: a :class:`~clipshift.robustness.BaselineFit` line
(``logit`` or ``probit``, as ``clipshift er``) through the baseline models' ID accuracies and
*estimated* shift accuracies (ALine-D), and ER = estimate − the line's prediction; with labels, the
same from the true accuracies beside it. (ALine-S puts every model on one line, so its ER against a
baseline fitted on ALine-S estimates is zero by construction: only ALine-D's is reported.)

A prediction file (``.npz``, :func:`write_prediction_file` / :func:`read_prediction_file`) holds
``models`` (M names), ``predictions/<dataset>`` ((M, N) predicted class indices, the same N images
in the same order for every model) and, where labels exist, ``labels/<dataset>`` ((N,) classes).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .agreement import ESTIMATES, MIN_R2, AgreementWarning, check_predictions, estimate_shift_accuracy, not_on_the_line
from .baseline import BaselineFit
from .transforms import CLIP_EPSILON

MODELS_KEY, PREDICTIONS_PREFIX, LABELS_PREFIX = "models", "predictions/", "labels/"


def write_prediction_file(path, models: Sequence[str], predictions: Mapping[str, np.ndarray],
                          labels: Mapping[str, np.ndarray | None] | None = None) -> Path:
    """Write `predictions` (dataset → (M, N) predicted classes of `models`) and `labels` (dataset →
    (N,) classes, or None for an unlabelled set) to the ``.npz`` file `path`; returns the path."""
    arrays = {MODELS_KEY: np.asarray(list(models), dtype=str)}
    for name, preds in predictions.items():
        preds = check_predictions(preds, f"predictions of {name!r}")
        if len(preds) != len(models):
            raise ValueError(f"predictions of {name!r}: {len(preds)} rows for {len(models)} models")
        arrays[PREDICTIONS_PREFIX + name] = preds
    for name, target in (labels or {}).items():
        if target is not None:
            arrays[LABELS_PREFIX + name] = np.asarray(target)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # np.savez would add .npz to a name without it
        np.savez_compressed(handle, **arrays)
    return path


def read_prediction_file(path) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(models, predictions: dataset → (M, N), labels: dataset → (N,)) from a prediction file; a file
    that is not one is a ValueError naming it and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prediction file")
    expected = (f"an .npz file with '{MODELS_KEY}' and '{PREDICTIONS_PREFIX}<dataset>' arrays "
                f"(clipshift.robustness.agreement_table.write_prediction_file)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a prediction file ({error}); expected {expected}") from None
    if MODELS_KEY not in arrays or not any(k.startswith(PREDICTIONS_PREFIX) for k in arrays):
        raise ValueError(f"{path}: has {sorted(arrays)}; expected {expected}")
    models = [str(m) for m in arrays[MODELS_KEY]]
    predictions = {k[len(PREDICTIONS_PREFIX):]: check_predictions(v, f"{path}: {k}") for k, v in arrays.items()
                   if k.startswith(PREDICTIONS_PREFIX)}
    labels = {k[len(LABELS_PREFIX):]: v for k, v in arrays.items() if k.startswith(LABELS_PREFIX)}
    for name, preds in predictions.items():
        if len(preds) != len(models):
            raise ValueError(f"{path}: {PREDICTIONS_PREFIX}{name} has {len(preds)} rows for {len(models)} models")
        if name in labels and labels[name].shape != (preds.shape[1],):
            raise ValueError(f"{path}: {LABELS_PREFIX}{name} has shape {labels[name].shape}, "
                             f"{PREDICTIONS_PREFIX}{name} {preds.shape[1]} images")
    return models, predictions, labels


def effective_robustness_of(id_accuracy, shift_accuracy, baseline, transform: str = "logit",
                            clip_epsilon: float = CLIP_EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """(baseline accuracy, effective robustness), each (M,): a BaselineFit line through the models of
    the boolean mask `baseline` ((M,), at least 2), and ``shift_accuracy - line(id_accuracy)``.
    `shift_accuracy` may be estimates (ALine-D's: ER without shift labels) or true accuracies."""
    id_accuracy, shift_accuracy = np.asarray(id_accuracy, dtype=float), np.asarray(shift_accuracy, dtype=float)
    baseline = np.asarray(baseline, dtype=bool)
    fit = BaselineFit(transform, clip_epsilon).fit(id_accuracy[baseline], shift_accuracy[baseline])
    line = fit.predict(id_accuracy)
    return line, shift_accuracy - line


def _add_effective_robustness(table: pd.DataFrame, baseline: np.ndarray, transform: str, clip_epsilon: float) -> None:
    """Add ``baseline_aline_d, er_aline_d`` and ``baseline_true, er_true`` (NaN without labels) to one shift's rows."""
    for column, suffix in (("aline_d", "aline_d"), ("shift_accuracy", "true")):
        values = table[column].to_numpy()
        if np.isnan(values).any():
            table[f"baseline_{suffix}"] = table[f"er_{suffix}"] = np.nan
        else:
            table[f"baseline_{suffix}"], table[f"er_{suffix}"] = effective_robustness_of(
                table["id_accuracy"], values, baseline, transform, clip_epsilon)


def agreement_on_the_line(predictions: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray | None],
                          models: Sequence[str], *, id_dataset: str, shifts: Sequence[str] | None = None,
                          baseline_models: Sequence[str] | None = None, transform: str = "probit",
                          er_transform: str = "logit", clip_epsilon: float = CLIP_EPSILON, min_r2: float = MIN_R2,
                          warn: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ALine-S and ALine-D on every shift: (table, fits).

    `predictions`: dataset → (M, N) predicted classes of `models` (each dataset's images in one order
    for every model); `labels`: dataset → (N,) classes or None; the ID set (`id_dataset`) needs them.
    `shifts`: default every other dataset. `baseline_models` (at least 2): adds effective robustness
    against a line (`er_transform`) through them. `transform`: the agreement fits' (probit, as Baek et
    al.). One :class:`~clipshift.robustness.agreement.AgreementWarning` per shift whose agreement fit's
    R² is below `min_r2`.

    table: one row per (model, shift): ``model, dataset, id_dataset, id_accuracy, naive, aline_s,
    aline_d, shift_accuracy`` (true; NaN without labels), ``error_naive, error_aline_s, error_aline_d``
    (estimate − true), ``reliable``, ``is_baseline`` and, with a baseline, ``baseline_aline_d,
    er_aline_d, baseline_true, er_true``. fits: one row per shift (see ``ShiftEstimate.fit_row``)."""
    if id_dataset not in predictions:
        raise ValueError(f"id_dataset {id_dataset!r}: no predictions; datasets present: {sorted(predictions)}")
    if labels.get(id_dataset) is None:
        raise ValueError(f"id_dataset {id_dataset!r}: no labels; the ID set must be labelled")
    shifts = [d for d in predictions if d != id_dataset] if shifts is None else list(shifts)
    missing = [d for d in shifts if d not in predictions]
    if missing or not shifts:
        raise ValueError(f"shifts {missing or '(none)'}: need predictions on at least one shift; datasets present: "
                         f"{sorted(predictions)}")
    baseline = np.isin(np.asarray(models, dtype=object), list(baseline_models or []))
    unknown = sorted(set(baseline_models or []) - set(models))
    if unknown or (baseline_models is not None and baseline.sum() < 2):
        raise ValueError(f"baseline_models: {f'{unknown} have no predictions' if unknown else ''}"
                         f"{'; ' if unknown else ''}need at least 2 models with predictions, got {int(baseline.sum())}")
    tables, fits = [], []
    for shift in shifts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AgreementWarning)
            estimate = estimate_shift_accuracy(predictions[id_dataset], labels[id_dataset], predictions[shift],
                                               labels.get(shift), models=models, shift=shift, transform=transform,
                                               clip_epsilon=clip_epsilon, min_r2=min_r2)
        if warn and not estimate.holds:
            warnings.warn(not_on_the_line(estimate), AgreementWarning, stacklevel=2)
        table = estimate.table()
        table.insert(2, "id_dataset", id_dataset)
        table["is_baseline"] = baseline
        if baseline_models is not None:
            _add_effective_robustness(table, baseline, er_transform, clip_epsilon)
        tables.append(table)
        fits.append({**estimate.fit_row(), "id_dataset": id_dataset})
    return pd.concat(tables, ignore_index=True), pd.DataFrame(fits)


def mae_table(fits: pd.DataFrame) -> pd.DataFrame:
    """Per shift: the agreement fit's R², whether it holds, and the mean absolute error (percentage
    points) of the naive estimate, ALine-S and ALine-D (NaN without labels)."""
    out = fits[["dataset", "r2", "holds", "num_models"]].copy()
    for name in ESTIMATES:
        out[f"mae_{name}_pp"] = 100 * fits[f"mae_{name}"]
    return out
