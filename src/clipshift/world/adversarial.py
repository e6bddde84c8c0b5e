"""The ``adversarial`` set, made the way ImageNet-A was: draw hard candidates from a pool and
keep those that a reference model trained on narrow data gets wrong."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from .distributions import get_distribution
from .generate import WorldSplit, generate_split
from .shapes import CLASS_NAMES

Predictor = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, 3) images → (N,) class indices


def filter_adversarial(
    predict: Predictor,
    n: int,
    *,
    seed: int = 0,
    size: int = 32,
    chunk: int = 2000,
    max_pool: int = 40000,
    progress: bool = True,
) -> tuple[WorldSplit, dict]:
    """Keep up to ``n // num_classes`` misclassified pool images per class.

    Returns the split (named ``adversarial``) and a summary: pool images drawn, the reference
    model's accuracy on the pool, and the number kept. Stops early when every class is full;
    if `max_pool` is reached first the set is smaller than asked, which the summary says.
    """
    per_class = max(1, n // len(CLASS_NAMES))
    counts = np.zeros(len(CLASS_NAMES), dtype=int)
    pool = get_distribution("adversarial_pool")
    drawn, correct, parts = 0, 0, []
    while drawn < max_pool and counts.min() < per_class:
        batch = generate_split(pool, min(chunk, max_pool - drawn), split="adversarial_pool", seed=seed,
                               size=size, start=drawn, progress=progress)
        wrong = predict(batch.images) != batch.labels
        correct += int((~wrong).sum())
        index = []
        for i in np.flatnonzero(wrong):
            label = batch.labels[i]
            if counts[label] < per_class:
                counts[label] += 1
                index.append(i)
        parts.append(batch.subset(np.asarray(index, dtype=int)))
        drawn += len(batch)
    split = _concat(parts, "adversarial")
    summary = {"pool_drawn": drawn, "reference_pool_accuracy": correct / max(drawn, 1),
               "kept": len(split), "requested": per_class * len(CLASS_NAMES)}
    return split, summary


def _concat(parts: list[WorldSplit], name: str) -> WorldSplit:
    return WorldSplit(
        name,
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        [c for p in parts for c in p.captions],
        pd.concat([p.attributes for p in parts], ignore_index=True),
    )
