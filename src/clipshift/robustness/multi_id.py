"""Effective robustness with several in-distribution test sets (Shi et al., NeurIPS 2023).

With models trained on different distributions, accuracy on one ID test set (ImageNet) does not
control for what each model was trained on. Shi et al. fit, over baseline models that include
models trained on each distribution, a plane

    transform(shift accuracy) = Σ_k w_k · transform(ID_k accuracy) + c

(ordinary least squares; ``transform`` is logit or probit as for one ID set) and take a model's
effective robustness as its shift accuracy minus the plane's prediction mapped back to accuracy.
With one ID set the plane is the line of Taori et al.
"""

from __future__ import annotations

import numpy as np

from .baseline import NotFittedError, resample_indices
from .transforms import CLIP_EPSILON, check_epsilon, check_accuracies, get_transform

MAX_REDRAWS = 100  # rounds of redrawing degenerate bootstrap resamples before giving up on them


class PlaneFit:
    """OLS of transform(shift accuracy) on the transformed accuracies of K ID test sets, scikit-learn style.

    Fitted attributes: ``weights_`` (K,), ``intercept_`` (transformed space), ``r2_`` (1.0 when the
    transformed shift accuracies are all equal), ``num_models_``, ``residual_std_`` (ddof K + 1 when
    there are more than K + 1 models)."""

    def __init__(self, transform: str = "logit", clip_epsilon: float = CLIP_EPSILON):
        self.transform = transform
        self.clip_epsilon = clip_epsilon

    def fit(self, id_acc, shift_acc) -> "PlaneFit":
        """Fit on baseline models; `id_acc`: (n_models, K) fractions, `shift_acc`: (n_models,). Returns self."""
        x, y = check_accuracies(id_acc, "id_acc"), check_accuracies(shift_acc, "shift_acc")
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"id_acc must be (n_models, K) and shift_acc (n_models,), got shapes {x.shape} "
                             f"and {y.shape}")
        k = x.shape[1]
        if len(x) < k + 1:
            raise ValueError(f"id_acc: need at least {k + 1} baseline models to fit a plane on {k} id test sets, "
                             f"got {len(x)}")
        design = np.column_stack([self._forward(x), np.ones(len(x))])
        if np.linalg.matrix_rank(design) < k + 1:
            raise ValueError(f"id_acc: the {len(x)} baseline models' transformed id accuracies are collinear "
                             f"(or constant) after clipping; cannot fit a plane on {k} id test sets. Add baseline "
                             f"models trained on each distribution")
        ty = self._forward(y)
        coef = np.linalg.lstsq(design, ty, rcond=None)[0]
        self.weights_, self.intercept_ = coef[:k].astype(float), float(coef[k])
        residual = ty - design @ coef
        total = float(((ty - ty.mean()) ** 2).sum())
        self.r2_ = float(1 - (residual**2).sum() / total) if total > 0 else 1.0
        self.num_models_ = len(x)
        self.residual_std_ = float(residual.std(ddof=min(k + 1, len(x) - 1)))
        return self

    def predict(self, id_acc) -> np.ndarray:
        """Shift accuracy the plane predicts at `id_acc` ((m, K) fractions) → (m,) in [0, 1]."""
        if not hasattr(self, "weights_"):
            raise NotFittedError("this PlaneFit is not fitted yet: call fit(id_acc, shift_acc) first")
        z = self._forward(check_accuracies(id_acc, "id_acc")) @ self.weights_ + self.intercept_
        return get_transform(self.transform).inverse(z)

    def _forward(self, p: np.ndarray) -> np.ndarray:
        return get_transform(self.transform).forward(p, check_epsilon(self.clip_epsilon))

    def __repr__(self) -> str:
        return f"PlaneFit(transform={self.transform!r}, clip_epsilon={self.clip_epsilon!r})"


def bootstrap_planes(rng: np.random.Generator, tx, ty, n_draws: int, strata=None) -> tuple[np.ndarray, np.ndarray]:
    """Weights (n_draws, K) and intercepts (n_draws,) of OLS refits on resampled baseline models.

    `tx`: (n_models, K) transformed id accuracies, `ty`: (n_models,) transformed shift accuracies.
    Each draw resamples the models with replacement (vectorised over draws). With `strata`
    ((n_models,) group labels, e.g. each model's training distribution) it resamples within each
    stratum, so every draw keeps as many models of each distribution as the baseline has (see
    ``baseline.resample_indices``); without, uniformly over all models, and a draw may then lack a
    distribution altogether. A resample whose design matrix is rank-deficient is redrawn (up to
    ``MAX_REDRAWS`` rounds), any still degenerate then gives NaN, which callers skip (``nanquantile``)."""
    tx, ty = np.asarray(tx, dtype=float), np.asarray(ty, dtype=float)
    n, k = tx.shape
    design = np.column_stack([tx, np.ones(n)])
    idx = resample_indices(rng, n, n_draws, strata)
    for _ in range(MAX_REDRAWS):
        bad = np.linalg.matrix_rank(design[idx]) < k + 1
        if not bad.any():
            break
        idx[bad] = resample_indices(rng, n, int(bad.sum()), strata)
    x, y = design[idx], ty[idx]  # (draws, n, K + 1), (draws, n)
    xtx, xty = np.einsum("dni,dnj->dij", x, x), np.einsum("dni,dn->di", x, y)
    good = np.linalg.matrix_rank(x) == k + 1
    coef = np.full((n_draws, k + 1), np.nan)
    if good.any():
        coef[good] = np.linalg.solve(xtx[good], xty[good][..., None])[..., 0]
    return coef[:, :k], coef[:, k]
