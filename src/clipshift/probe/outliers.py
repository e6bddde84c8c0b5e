"""Outlier features (Crabbé et al.): kurtosis of the representation and its largest dimensions.

For one example, h ∈ R^D is treated as D draws of one variable: its **kurtosis** is the fourth
standardised moment over the feature dimensions,

    κ(h) = mean_j (h_j − μ)^4 / (mean_j (h_j − μ)^2)^2,   μ = mean_j h_j

(population moments; 3 for Gaussian activations, and **excess kurtosis** κ − 3 is 0 for them).
A few dimensions far larger than the rest make κ large. The dataset's kurtosis is the mean of
κ(h) over its examples, reported with the standard deviation over examples (the spread) and the
standard error of the mean.

The **activation profile** is, per dimension j, the mean activation, the mean |activation| over the
dataset, and its ratio to the median dimension's mean |activation|. A dimension is an **outlier**
when that ratio exceeds `ratio` (default :data:`OUTLIER_RATIO` = 10: an order of magnitude above
the median dimension; the paper reports outlier features orders of magnitude above average).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ._defaults import OUTLIER_RATIO
GAUSSIAN_KURTOSIS = 3.0


def _as_tensor(h) -> torch.Tensor:
    h = torch.as_tensor(h).detach().cpu()
    if h.dim() != 2 or h.shape[0] == 0 or h.shape[1] < 2:
        raise ValueError(f"activations must be a (N, D) matrix with N >= 1 and D >= 2, got shape {tuple(h.shape)}")
    return h.double()


def kurtosis(h) -> torch.Tensor:
    """(N,) kurtosis of each row of `h` (N, D) over its D dimensions (3 for Gaussian rows); NaN for a
    constant row."""
    h = _as_tensor(h)
    centred = h - h.mean(dim=1, keepdim=True)
    m2 = centred.pow(2).mean(dim=1)
    m4 = centred.pow(4).mean(dim=1)
    out = m4 / m2.pow(2)
    return torch.where(m2 > 0, out, torch.full_like(out, float("nan")))


def kurtosis_summary(h) -> dict:
    """Kurtosis of `h` averaged over examples: ``kurtosis_mean``, ``kurtosis_std`` (over examples),
    ``kurtosis_sem``, ``kurtosis_median``, the same four for excess kurtosis (κ − 3), and
    ``n_examples`` / ``n_dims`` (constant rows are left out and counted in ``n_constant``)."""
    k = kurtosis(h)
    valid = k[~torch.isnan(k)]
    n = int(valid.numel())
    if n == 0:
        raise ValueError("every example has constant activations: kurtosis is undefined")
    std = float(valid.std(unbiased=True)) if n > 1 else float("nan")
    out = {"kurtosis_mean": float(valid.mean()), "kurtosis_std": std, "kurtosis_sem": std / math.sqrt(n),
           "kurtosis_median": float(valid.median())}
    out.update({"excess_kurtosis_mean": out["kurtosis_mean"] - GAUSSIAN_KURTOSIS, "excess_kurtosis_std": std,
                "excess_kurtosis_sem": out["kurtosis_sem"],
                "excess_kurtosis_median": out["kurtosis_median"] - GAUSSIAN_KURTOSIS})
    out.update({"n_examples": n, "n_dims": int(torch.as_tensor(h).shape[1]), "n_constant": int(k.numel() - n)})
    return out


def activation_profile(h) -> pd.DataFrame:
    """One row per dimension: ``dim``, ``mean``, ``mean_abs`` (mean |activation| over examples),
    ``std``, ``ratio_to_median`` (mean_abs / median over dimensions of mean_abs) and ``rank``
    (0 = largest mean_abs); sorted by rank."""
    h = _as_tensor(h)
    mean_abs = h.abs().mean(dim=0)
    median = float(mean_abs.median())
    ratio = mean_abs / median if median > 0 else torch.full_like(mean_abs, float("inf"))
    order = torch.argsort(mean_abs, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    table = pd.DataFrame({"dim": np.arange(h.shape[1]), "mean": h.mean(dim=0).numpy(),
                          "mean_abs": mean_abs.numpy(), "std": h.std(dim=0).numpy() if h.shape[0] > 1 else np.nan,
                          "ratio_to_median": ratio.numpy(), "rank": rank.numpy()})
    return table.sort_values("rank").reset_index(drop=True)


def outlier_dimensions(h, ratio: float = OUTLIER_RATIO) -> np.ndarray:
    """Dimensions whose mean |activation| exceeds `ratio` × the median dimension's, largest first."""
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    profile = activation_profile(h)
    return profile.loc[profile["ratio_to_median"] > ratio, "dim"].to_numpy()


def importance_order(h) -> np.ndarray:
    """Every dimension, largest mean |activation| first (the outliers lead): the pruning order."""
    return activation_profile(h)["dim"].to_numpy()
