"""Representation similarity: linear CKA (Kornblith et al. 2019) and minibatch CKA (Nguyen et al. 2021).

- :func:`linear_cka`: on the whole set, from centred features X (N, D1), Y (N, D2),
  CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F). Invariant to orthogonal transforms and isotropic scaling of
  either representation (1 for Y = c·XQ), about 0 for independent ones (the biased estimator
  sits slightly above 0 on finite samples, roughly sqrt(D1·D2)/N).
- :func:`minibatch_cka` / :class:`MinibatchCKA`: for sets too large for one pass, the unbiased
  HSIC estimator of Song et al. (2012) on each minibatch's linear Gram matrices, averaged over
  minibatches, CKA = mean HSIC₁(K, L) / sqrt(mean HSIC₁(K, K) · mean HSIC₁(L, L)). Memory is
  O(batch²) per model; the estimate does not depend on the batch size in expectation.
- :func:`cka_matrix`: the symmetric matrix across models (full or minibatch).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch

from ._threads import threads_for


def _matrix(x) -> torch.Tensor:
    x = torch.as_tensor(x).double()
    if x.dim() != 2:
        raise ValueError(f"representations must be (N, D) matrices, got shape {tuple(x.shape)}")
    return x


def linear_cka(x, y) -> float:
    """Linear CKA between two representations of the same N examples (biased HSIC, whole set)."""
    x, y = _matrix(x), _matrix(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"both representations must cover the same examples, got {x.shape[0]} and {y.shape[0]}")
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if norm == 0:
        return float("nan")
    return float(cross / norm)


class _GramStats:
    """Zero-diagonal Gram matrix K̃ of one batch with the sums the unbiased HSIC needs."""

    def __init__(self, x: torch.Tensor):
        gram = x @ x.T
        gram.fill_diagonal_(0)
        self.gram = gram
        self.rows = gram.sum(dim=1)
        self.total = float(self.rows.sum())


def _hsic_unbiased(a: _GramStats, b: _GramStats) -> float:
    n = a.gram.shape[0]
    trace = float((a.gram * b.gram).sum())
    value = trace + a.total * b.total / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a.rows @ b.rows)
    return value / (n * (n - 3))


def hsic_unbiased(x, y) -> float:
    """Unbiased HSIC estimator (Song et al. 2012) with linear kernels, for N >= 4 examples."""
    x, y = _matrix(x), _matrix(y)
    if x.shape[0] != y.shape[0] or x.shape[0] < 4:
        raise ValueError(f"need the same N >= 4 examples in both, got {x.shape[0]} and {y.shape[0]}")
    return _hsic_unbiased(_GramStats(x), _GramStats(y))


class MinibatchCKA:
    """Accumulates minibatch CKA between every pair of named representations.

        acc = MinibatchCKA(["a", "b"])
        for batch in batches:            # the same examples for every model, in batches of >= 4
            acc.update({"a": xa, "b": xb})
        acc.matrix()                     # DataFrame, 1 on the diagonal
    """

    def __init__(self, names):
        self.names = list(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate names in {self.names}")
        k = len(self.names)
        self.sums = np.zeros((k, k))
        self.batches = 0

    def update(self, batch: Mapping[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in batch]
        if missing:
            raise ValueError(f"batch lacks representations for {missing}")
        stats = [_GramStats(_matrix(batch[n])) for n in self.names]
        sizes = {s.gram.shape[0] for s in stats}
        if len(sizes) != 1:
            raise ValueError(f"every representation of a batch must cover the same examples, got sizes {sorted(sizes)}")
        if sizes.pop() < 4:
            raise ValueError("the unbiased HSIC estimator needs batches of at least 4 examples")
        for i in range(len(stats)):
            for j in range(i, len(stats)):
                value = _hsic_unbiased(stats[i], stats[j])
                self.sums[i, j] += value
                if i != j:
                    self.sums[j, i] += value
        self.batches += 1

    def matrix(self) -> pd.DataFrame:
        if self.batches == 0:
            raise ValueError("no batches accumulated")
        mean = self.sums / self.batches
        diag = np.sqrt(np.clip(np.diag(mean), 0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            cka = mean / np.outer(diag, diag)
        return pd.DataFrame(cka, index=self.names, columns=self.names)


def _batches(n: int, batch_size: int, seed: int | None) -> list[np.ndarray]:
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    parts = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(parts) > 1 and len(parts[-1]) < 4:  # a last batch too small for the estimator joins the previous one
        parts[-2] = np.concatenate([parts[-2], parts.pop()])
    return parts


def minibatch_cka(x, y, batch_size: int = 256, seed: int | None = 0) -> float:
    """Minibatch CKA of two representations of the same examples (batches drawn in a seeded order)."""
    return float(cka_matrix({"x": x, "y": y}, batch_size=batch_size, seed=seed).iloc[0, 1])


def cka_matrix(representations: Mapping[str, torch.Tensor], *, batch_size: int | None = None,
               seed: int | None = 0) -> pd.DataFrame:
    """Symmetric CKA matrix across models, each (N, D_model) over the same N examples: linear CKA
    on the whole set when `batch_size` is None, else minibatch CKA with batches of `batch_size`
    (examples shuffled with `seed`; None keeps their order)."""
    names = list(representations)
    if not names:
        raise ValueError("no representations given")
    sizes = {int(torch.as_tensor(v).shape[0]) for v in representations.values()}
    if len(sizes) != 1:
        raise ValueError(f"every representation must cover the same examples, got sizes {sorted(sizes)}")
    n = sizes.pop()
    width = max(int(torch.as_tensor(v).shape[1]) for v in representations.values())
    if batch_size is None:
        k = len(names)
        out = np.eye(k)
        with threads_for(n * width * width):
            for i in range(k):
                for j in range(i + 1, k):
                    out[i, j] = out[j, i] = linear_cka(representations[names[i]], representations[names[j]])
        return pd.DataFrame(out, index=names, columns=names)
    if batch_size < 4:
        raise ValueError(f"batch_size must be at least 4, got {batch_size}")
    acc = MinibatchCKA(names)
    with threads_for(batch_size * batch_size * width):
        for index in _batches(n, batch_size, seed):
            idx = torch.as_tensor(index)
            acc.update({name: torch.as_tensor(rep)[idx] for name, rep in representations.items()})
    return acc.matrix()
