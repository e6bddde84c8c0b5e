"""The baseline of Taori et al. (2020): a line through baseline models in transformed accuracy space.

``transform(shift accuracy) ≈ slope · transform(id accuracy) + intercept`` by ordinary least squares;
effective robustness is the shift accuracy minus the baseline's prediction, mapped back to [0, 1].
"""

from __future__ import annotations

import numpy as np

from .transforms import CLIP_EPSILON, check_epsilon, check_accuracies, get_transform

MAX_REDRAWS = 100  # rounds of redrawing degenerate bootstrap resamples before giving up on them


class NotFittedError(ValueError, AttributeError):
    """A BaselineFit was used before ``fit`` (same bases as scikit-learn's NotFittedError)."""


class BaselineFit:
    """OLS of transform(shift accuracy) on transform(id accuracy), scikit-learn style.

    Parameters: `transform` names a registered transform (``"logit"`` or ``"probit"``);
    `clip_epsilon` is how far exact 0 / 1 accuracies are pulled inside (0, 1).
    Fitted attributes: ``slope_``, ``intercept_`` (transformed space), ``r2_`` (of the fit in
    transformed space; 1.0 when the transformed shift accuracies are all equal), ``num_models_``,
    ``residual_std_`` (transformed space, ddof 2 when there are more than 2 models).
    """

    def __init__(self, transform: str = "logit", clip_epsilon: float = CLIP_EPSILON):
        self.transform = transform
        self.clip_epsilon = clip_epsilon

    def fit(self, id_acc, shift_acc) -> "BaselineFit":
        """Fit on baseline models; `id_acc`, `shift_acc`: (n_models,) fractions in [0, 1]. Returns self."""
        x, y = check_accuracies(id_acc, "id_acc"), check_accuracies(shift_acc, "shift_acc")
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError(f"id_acc and shift_acc must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
        if len(x) < 2:
            raise ValueError(f"id_acc: need at least 2 baseline models to fit a line, got {len(x)}")
        tx, ty = self._forward(x), self._forward(y)
        if np.ptp(tx) == 0:
            raise ValueError(f"id_acc: all {len(x)} baseline models have the same id accuracy ({float(x[0])!r}) "
                             f"after clipping; cannot fit a line")
        self.slope_, self.intercept_ = (float(v) for v in np.polyfit(tx, ty, 1))
        residual = ty - (self.slope_ * tx + self.intercept_)
        total = float(((ty - ty.mean()) ** 2).sum())
        self.r2_ = float(1 - (residual**2).sum() / total) if total > 0 else 1.0
        self.num_models_ = len(x)
        self.residual_std_ = float(residual.std(ddof=min(2, len(x) - 1)))
        return self

    def predict(self, id_acc) -> np.ndarray:
        """Shift accuracy the baseline predicts at `id_acc` (fractions, any shape) → same shape, in [0, 1]."""
        self._check_fitted()
        z = self.slope_ * self._forward(check_accuracies(id_acc, "id_acc")) + self.intercept_
        return get_transform(self.transform).inverse(z)

    def effective_robustness(self, id_acc, shift_acc) -> np.ndarray:
        """``shift_acc - predict(id_acc)`` in accuracy units (fractions), broadcast shape of the inputs."""
        return check_accuracies(shift_acc, "shift_acc") - self.predict(id_acc)

    def _forward(self, p: np.ndarray) -> np.ndarray:
        return get_transform(self.transform).forward(p, check_epsilon(self.clip_epsilon))

    def _check_fitted(self) -> None:
        if not hasattr(self, "slope_"):
            raise NotFittedError("this BaselineFit is not fitted yet: call fit(id_acc, shift_acc) first")

    def __repr__(self) -> str:
        return f"BaselineFit(transform={self.transform!r}, clip_epsilon={self.clip_epsilon!r})"


def resample_indices(rng: np.random.Generator, n_models: int, n_draws: int, strata=None) -> np.ndarray:
    """(n_draws, n_models) indices of baseline models drawn with replacement, one row per bootstrap draw.

    Without `strata`: each draw takes `n_models` models uniformly from all of them
    (``rng.integers(0, n_models, (n_draws, n_models))``). With `strata` ((n_models,) group labels,
    e.g. each model's training distribution): a stratified bootstrap; each draw resamples with
    replacement within each stratum, so every stratum keeps its size in every draw (column j of a
    draw is always a model of model j's stratum). Strata are drawn in order of first appearance; a
    stratum of one model is that model in every draw. One stratum gives the same draws as none."""
    if strata is None:
        return rng.integers(0, n_models, size=(n_draws, n_models))
    labels = np.asarray(strata, dtype=object)
    if labels.shape != (n_models,):
        raise ValueError(f"strata: need one label per baseline model ({n_models}), got shape {labels.shape}")
    if any(label is None or (isinstance(label, float) and np.isnan(label)) for label in labels):
        raise ValueError("strata: every baseline model needs a label, got None or NaN")
    idx = np.empty((n_draws, n_models), dtype=np.int64)
    for label in dict.fromkeys(labels.tolist()):
        members = np.flatnonzero(labels == label)
        idx[:, members] = members[rng.integers(0, len(members), size=(n_draws, len(members)))]
    return idx


def bootstrap_lines(rng: np.random.Generator, tx, ty, n_draws: int, strata=None) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and intercepts, each (n_draws,), of OLS refits on resampled baseline models.

    `tx`, `ty`: (n_models,) transformed id / shift accuracies. Each draw resamples the models with
    replacement (vectorised over draws), within each stratum when `strata` ((n_models,) group labels)
    is given: see ``resample_indices``. A resample whose x values are all equal cannot define a
    line: such draws are redrawn (up to ``MAX_REDRAWS`` rounds); any still degenerate then (only
    possible when nearly all x are equal) give NaN, which callers skip (``nanquantile``).
    """
    tx, ty = np.asarray(tx, dtype=float), np.asarray(ty, dtype=float)
    idx = resample_indices(rng, len(tx), n_draws, strata)
    for _ in range(MAX_REDRAWS):
        bad = np.ptp(tx[idx], axis=1) == 0
        if not bad.any():
            break
        idx[bad] = resample_indices(rng, len(tx), int(bad.sum()), strata)
    x, y = tx[idx], ty[idx]
    xm, ym = x.mean(1, keepdims=True), y.mean(1, keepdims=True)
    var = ((x - xm) ** 2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(var > 0, ((x - xm) * (y - ym)).sum(1) / var, np.nan)
    return slope, ym[:, 0] - slope * xm[:, 0]
