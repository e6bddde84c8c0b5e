"""Accuracy transforms for baseline fits: ``logit`` (Taori et al. 2020) and ``probit`` (Miller et al. 2021).

Accuracies are fractions in [0, 1]. The transforms are infinite at 0 and 1, so ``forward`` clips
exact 0 / 1 to ``[clip_epsilon, 1 - clip_epsilon]`` before transforming; anything outside [0, 1]
(e.g. a percentage such as 76.2, or NaN) raises ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit, logit, ndtr, ndtri

CLIP_EPSILON = 1e-4  # accuracies of exactly 0 or 1 are clipped to [eps, 1 - eps]


def check_accuracies(p, name: str = "accuracy") -> np.ndarray:
    """`p` as a float array, after checking every value is a fraction in [0, 1] (NaN is rejected)."""
    p = np.asarray(p, dtype=float)
    bad = ~((p >= 0) & (p <= 1))
    if bad.any():
        raise ValueError(f"{name}: accuracies must be fractions in [0, 1], got {float(p[bad].ravel()[0])!r}")
    return p


def check_epsilon(clip_epsilon: float) -> float:
    """`clip_epsilon` as a float; ValueError unless it is in (0, 0.5)."""
    if not 0 < clip_epsilon < 0.5:
        raise ValueError(f"clip_epsilon must be in (0, 0.5), got {clip_epsilon!r}")
    return float(clip_epsilon)


@dataclass(frozen=True)
class Transform:
    """A monotone map from accuracy (0, 1) to the real line, and its inverse."""

    name: str
    _forward: Callable[[np.ndarray], np.ndarray]
    _inverse: Callable[[np.ndarray], np.ndarray]

    def forward(self, p, clip_epsilon: float = CLIP_EPSILON) -> np.ndarray:
        """Transformed accuracies, same shape as `p` (fractions in [0, 1]; 0 and 1 clipped)."""
        p = check_accuracies(p)
        eps = check_epsilon(clip_epsilon)
        return self._forward(np.clip(p, eps, 1 - eps))

    def inverse(self, z) -> np.ndarray:
        """Accuracies in [0, 1], same shape as `z` (any real values)."""
        return self._inverse(np.asarray(z, dtype=float))


TRANSFORMS: dict[str, Transform] = {
    "logit": Transform("logit", logit, expit),
    "probit": Transform("probit", ndtri, ndtr),
}


def get_transform(name: str) -> Transform:
    """The registered transform called `name` (``"logit"`` or ``"probit"``)."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; known: {sorted(TRANSFORMS)}")
    return TRANSFORMS[name]
