"""Per-class accuracy under shift (as in CLIP's paper: one class across ImageNet and its shifts).

:func:`per_class_accuracy` scores logits exactly as :func:`clipshift.data.imagenet.score` does (only
the suite's ``class_indices`` compete; a prediction is correct when it is one of the target's
``target_classes``) and splits the top-1 by target class. The embedded world's exported sets are
opened as suites by :func:`clipshift.data.eval_sets.open_world_sets`, so ``clipshift eval --world``
scores them like ImageNet-family data.

Per-class table columns (:data:`PER_CLASS_COLUMNS`): ``model, dataset, class, top1, num_examples,
class_id``. ``class`` is the class's name in the model's label space (open_clip's short ImageNet
names; the world's class names), the same across ImageNet and its shifts; ObjectNet folders that map
to several ImageNet classes keep their folder name. ``class_id`` is the folder the images came from
(wnid, ImageNet-V2's class index, ObjectNet folder, world class).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from ..data.imagefolder import masked_topk
from ..data.imagenet import EvalSuite

PER_CLASS_COLUMNS = ["model", "dataset", "class", "top1", "num_examples", "class_id"]


def per_class_accuracy(logits: torch.Tensor, targets: torch.Tensor, suite: EvalSuite,
                       class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Top-1 of every target class present: columns ``class, top1, num_examples, class_id``, in target order.

    `logits`: (N, suite.num_classes); `targets`: (N,) target indices of `suite`; `class_names`: names of
    the label space (``class`` of a target with one class; else, and without names, its folder name)."""
    if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[1] != suite.num_classes:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"logits must be a (N, {suite.num_classes}) tensor, got {shape}")
    targets = torch.as_tensor(targets).long().cpu()
    if targets.shape != (logits.shape[0],):
        raise ValueError(f"targets must be (N,) = ({logits.shape[0]},) target indices, got {tuple(targets.shape)}")
    if class_names is not None and len(class_names) != suite.num_classes:
        raise ValueError(f"class_names: {len(class_names)} names for a {suite.num_classes}-class label space")
    subset = list(range(suite.num_classes)) if suite.class_indices is None else suite.class_indices
    top1 = masked_topk(logits.detach().float(), subset, 1)[:, 0].cpu()
    correct = torch.zeros(len(suite.target_classes), suite.num_classes, dtype=torch.bool)
    for t, classes in enumerate(suite.target_classes):
        correct[t, list(classes)] = True
    hits = pd.DataFrame({"target": targets.numpy(), "hit": correct[targets, top1].double().numpy()})
    table = hits.groupby("target", sort=True)["hit"].agg(top1="mean", num_examples="size").reset_index()

    def name(t: int) -> str:
        classes = suite.target_classes[t]
        return str(class_names[classes[0]]) if class_names is not None and len(classes) == 1 else suite.target_names[t]

    table.insert(0, "class", [name(int(t)) for t in table["target"]])
    table["class_id"] = [suite.target_names[int(t)] for t in table["target"]]
    return table.drop(columns="target")
