"""Effective robustness (Taori et al. 2020): readers for results tables (this project's, open_clip,
timm, CLIP_benchmark), baseline fits in logit/probit space, ER with bootstrap intervals, and the
standard plot."""

from .baseline import BaselineFit, NotFittedError
from .effective import (AVERAGE, combine_tables, compute_effective_robustness, default_shifts,
                        effective_robustness)
from .plots import plot_all, plot_effective_robustness
from .tables import (CANONICAL_DATASETS, NATURAL_SHIFTS, TableFormatError, canonical_dataset, detect_format,
                     read_results)
from .transforms import CLIP_EPSILON, TRANSFORMS, get_transform

__all__ = ["AVERAGE", "BaselineFit", "CANONICAL_DATASETS", "CLIP_EPSILON", "NATURAL_SHIFTS",
           "NotFittedError", "TRANSFORMS", "TableFormatError", "canonical_dataset", "combine_tables",
           "compute_effective_robustness", "default_shifts", "detect_format", "effective_robustness",
           "get_transform", "plot_all", "plot_effective_robustness", "read_results"]
