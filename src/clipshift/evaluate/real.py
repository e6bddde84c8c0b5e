"""``clipshift eval``: real models (open_clip, timm, this package's checkpoints) on ImageNet and its
natural shifts, through the one loop (:mod:`.loop`) and the head registry (:mod:`.heads`).

One call per model: :func:`evaluate_model` → rows of the long results table
(``model,dataset,metric,value,num_examples,images_skipped,...,protocol``) that ``clipshift er`` reads,
and, when asked, the per-image predictions (:mod:`.predictions`).
CLIP models are scored by a zero-shot head (class names × templates), classifiers by their own head.
Both caches (image features, zero-shot heads) live under `cache_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch

from ..io import atomic_write_text
from ..data.imagenet import EvalSuite
from ..models.interface import EvalModel
from .heads import HeadSpec, ZeroShotHead, build_head, imagenet_class_names, resolve_templates, zero_shot_head
from .loop import METRICS, Features, encode, evaluate

__all__ = ["evaluate_model", "model_scoring", "Scoring", "append_results", "encode_suite", "zero_shot_head", "logits_for", "Features",
           "imagenet_class_names", "resolve_templates", "METRICS", "CLASS_SPACES", "with_class_space"]

CLASS_SPACES = ("dataset", "full")  # clipshift eval --class-space: each set's own classes, or every class


def with_class_space(suites: Sequence[EvalSuite], space: str = "dataset") -> dict[str, EvalSuite]:
    """The suites by the name their rows get. ``dataset``: as distributed (ImageNet-R/-A score their 200
    classes, ObjectNet its 125 mapped ones). ``full``: every class of the label space competes, and a suite
    that had a mask is named ``<name>-<classes>`` (``imagenet-r-1000``), so both conventions can stand
    side by side in one results table (its images and feature cache are the masked suite's)."""
    if space not in CLASS_SPACES:
        raise ValueError(f"--class-space must be one of {list(CLASS_SPACES)}, got {space!r}")
    if space == "dataset":
        return {s.name: s for s in suites}
    return {(s.name if s.class_indices is None else f"{s.name}-{s.num_classes}"): replace(s, class_indices=None)
            for s in suites}


def encode_suite(model: EvalModel, suite: EvalSuite, *, cache_dir=None, batch_size: int = 256, workers: int = 4,
                 device: torch.device | None = None, strict: bool = False, amp: bool = True,
                 progress: bool = True) -> Features:
    """Image features of every decodable image of `suite` (see :func:`.loop.encode`)."""
    return encode(model, suite, name=suite.name, cache_dir=cache_dir, batch_size=batch_size, workers=workers,
                  device=device, strict=strict, amp=amp, progress=progress)


def logits_for(model: EvalModel, features: Features, head: torch.Tensor | None) -> torch.Tensor:
    """(N, C) scores: cosine similarity to a zero-shot head (D, C) (CLIP) or the model's own head."""
    if model.kind == "clip":
        return ZeroShotHead(head)(features.features)
    return build_head("linear", model)(features.features)


def _check_classifier(model: EvalModel, suites: Sequence[EvalSuite]) -> None:
    n_out = len(model.class_names) if model.class_names else None
    for suite in suites:
        if n_out is not None and n_out != suite.num_classes:
            raise ValueError(f"{model.name} classifies {n_out} classes; {suite.name} needs a "
                             f"{suite.num_classes}-way ImageNet classifier")


@dataclass
class Scoring:
    """How a model's images are scored: its head (zero-shot or its own), the label space's class names
    (for per-class rows, predictions and the protocol stamp) and the ``templates`` column."""

    head: Callable
    class_names: list[str] | None
    template_tag: str | None = None


def model_scoring(model: EvalModel, suites: Sequence[EvalSuite], *, templates: Sequence[str] | None = None,
                  class_names: Sequence[str] | None = None, cache_dir=None, device: torch.device | None = None,
                  progress: bool = True) -> Scoring:
    """`model`'s :class:`Scoring` on `suites`: a CLIP model's zero-shot head from `class_names` (default
    ImageNet's) × `templates` (default the 80 OpenAI ones, cached under `cache_dir`), a classifier's own
    head (checked against every suite's number of classes)."""
    template_tag = None
    if model.kind == "clip":
        templates = list(templates) if templates is not None else resolve_templates("openai")
        class_names = list(class_names) if class_names is not None else imagenet_class_names()
        head = build_head(HeadSpec("zeroshot", templates=templates), model, class_names=class_names,
                          cache_dir=cache_dir, device=device, progress=progress)
        template_tag = f"{len(templates)} templates"
    elif model.kind == "classifier":
        _check_classifier(model, suites)
        head = build_head("linear", model)
    else:
        raise ValueError(f"{model.name} is a {model.kind} model: it has neither a text tower nor a head to score "
                         "classes with (fine-tune it or fit a linear probe)")
    names = class_names if class_names is not None else model.class_names
    if names is None and all(s.num_classes == 1000 for s in suites):
        names = imagenet_class_names()
    return Scoring(head, list(names) if names is not None else None, template_tag)


def evaluate_model(model: EvalModel, suites: Sequence[EvalSuite] | Mapping[str, EvalSuite], *,
                   templates: Sequence[str] | None = None,
                   class_names: Sequence[str] | None = None, cache_dir=None, batch_size: int = 256,
                   workers: int = 4, device: torch.device | None = None, strict: bool = False, amp: bool = True,
                   progress: bool = True, extra: dict | None = None, per_class: list | None = None,
                   predictions: list | None = None, keep_logits: bool = False, scoring: Scoring | None = None,
                   features: Mapping[str, Features] | None = None) -> list[dict]:
    """Rows of the long results table for `model` on every suite (a list, or the suites by the dataset
    name their rows get, as :func:`with_class_space` gives them): top1, top5 and mean per-class
    recall, with ``num_examples`` (images scored), ``images_skipped`` (undecodable) and ``protocol``
    (how it was scored, :mod:`.protocol`).

    `per_class`: a list that receives the per-class rows (``per_class.PER_CLASS_COLUMNS``) of every
    suite, scored as top1 is; None: not computed. `predictions`: a list that receives one record per
    suite for :func:`.predictions.write_predictions` (`keep_logits`: with every scored class's score).
    `scoring`: the model's :func:`model_scoring`, when made already; `features`: a suite's features
    already encoded (by dataset name), used instead of encoding it."""
    datasets = dict(suites) if isinstance(suites, Mapping) else {s.name: s for s in suites}
    suites = list(datasets.values())
    scoring = scoring or model_scoring(model, suites, templates=templates, class_names=class_names,
                                       cache_dir=cache_dir, device=device, progress=progress)
    cells = [] if per_class is not None else None
    scores = evaluate(model, datasets, {"head": scoring.head}, cache_dir=cache_dir, batch_size=batch_size,
                      workers=workers, device=device, strict=strict, amp=amp, progress=progress, per_class=cells,
                      class_names=scoring.class_names, predictions=predictions, keep_logits=keep_logits,
                      features=features)
    if per_class is not None:
        per_class += [{"model": model.name, **{k: v for k, v in row.items() if k != "head"}} for row in cells]
    return [{"model": model.name, "dataset": s["dataset"], "metric": metric, "value": s[metric],
             "num_examples": s["num_examples"], "images_skipped": s["images_skipped"], "kind": model.kind,
             "templates": scoring.template_tag, **model.metadata, **(extra or {}), "protocol": s["protocol"]}
            for s in scores for metric in METRICS]


def append_results(rows: list[dict], path, keys: Sequence[str] = ("model", "dataset", "metric")) -> pd.DataFrame:
    """Add `rows` to the long results table at `path` (created if missing); a row with the same
    `keys` (default model, dataset, metric) already there is replaced. Written atomically; returns
    the whole table."""
    path = Path(path)
    new = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path)
        seen = set(zip(*(new[k].astype(str) for k in keys)))  # as text: a class id "7" reads back as 7
        old = old[[k not in seen for k in zip(*(old[k].astype(str) for k in keys))]]
        new = pd.concat([old, new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, new.to_csv(index=False))
    return new
