"""Effective robustness (Taori et al. 2020): readers for results tables (this project's, open_clip,
timm, CLIP_benchmark JSON and CSV, JSON lines, long tables with named columns), baseline fits in
logit/probit space (a line over one ID test set, or the plane of Shi et al. 2023 over several), ER
with bootstrap intervals, and the standard plots."""

from .baseline import BaselineFit, NotFittedError
from .datasets import DATASET_ALIASES, canonical_dataset
from .effective import (AVERAGE, ID_ACCURACY_PREFIX, ID_SEPARATOR, WEIGHT_PREFIX, combine_tables,
                        compute_effective_robustness, default_shifts, effective_robustness)
from .multi_id import PlaneFit
from .plots import plot_all, plot_effective_robustness, plot_multi_id_fit
from .protocols import MixedProtocolsError
from .tables import CANONICAL_DATASETS, NATURAL_SHIFTS, TableFormatError, detect_format, read_results
from .transforms import CLIP_EPSILON, TRANSFORMS, get_transform

__all__ = ["AVERAGE", "BaselineFit", "CANONICAL_DATASETS", "CLIP_EPSILON", "DATASET_ALIASES", "ID_ACCURACY_PREFIX",
           "ID_SEPARATOR", "MixedProtocolsError", "NATURAL_SHIFTS", "NotFittedError", "PlaneFit", "TRANSFORMS",
           "TableFormatError", "WEIGHT_PREFIX", "canonical_dataset", "combine_tables", "compute_effective_robustness", "default_shifts",
           "detect_format", "effective_robustness", "get_transform", "plot_all", "plot_effective_robustness",
           "plot_multi_id_fit", "read_results"]
