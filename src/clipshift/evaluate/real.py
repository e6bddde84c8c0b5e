"""``clipshift eval``: real models (open_clip, timm, this package's checkpoints) on ImageNet and its
natural shifts, through the one loop (:mod:`.loop`) and the head registry (:mod:`.heads`).

One call per model: :func:`evaluate_model` → rows of the long results table
(``model,dataset,metric,value,num_examples,images_skipped,...``) that ``clipshift er`` reads.
CLIP models are scored by a zero-shot head (class names × templates), classifiers by their own head.
Both caches (image features, zero-shot heads) live under `cache_dir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..io import atomic_write_text
from ..data.imagenet import EvalSuite
from ..models.interface import EvalModel
from .heads import HeadSpec, ZeroShotHead, build_head, imagenet_class_names, resolve_templates, zero_shot_head
from .loop import METRICS, Features, encode, evaluate

__all__ = ["evaluate_model", "append_results", "encode_suite", "zero_shot_head", "logits_for", "Features",
           "imagenet_class_names", "resolve_templates", "METRICS"]


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


def evaluate_model(model: EvalModel, suites: Sequence[EvalSuite], *, templates: Sequence[str] | None = None,
                   class_names: Sequence[str] | None = None, cache_dir=None, batch_size: int = 256,
                   workers: int = 4, device: torch.device | None = None, strict: bool = False, amp: bool = True,
                   progress: bool = True, extra: dict | None = None, per_class: list | None = None) -> list[dict]:
    """Rows of the long results table for `model` on every suite: top1, top5 and mean per-class
    recall, with ``num_examples`` (images scored) and ``images_skipped`` (undecodable).

    `per_class`: a list that receives the per-class rows (``per_class.PER_CLASS_COLUMNS``) of every
    suite, scored as top1 is; None: not computed."""
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
    cells = [] if per_class is not None else None
    scores = evaluate(model, {s.name: s for s in suites}, {"head": head}, cache_dir=cache_dir, batch_size=batch_size,
                      workers=workers, device=device, strict=strict, amp=amp, progress=progress, per_class=cells,
                      class_names=names)
    if per_class is not None:
        per_class += [{"model": model.name, **{k: v for k, v in row.items() if k != "head"}} for row in cells]
    return [{"model": model.name, "dataset": s["dataset"], "metric": metric, "value": s[metric],
             "num_examples": s["num_examples"], "images_skipped": s["images_skipped"], "kind": model.kind,
             "templates": template_tag, **model.metadata, **(extra or {})} for s in scores for metric in METRICS]


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
