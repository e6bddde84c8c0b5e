"""Agreement on the line (Baek et al., NeurIPS 2022): shift accuracy without shift labels.

When accuracy is on the line (Miller et al. 2021: ``Φ⁻¹(acc_shift) = a·Φ⁻¹(acc_id) + b`` across
models, Φ⁻¹ the probit), the agreement of pairs of models (the share of images on which both predict
the same class) is on a line too, with the same slope and bias; agreement needs no labels. From the
predicted classes of M ≥ 3 models on a labelled ID set and an unlabelled shift set:

* the **agreement line**: OLS of ``T(agr_shift(i, j))`` on ``T(agr_id(i, j))`` over the M(M−1)/2
  pairs (T the probit, or the logit), its slope â, intercept b̂ and R² (agreement-on-the-line holds
  when R² ≥ :data:`MIN_R2`; below it a warning says the estimates are not reliable);
* **ALine-S**: ``T(acc_shift(i)) = â·T(acc_id(i)) + b̂``, the agreement line applied to each ID accuracy;
* **ALine-D**: if accuracy and agreement share the line, the bias cancels in, for every pair,
  ``½(T(acc_shift(i)) + T(acc_shift(j)))
  = T(agr_shift(i, j)) + â·(½(T(acc_id(i)) + T(acc_id(j))) − T(agr_id(i, j)))``;
  the M unknowns ``T(acc_shift(i))`` are the least-squares solution of these M(M−1)/2 equations
  (full column rank for M ≥ 3), mapped back through T⁻¹.

Accuracies and agreements of exactly 0 or 1 are clipped to [ε, 1 − ε] before the transform, as in
:class:`~clipshift.robustness.BaselineFit` (whose OLS fits the agreement line).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .baseline import BaselineFit
from .transforms import CLIP_EPSILON, check_accuracies, get_transform

MIN_R2 = 0.95  # agreement-on-the-line holds when the agreement fit's R² (probit space) is at least this
MIN_MODELS = 3  # ALine-D's pairs determine every model's accuracy only from three models on


class AgreementWarning(UserWarning):
    """Agreement-on-the-line does not hold on a shift (the agreement fit's R² is below the threshold)."""


def check_predictions(predictions, name: str = "predictions") -> np.ndarray:
    """`predictions` as an (n_models, n_images) integer array of predicted class indices."""
    array = np.asarray(predictions)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"{name}: expected (models, images) predicted class indices, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)) or np.any(array % 1):
            raise ValueError(f"{name}: predicted classes must be integers, got dtype {array.dtype}")
        array = array.astype(np.int64)
    return array


def accuracy(predictions, labels, name: str = "predictions") -> np.ndarray:
    """(n_models,) share of images whose predicted class is the label (`labels`: (n_images,))."""
    predictions = check_predictions(predictions, name)
    labels = np.asarray(labels)
    if labels.shape != (predictions.shape[1],):
        raise ValueError(f"{name}: {predictions.shape[1]} images predicted but labels of shape {labels.shape}")
    return (predictions == labels[None, :]).mean(axis=1)


def pairwise_agreement(predictions, name: str = "predictions") -> np.ndarray:
    """(n_models, n_models) symmetric matrix: share of images on which models i and j predict the same
    class (1 on the diagonal). Needs no labels."""
    predictions = check_predictions(predictions, name)
    m = len(predictions)
    agree = np.eye(m)
    for i in range(m - 1):
        agree[i, i + 1:] = (predictions[i + 1:] == predictions[i][None, :]).mean(axis=1)
    return np.triu(agree, 1) + np.triu(agree, 1).T + np.eye(m)


def _pairs(values, m: int | None, name: str) -> np.ndarray:
    """The upper-triangle pair values (i < j, row-major) of an (M, M) matrix, or a 1-D array as given."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 2:
        if values.shape[0] != values.shape[1] or (m is not None and values.shape[0] != m):
            raise ValueError(f"{name}: expected a ({m}, {m}) agreement matrix, got shape {values.shape}")
        return values[np.triu_indices(values.shape[0], 1)]
    if values.ndim != 1:
        raise ValueError(f"{name}: expected an agreement matrix or one value per pair, got shape {values.shape}")
    return values


@dataclass(frozen=True)
class AgreementLine:
    """``T(shift) = slope · T(id) + intercept`` fitted over pairs of models (T: `transform`), its R² in
    transformed space and the number of pairs."""

    slope: float
    intercept: float
    r2: float
    num_pairs: int
    transform: str = "probit"
    clip_epsilon: float = CLIP_EPSILON

    def predict(self, id_values) -> np.ndarray:
        """The line's shift value at `id_values` (accuracies or agreements, fractions) → fractions."""
        t = get_transform(self.transform)
        z = self.slope * t.forward(check_accuracies(id_values, "id_values"), self.clip_epsilon) + self.intercept
        return t.inverse(z)


def fit_agreement_line(id_agreement, shift_agreement, transform: str = "probit",
                       clip_epsilon: float = CLIP_EPSILON) -> AgreementLine:
    """OLS of T(shift agreement) on T(ID agreement) over pairs of models: (M, M) matrices (their upper
    triangles are used) or one value per pair."""
    x = _pairs(id_agreement, None, "id_agreement")
    y = _pairs(shift_agreement, None, "shift_agreement")
    if x.shape != y.shape:
        raise ValueError(f"id_agreement and shift_agreement: {len(x)} and {len(y)} pairs")
    try:
        fit = BaselineFit(transform, clip_epsilon).fit(x, y)
    except ValueError as error:
        raise ValueError(f"agreement line: {error}".replace("baseline models", "pairs of models")) from None
    return AgreementLine(fit.slope_, fit.intercept_, fit.r2_, len(x), transform, clip_epsilon)


def aline_s(id_accuracy, line: AgreementLine) -> np.ndarray:
    """ALine-S: each model's shift accuracy on the agreement line, ``T⁻¹(â·T(acc_id) + b̂)``."""
    return line.predict(id_accuracy)


def aline_d(id_accuracy, id_agreement, shift_agreement, slope: float, transform: str = "probit",
            clip_epsilon: float = CLIP_EPSILON) -> np.ndarray:
    """ALine-D: the least-squares solution over all pairs i < j of
    ``½(x_i + x_j) = T(agr_shift(i, j)) + slope·(½(T(acc_id(i)) + T(acc_id(j))) − T(agr_id(i, j)))``
    for x = T(shift accuracy), mapped back to accuracies. `id_agreement`, `shift_agreement`:
    (M, M) matrices; `slope`: the agreement line's (â)."""
    acc = check_accuracies(id_accuracy, "id_accuracy")
    m = len(acc)
    if acc.ndim != 1 or m < MIN_MODELS:
        raise ValueError(f"ALine-D needs at least {MIN_MODELS} models (their pairs fix every model's accuracy), "
                         f"got {m}")
    t = get_transform(transform)
    i, j = np.triu_indices(m, 1)
    t_acc = t.forward(acc, clip_epsilon)
    t_id = t.forward(check_accuracies(_pairs(id_agreement, m, "id_agreement"), "id_agreement"), clip_epsilon)
    t_shift = t.forward(check_accuracies(_pairs(shift_agreement, m, "shift_agreement"), "shift_agreement"),
                        clip_epsilon)
    system = np.zeros((len(i), m))
    system[np.arange(len(i)), i] = 0.5
    system[np.arange(len(i)), j] = 0.5
    rhs = t_shift + slope * (0.5 * (t_acc[i] + t_acc[j]) - t_id)
    solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return t.inverse(solution)


@dataclass
class ShiftEstimate:
    """ALine-S and ALine-D estimates of every model's accuracy on one shift.

    ``holds``: the agreement line's R² is at least ``min_r2``; ``shift_accuracy`` and
    ``accuracy_line`` (the same OLS over models, on the true accuracies) only where labels exist."""

    shift: str
    models: list
    id_accuracy: np.ndarray
    aline_s: np.ndarray
    aline_d: np.ndarray
    line: AgreementLine
    min_r2: float
    shift_accuracy: np.ndarray | None = None
    accuracy_line: AgreementLine | None = None

    @property
    def holds(self) -> bool:
        return bool(self.line.r2 >= self.min_r2)

    def table(self) -> pd.DataFrame:
        """One row per model: ``model, dataset, id_accuracy, naive, aline_s, aline_d, shift_accuracy``
        (NaN without labels), the errors ``error_<estimate>`` (estimate − true; NaN without labels) and
        ``reliable`` (agreement-on-the-line holds)."""
        true = self.shift_accuracy if self.shift_accuracy is not None else np.full(len(self.models), np.nan)
        out = pd.DataFrame({"model": self.models, "dataset": self.shift, "id_accuracy": self.id_accuracy,
                            "naive": self.id_accuracy, "aline_s": self.aline_s, "aline_d": self.aline_d,
                            "shift_accuracy": true})
        for name in ESTIMATES:
            out[f"error_{name}"] = out[name] - out["shift_accuracy"]
        out["reliable"] = self.holds
        return out

    def fit_row(self) -> dict:
        """The shift's agreement line (and accuracy line where labels exist) and, with labels, the mean
        absolute error of each estimate (fractions)."""
        acc = self.accuracy_line
        row = {"dataset": self.shift, "transform": self.line.transform, "slope": self.line.slope,
               "intercept": self.line.intercept, "r2": self.line.r2, "num_models": len(self.models),
               "num_pairs": self.line.num_pairs, "holds": self.holds, "min_r2": self.min_r2,
               "accuracy_slope": acc.slope if acc else np.nan, "accuracy_intercept": acc.intercept if acc else np.nan,
               "accuracy_r2": acc.r2 if acc else np.nan}
        errors = self.table()
        for name in ESTIMATES:
            row[f"mae_{name}"] = float(errors[f"error_{name}"].abs().mean()) if acc else np.nan
        return row


ESTIMATES = ("naive", "aline_s", "aline_d")  # naive: shift accuracy = ID accuracy


def estimate_shift_accuracy(id_predictions, id_labels, shift_predictions, shift_labels=None, *, models=None,
                            shift: str = "shift", transform: str = "probit", clip_epsilon: float = CLIP_EPSILON,
                            min_r2: float = MIN_R2, warn: bool = True) -> ShiftEstimate:
    """ALine-S and ALine-D for one shift. `id_predictions`: (M, N_id) predicted classes of M ≥ 3 models
    on the labelled ID set (`id_labels`: (N_id,)); `shift_predictions`: (M, N_shift) on the shift set,
    same models in the same order; `shift_labels` (optional, (N_shift,)): only to put the true
    accuracies beside the estimates. Warns (:class:`AgreementWarning`) when the agreement fit's R² is
    below `min_r2`."""
    id_predictions = check_predictions(id_predictions, "id_predictions")
    shift_predictions = check_predictions(shift_predictions, f"{shift} predictions")
    if len(id_predictions) != len(shift_predictions):
        raise ValueError(f"{shift}: {len(shift_predictions)} models' predictions but {len(id_predictions)} on the "
                         f"ID set; give the same models in the same order")
    names = list(models) if models is not None else [f"model_{k}" for k in range(len(id_predictions))]
    if len(names) != len(id_predictions):
        raise ValueError(f"models: {len(names)} names for {len(id_predictions)} models' predictions")
    if len(names) < MIN_MODELS:
        raise ValueError(f"{shift}: agreement on the line needs at least {MIN_MODELS} models, got {len(names)}")
    id_acc = accuracy(id_predictions, id_labels, "id_predictions")
    id_agree, shift_agree = pairwise_agreement(id_predictions), pairwise_agreement(shift_predictions)
    line = fit_agreement_line(id_agree, shift_agree, transform, clip_epsilon)
    estimate = ShiftEstimate(shift, names, id_acc, aline_s(id_acc, line),
                             aline_d(id_acc, id_agree, shift_agree, line.slope, transform, clip_epsilon), line, min_r2)
    if shift_labels is not None:
        true = accuracy(shift_predictions, shift_labels, f"{shift} predictions")
        estimate.shift_accuracy = true
        fit = BaselineFit(transform, clip_epsilon).fit(id_acc, true)
        estimate.accuracy_line = AgreementLine(fit.slope_, fit.intercept_, fit.r2_, len(names), transform, clip_epsilon)
    if warn and not estimate.holds:
        warnings.warn(not_on_the_line(estimate), AgreementWarning, stacklevel=2)
    return estimate


def not_on_the_line(estimate: ShiftEstimate) -> str:
    """The one-line warning for a shift where agreement-on-the-line does not hold."""
    return (f"{estimate.shift}: agreement-on-the-line does not hold (agreement fit R² {estimate.line.r2:.3f} < "
            f"{estimate.min_r2:g} in {estimate.line.transform} space over {estimate.line.num_pairs} pairs); "
            f"its ALine estimates are not reliable")
