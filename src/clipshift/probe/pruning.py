"""Pruning experiment (Crabbé et al.): zero k dimensions of h before the classifier and measure
accuracy in distribution and under shift.

Two selections per k: ``largest`` — the k dimensions with the largest mean |activation| on the
in-distribution set (the outlier features first; see :func:`~.outliers.importance_order`) — and
``random`` — k dimensions drawn uniformly without replacement from all D, ``random_repeats``
times with a seeded generator (the control). The head is the model's own: a classifier's linear
head, or the zero-shot head for CLIP (:func:`~.activations.zero_shot_classifier`), which
normalises the pruned h. Only the pruned dimensions change: every other entry of h is left as is.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ._defaults import DEFAULT_KS
from ._threads import threads_for


def prune(h: torch.Tensor, dims) -> torch.Tensor:
    """A copy of `h` (N, D) with the columns `dims` set to 0."""
    out = torch.as_tensor(h).clone()
    dims = torch.from_numpy(np.array(dims, dtype=np.int64).reshape(-1))
    if dims.numel():
        if int(dims.min()) < 0 or int(dims.max()) >= out.shape[1]:
            raise ValueError(f"dimensions {dims.tolist()} out of range for D = {out.shape[1]}")
        out[:, dims] = 0
    return out


def top1(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float((logits.argmax(dim=1).cpu() == torch.as_tensor(targets).cpu()).double().mean())


def pruning_experiment(sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], head: Callable[[torch.Tensor], torch.Tensor],
                       order: Sequence[int], *, ks: Sequence[int] = DEFAULT_KS, random_repeats: int = 5, seed: int = 0,
                       scorers: Mapping[str, Callable[[torch.Tensor, torch.Tensor], float]] | None = None
                       ) -> pd.DataFrame:
    """Accuracy with k dimensions pruned, for every k in `ks` (plus k = 0) and every set.

    `sets`: {dataset: (h (N, D), targets (N,))}; `head`: h → logits; `order`: dimensions, most
    important first (``largest`` prunes ``order[:k]``); `scorers`: {dataset: (logits, targets) →
    accuracy} where top-1 of the argmax is not right (e.g. ImageNet-R's class subset).
    Returns a long table: ``selection`` (none | largest | random), ``k``, ``repeat``, ``dataset``,
    ``accuracy``, ``dims`` (the pruned dimensions, ';'-joined). k larger than D is skipped. The
    random draws for a given (k, repeat) are the same on every set."""
    if not sets:
        raise ValueError("no datasets to score")
    dims_d = {int(h.shape[1]) for h, _ in sets.values()}
    if len(dims_d) != 1:
        raise ValueError(f"every set must have the same feature dimension, got {sorted(dims_d)}")
    d = dims_d.pop()
    order = np.array(order, dtype=np.int64)
    if sorted(order.tolist()) != list(range(d)):
        raise ValueError(f"order must be a permutation of the {d} dimensions")
    scorers = dict(scorers or {})
    rng = np.random.default_rng(seed)
    plans = [("none", 0, 0, np.empty(0, dtype=np.int64))]
    for k in sorted({int(k) for k in ks if 0 < int(k) <= d}):
        plans.append(("largest", k, 0, order[:k]))
        for r in range(random_repeats):
            plans.append(("random", k, r, np.sort(rng.choice(d, size=k, replace=False))))
    names = list(sets)
    h_all = torch.cat([torch.as_tensor(sets[n][0]).float() for n in names])
    bounds = np.cumsum([0] + [len(sets[n][0]) for n in names])
    rows = []
    with torch.inference_mode():
        classes = int(head(h_all[:1]).shape[1])
    with torch.inference_mode(), threads_for(h_all.shape[0] * d * classes):
        for selection, k, repeat, dims in plans:
            keep = torch.ones(d)
            keep[torch.tensor(dims.tolist(), dtype=torch.long)] = 0
            logits = head(h_all * keep)  # one pass over every set; only the pruned columns change
            for i, name in enumerate(names):
                part, targets = logits[bounds[i]:bounds[i + 1]], sets[name][1]
                accuracy = scorers[name](part, targets) if name in scorers else top1(part, targets)
                rows.append({"selection": selection, "k": k, "repeat": repeat, "dataset": name,
                             "accuracy": float(accuracy), "dims": ";".join(map(str, dims.tolist()))})
    return pd.DataFrame(rows)


def summarize_pruning(table: pd.DataFrame, id_dataset: str, shift_datasets: Sequence[str]) -> pd.DataFrame:
    """Per (selection, k): ``id_accuracy``, ``shift_accuracy`` (mean over `shift_datasets`), each
    averaged over the random repeats, and their drops from k = 0."""
    table = table.copy()
    per = table.groupby(["selection", "k", "dataset"], as_index=False)["accuracy"].mean()
    wide = per.pivot_table(index=["selection", "k"], columns="dataset", values="accuracy").reset_index()
    shift_datasets = [s for s in shift_datasets if s in wide.columns]
    out = pd.DataFrame({"selection": wide["selection"], "k": wide["k"],
                        "id_accuracy": wide[id_dataset] if id_dataset in wide.columns else np.nan,
                        "shift_accuracy": wide[shift_datasets].mean(axis=1) if shift_datasets else np.nan})
    base = out[out["selection"] == "none"].iloc[0]
    out["id_drop"] = base["id_accuracy"] - out["id_accuracy"]
    out["shift_drop"] = base["shift_accuracy"] - out["shift_accuracy"]
    return out.sort_values(["k", "selection"]).reset_index(drop=True)
