"""The baseline of Taori et al.: a line through baseline models in transformed accuracy space."""

from __future__ import annotations

import numpy as np

from .transforms import CLIP_EPSILON, get_transform


class BaselineFit:
    """OLS of transform(shift accuracy) on transform(ID accuracy). Fitted state ends in ``_``."""

    def __init__(self, transform: str = "logit", clip_epsilon: float = CLIP_EPSILON):
        self.transform = transform
        self.clip_epsilon = clip_epsilon

    def fit(self, id_acc, shift_acc) -> "BaselineFit":
        x, y = np.asarray(id_acc, dtype=float), np.asarray(shift_acc, dtype=float)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"id_acc and shift_acc must be 1-D of equal length, got {x.shape} and {y.shape}")
        if len(x) < 2:
            raise ValueError(f"id_acc: need at least 2 baseline models to fit a line, got {len(x)}")
        t = get_transform(self.transform)
        tx, ty = t.forward(x, self.clip_epsilon), t.forward(y, self.clip_epsilon)
        if np.ptp(tx) == 0:
            raise ValueError(f"id_acc: all baseline models have the same accuracy ({x[0]}); cannot fit a line")
        self.slope_, self.intercept_ = np.polyfit(tx, ty, 1)
        residual = ty - (self.slope_ * tx + self.intercept_)
        total = ((ty - ty.mean()) ** 2).sum()
        self.r2_ = float(1 - (residual**2).sum() / total) if total > 0 else 1.0
        self.n_models_ = len(x)
        self.residual_std_ = float(residual.std(ddof=min(2, len(x) - 1)))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "slope_"):
            raise RuntimeError("this BaselineFit is not fitted yet: call fit(id_acc, shift_acc) first")

    def predict(self, id_acc) -> np.ndarray:
        """Shift accuracy the baseline predicts at `id_acc` (fractions)."""
        self._check_fitted()
        t = get_transform(self.transform)
        return t.inverse(self.slope_ * t.forward(id_acc, self.clip_epsilon) + self.intercept_)

    def effective_robustness(self, id_acc, shift_acc) -> np.ndarray:
        return np.asarray(shift_acc, dtype=float) - self.predict(id_acc)
