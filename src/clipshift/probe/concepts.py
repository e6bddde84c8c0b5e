"""Concepts a representation encodes (Crabbé et al.): one linear probe per concept on h.

A **concept probe** is an L2-regularised logistic regression on standardised h (per-dimension
mean and standard deviation of the training images), fitted in torch with L-BFGS, every concept at
once (the losses are separable, so the joint optimum is each concept's own optimum), with
positives and negatives weighted equally. It is fitted on a seeded random half of the images and
scored on the other half by the **AUC** (ranks, ties averaged: the Mann–Whitney statistic).

- A concept is **evaluated** when both halves hold at least `min_examples` positives and
  `min_examples` negatives among the images annotated for it.
- A concept is **encoded** when its held-out AUC is at least `threshold` (default
  :data:`AUC_THRESHOLD` = 0.8, "excellent discrimination" in the usual reading of AUC).
- A concept is **unique** to a model, among the models compared, when it is encoded by that model
  and by none of the others (:func:`count_concepts`). The paper counts the concepts the
  representation encodes on Broden; with one common threshold this is the share of them that no
  compared representation also encodes.

Concept labels are a (N, K) table of 1 (present), 0 (absent) and NaN (not annotated: left out of
that concept's fit and score). Sources: :func:`world_concepts` (the embedded world's scene
attributes) and :func:`load_broden` (the Broden dataset as distributed).
"""

from __future__ import annotations

import csv
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from ._defaults import AUC_THRESHOLD, DEFAULT_L2, MIN_EXAMPLES
from ._threads import threads_for

WORLD_CONCEPT_COLUMNS = ("style", "colour", "fill", "background")


# --- AUC and the logistic probe --------------------------------------------------------------------------------

def auc_score(scores, labels) -> float:
    """Area under the ROC curve from ranks (ties get their average rank); NaN without both classes."""
    scores = np.asarray(scores, dtype=float).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores for {labels.size} labels")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class LogisticProbe:
    """Linear probes on standardised features: logits = ((x − mean) / std) @ weight + bias."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # (D, K)
    bias: torch.Tensor  # (K,)

    def decision_function(self, x) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=self.weight.dtype)
        return ((x - self.mean) / self.std) @ self.weight + self.bias


def fit_logistic(x, y, *, mask=None, l2: float = DEFAULT_L2, max_iter: int = 200, balanced: bool = True,
                 dtype: torch.dtype = torch.float32) -> LogisticProbe:
    """Fit K logistic probes at once: `x` (N, D) features, `y` (N, K) 0/1 labels (or (N,) for one),
    `mask` (N, K) True where a label counts. Loss per probe: weighted mean binary cross-entropy
    (positives and negatives weighing half each when `balanced`) + `l2`/2 · ‖w‖²; L-BFGS with a
    strong-Wolfe line search."""
    x = torch.as_tensor(x, dtype=dtype)
    y = torch.as_tensor(y, dtype=dtype)
    if y.dim() == 1:
        y = y[:, None]
    if x.dim() != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"x must be (N, D) and y (N, K) with the same N, got {tuple(x.shape)} and {tuple(y.shape)}")
    mask = torch.ones_like(y, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    y = torch.where(mask, y, torch.zeros_like(y))
    pos = (y > 0.5) & mask
    neg = (y <= 0.5) & mask
    if balanced:
        n_pos = pos.sum(0).clamp(min=1).to(dtype)
        n_neg = neg.sum(0).clamp(min=1).to(dtype)
        w = pos.to(dtype) * (0.5 / n_pos) + neg.to(dtype) * (0.5 / n_neg)
    else:
        w = mask.to(dtype) / mask.sum(0).clamp(min=1).to(dtype)
    mean = x.mean(0)
    std = x.std(0) if x.shape[0] > 1 else torch.ones_like(mean)
    std = torch.where(std > 0, std, torch.ones_like(std))
    z = (x - mean) / std
    weight = torch.zeros(x.shape[1], y.shape[1], dtype=dtype)
    bias = torch.zeros(y.shape[1], dtype=dtype)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-6, tolerance_change=1e-9, history_size=20)

    def closure():  # loss and its analytic gradient (no autograd graph: the fit is many tiny steps)
        logits = z @ weight + bias
        loss = (w * (F.softplus(logits) - y * logits)).sum() + 0.5 * l2 * weight.pow(2).sum()
        residual = w * (torch.sigmoid(logits) - y)
        weight.grad = z.T @ residual + l2 * weight
        bias.grad = residual.sum(0)
        return loss

    with threads_for(z.shape[0] * z.shape[1] * y.shape[1]):
        optimizer.step(closure)
    return LogisticProbe(mean, std, weight, bias)


# --- probing every concept ---------------------------------------------------------------------------------------

def split_mask(n: int, test_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """(n,) bool, True for the held-out images: a seeded random `test_fraction` of them."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    test = np.zeros(n, dtype=bool)
    test[order[: int(round(n * test_fraction))]] = True
    return test


def concept_probes(h, labels: pd.DataFrame, *, test_fraction: float = 0.5, seed: int = 0, l2: float = DEFAULT_L2,
                   threshold: float = AUC_THRESHOLD, min_examples: int = MIN_EXAMPLES, max_iter: int = 200
                   ) -> pd.DataFrame:
    """One probe per column of `labels` (N rows aligned with `h` (N, D)): a row per concept with
    ``auc`` (held out), ``n_train_pos``, ``n_train_neg``, ``n_test_pos``, ``n_test_neg``,
    ``evaluated`` and ``encoded`` (see the module doc). The split depends only on N and `seed`, so
    models probed on the same images share it."""
    h = torch.as_tensor(h).float()
    if not isinstance(labels, pd.DataFrame):
        raise ValueError("labels must be a DataFrame with one column per concept")
    if len(labels) != h.shape[0]:
        raise ValueError(f"{len(labels)} label rows for {h.shape[0]} representations")
    values = labels.to_numpy(dtype=float)
    known = ~np.isnan(values)
    positive = known & (values > 0.5)
    test = split_mask(len(labels), test_fraction, seed)
    train = ~test
    counts = {"n_train_pos": (positive & train[:, None]).sum(0), "n_train_neg": (known & ~positive & train[:, None]).sum(0),
              "n_test_pos": (positive & test[:, None]).sum(0), "n_test_neg": (known & ~positive & test[:, None]).sum(0)}
    evaluated = np.min(np.stack(list(counts.values())), axis=0) >= min_examples
    auc = np.full(values.shape[1], np.nan)
    columns = np.flatnonzero(evaluated)
    if len(columns):
        tr = torch.as_tensor(train)
        probe = fit_logistic(h[tr], torch.as_tensor(positive[train][:, columns], dtype=torch.float32),
                             mask=torch.as_tensor(known[train][:, columns]), l2=l2, max_iter=max_iter)
        scores = probe.decision_function(h[torch.as_tensor(test)]).numpy()
        for j, c in enumerate(columns):
            rows = known[test, c]
            auc[c] = auc_score(scores[rows, j], positive[test, c][rows])
    out = pd.DataFrame({"concept": list(labels.columns), "auc": auc, **counts, "evaluated": evaluated})
    out["encoded"] = out["evaluated"] & (out["auc"] >= threshold)
    return out


def count_concepts(probes: Mapping[str, pd.DataFrame], threshold: float | None = None) -> pd.DataFrame:
    """Per model: ``evaluated``, ``encoded`` and ``unique`` concept counts and ``mean_auc`` over the
    evaluated concepts; `threshold` re-decides ``encoded`` from the AUCs (default: as probed).
    Unique: encoded by this model and by none of the other models in `probes`."""
    encoded = {}
    for model, table in probes.items():
        table = table.set_index("concept")
        enc = table["encoded"] if threshold is None else table["evaluated"] & (table["auc"] >= threshold)
        encoded[model] = enc.astype(bool)
    frame = pd.DataFrame(encoded).fillna(False).astype(bool)
    rows = []
    for model, table in probes.items():
        others = frame.drop(columns=[model]).any(axis=1) if frame.shape[1] > 1 else pd.Series(False, index=frame.index)
        mine = frame[model]
        evaluated = table[table["evaluated"]]
        rows.append({"model": model, "evaluated": int(table["evaluated"].sum()), "encoded": int(mine.sum()),
                     "unique": int((mine & ~others).sum()),
                     "mean_auc": float(evaluated["auc"].mean()) if len(evaluated) else float("nan")})
    return pd.DataFrame(rows)


# --- concept sources ---------------------------------------------------------------------------------------------

def world_concepts(attributes: pd.DataFrame, columns: Sequence[str] = WORLD_CONCEPT_COLUMNS,
                   factors: bool = True, dedupe: bool = True) -> pd.DataFrame:
    """0/1 concept table from the embedded world's per-image attributes (``<split>.attributes.csv``):
    one concept per value of each of `columns` (``style=sketch``, ``colour=red``, ``fill=stripes``,
    ``background=grass``, ...) and, with `factors`, one per object-net-like factor
    (``factor=occluder``, ...). The object class is not a concept here: every model is trained on it.
    With `dedupe`, concepts with the same labels on these images (the world ties some fills and
    backgrounds to a style) are one concept, named by joining their names with ``|``."""
    missing = [c for c in columns if c not in attributes.columns]
    if missing:
        raise ValueError(f"attributes lack the columns {missing}; present: {list(attributes.columns)}")
    out = {}
    for column in columns:
        values = attributes[column].astype(str)
        for value in sorted(values.unique()):
            out[f"{column}={value}"] = (values == value).astype(np.float32).to_numpy()
    if factors and "factors" in attributes.columns:
        lists = attributes["factors"].fillna("").astype(str).map(lambda s: {f for f in s.split("|") if f})
        for factor in sorted(set().union(*lists)) if len(lists) else []:
            out[f"factor={factor}"] = lists.map(lambda s, f=factor: f in s).astype(np.float32).to_numpy()
    if dedupe:  # e.g. style=cartoon, fill=flat and background=flat go together: one concept, not three
        merged: dict[bytes, list[str]] = {}
        for name, values in out.items():
            merged.setdefault(values.tobytes(), []).append(name)
        out = {"|".join(names): out[names[0]] for names in merged.values()}
    return pd.DataFrame(out, index=attributes.index)


@dataclass
class ConceptDataset:
    """Images with concept labels: ``paths`` (N,), ``labels`` (N, K) 1 / 0 / NaN, ``concepts`` one
    row per column of ``labels`` (``concept``, ``category``, ``name``, ``number``)."""

    root: Path
    paths: list[str]
    labels: pd.DataFrame
    concepts: pd.DataFrame

    def __len__(self) -> int:
        return len(self.paths)

    def suite(self, name: str = "broden"):
        """The images as an :class:`~clipshift.data.imagenet.EvalSuite` (one dummy target), to encode
        with :func:`~clipshift.probe.activations.collect_activations` and its cache."""
        from ..data.imagenet import EvalSuite

        return EvalSuite(name=name, root=self.root, samples=[(p, 0) for p in self.paths], target_classes=[(0,)],
                         target_names=["concepts"], class_indices=None, num_classes=1)


BRODEN_FIXED_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")


def _broden_dir(root: Path) -> Path:
    if (root / "index.csv").is_file():
        return root
    found = sorted(p.parent for p in root.glob("*/index.csv"))
    if not found:
        raise FileNotFoundError(f"{root}: no Broden index.csv here or one level down (expected e.g. "
                                f"{root}/broden1_224/index.csv with label.csv and images/)")
    if len(found) > 1:
        raise ValueError(f"{root}: several Broden folders {[p.name for p in found]}; pass one of them")
    return found[0]


def _read_csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"Broden file missing: {path}")
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _segmentation_labels(path: Path, min_pixels: int) -> set[int]:
    """Label numbers present (>= `min_pixels` pixels) in a Broden segmentation PNG: number = R + 256·G."""
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"Broden segmentation image missing: {path}")
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
    numbers = rgb[..., 0] + 256 * rgb[..., 1]
    counts = np.bincount(numbers.reshape(-1))
    return {int(n) for n in np.flatnonzero(counts >= min_pixels) if n != 0}


def load_broden(root, *, categories: Sequence[str] | None = None, split: str | None = None,
                max_images: int | None = None, seed: int = 0, min_pixels: int = 1, min_images: int = 1,
                workers: int = 4) -> ConceptDataset:
    """Concept labels of the Broden dataset (Bau et al. 2017) as distributed (``broden1_224`` or
    ``broden1_227``; `root` is that folder or the one holding it).

    Reads ``index.csv`` (columns ``image,split,ih,iw,sh,sw`` then one per category: ``color``,
    ``object``, ``part``, ``material``, ``scene``, ``texture``; each cell lists ``;``-separated
    entries, integers being image-level label numbers and file names segmentation PNGs under
    ``images/`` whose pixels hold label number R + 256·G, 0 = unlabelled) and ``label.csv``
    (``number,name,...``). A concept is a (category, label) pair, named ``category/name``; it is
    present in an image when the image-level list names it or its segmentation has at least
    `min_pixels` pixels of it, absent when the image has other annotations in that category, and
    unknown (NaN) when the image has none in that category. `split` keeps one split (``train`` /
    ``val``), `max_images` a seeded random subset (before any PNG is read), `min_images` drops
    concepts present in fewer images."""
    base = _broden_dir(Path(root))
    rows, all_categories = _broden_index(base, categories)
    names = _broden_label_names(base)
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
        if not rows:
            raise ValueError(f"no images of split {split!r} in {base / 'index.csv'}")
    rows = [r for r in rows if any((r.get(c) or "").strip() for c in all_categories)]
    if max_images is not None and len(rows) > max_images:
        keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:max_images])
        rows = [rows[i] for i in keep]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        annotations = list(pool.map(lambda row: _broden_annotation(row, base, all_categories, min_pixels), rows))
    pairs = sorted({(c, n) for a in annotations for c, s in a.items() if s for n in s})
    unknown_numbers = sorted({n for _, n in pairs if n not in names})
    if unknown_numbers:
        raise ValueError(f"{base}: label numbers {unknown_numbers[:5]} are not in label.csv")
    concept_names = [f"{c}/{names[n]}" for c, n in pairs]
    table = pd.DataFrame(_concept_matrix(annotations, pairs, all_categories), columns=concept_names)
    keep = (table == 1).sum(axis=0) >= min_images
    table = table.loc[:, keep]
    concepts = pd.DataFrame({"concept": concept_names, "category": [c for c, _ in pairs],
                             "name": [names[n] for _, n in pairs], "number": [n for _, n in pairs]})[keep.to_numpy()]
    paths = [str(base / "images" / r["image"]) for r in rows]
    return ConceptDataset(base, paths, table, concepts.reset_index(drop=True))


def _broden_index(base: Path, categories: Sequence[str] | None) -> tuple[list[dict], list[str]]:
    """The rows of ``index.csv`` and its categories (those asked for, in the file's order)."""
    rows = _read_csv_rows(base / "index.csv")
    if not rows:
        raise ValueError(f"{base / 'index.csv'} lists no images")
    header = list(rows[0].keys())
    missing = [c for c in ("image",) if c not in header]
    if missing:
        raise ValueError(f"{base / 'index.csv'}: missing columns {missing}; found {header}")
    all_categories = [c for c in header if c not in BRODEN_FIXED_COLUMNS]
    if categories is not None:
        unknown = sorted(set(categories) - set(all_categories))
        if unknown:
            raise ValueError(f"unknown Broden categories {unknown}; index.csv has {all_categories}")
        all_categories = [c for c in all_categories if c in set(categories)]
    return rows, all_categories


def _broden_label_names(base: Path) -> dict[int, str]:
    """Label number → name, from ``label.csv``."""
    names = {}
    for label in _read_csv_rows(base / "label.csv"):
        if "number" not in label or "name" not in label:
            raise ValueError(f"{base / 'label.csv'}: expected columns number,name,...; found {list(label)}")
        names[int(label["number"])] = label["name"]
    return names


def _broden_annotation(row: dict, base: Path, categories: list[str], min_pixels: int) -> dict[str, set[int] | None]:
    """Per category, the label numbers present in the image of `row` (image-level numbers and those
    of its segmentation PNGs), or None when the image has no annotation in that category."""
    out = {}
    for category in categories:
        entries = [e for e in (row.get(category) or "").split(";") if e.strip()]
        if not entries:
            out[category] = None
            continue
        present: set[int] = set()
        for entry in entries:
            entry = entry.strip()
            if re.fullmatch(r"\d+", entry):
                present.add(int(entry))
            else:
                present |= _segmentation_labels(base / "images" / entry, min_pixels)
        out[category] = present
    return out


def _concept_matrix(annotations: list[dict], pairs: list[tuple[str, int]], categories: list[str]) -> np.ndarray:
    """(images, concepts) float32: 1 present, 0 absent (annotated in the category), NaN unknown."""
    labels = np.full((len(annotations), len(pairs)), np.nan, dtype=np.float32)
    column = {pair: j for j, pair in enumerate(pairs)}
    per_category = {c: [j for j, (cat, _) in enumerate(pairs) if cat == c] for c in categories}
    for i, annotation in enumerate(annotations):
        for category, present in annotation.items():
            if present is None:
                continue
            labels[i, per_category[category]] = 0.0
            for n in present:
                labels[i, column[(category, n)]] = 1.0
    return labels
