"""Effective robustness (Taori et al. 2020): baseline fits in logit/probit space, ER with
bootstrap intervals, and the standard plot."""

from .baseline import BaselineFit, NotFittedError
from .effective import AVG_SHIFTS, compute_effective_robustness
from .plots import plot_all, plot_effective_robustness
from .transforms import CLIP_EPSILON, TRANSFORMS, get_transform

__all__ = ["AVG_SHIFTS", "BaselineFit", "CLIP_EPSILON", "NotFittedError", "TRANSFORMS",
           "compute_effective_robustness", "get_transform", "plot_all", "plot_effective_robustness"]
