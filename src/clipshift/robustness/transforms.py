"""Accuracy transforms for baseline fits: ``logit`` (Taori et al.) and ``probit`` (Miller et al.)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit, logit, ndtr, ndtri

CLIP_EPSILON = 1e-4  # accuracies of exactly 0 or 1 are clipped to [eps, 1 - eps]


@dataclass(frozen=True)
class Transform:
    name: str
    _forward: Callable[[np.ndarray], np.ndarray]
    inverse: Callable[[np.ndarray], np.ndarray]

    def forward(self, p, clip_epsilon: float = CLIP_EPSILON) -> np.ndarray:
        """Transformed accuracies; `p` must lie in [0, 1] (fractions, not percent)."""
        p = np.asarray(p, dtype=float)
        bad = ~((p >= 0) & (p <= 1))
        if bad.any():
            raise ValueError(f"accuracies must be fractions in [0, 1], got {float(p[bad].ravel()[0])}")
        return self._forward(np.clip(p, clip_epsilon, 1 - clip_epsilon))


TRANSFORMS = {"logit": Transform("logit", logit, expit), "probit": Transform("probit", ndtri, ndtr)}


def get_transform(name: str) -> Transform:
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; known: {sorted(TRANSFORMS)}")
    return TRANSFORMS[name]
