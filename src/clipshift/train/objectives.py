"""Training objectives, registered by name: each turns a batch into a scalar loss.

- ``contrastive``: symmetric InfoNCE between image and caption embeddings (open_clip's
  ``ClipLoss``), with the learnable temperature clamped at 100 as in CLIP.
- ``supervised``: cross-entropy on class labels (true or text-matched), optional label
  smoothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss


class Contrastive:
    drop_last = True  # every step sees a full batch of negatives

    def __init__(self, config):
        self.clip_loss = ClipLoss()

    def check(self, model, data) -> None:
        if data.tokens is None:
            raise ValueError("objective 'contrastive' needs captions (tokens), but the data has none")
        if not hasattr(model, "encode_text"):
            raise ValueError(f"objective 'contrastive' needs a CLIP model, got {type(model).__name__}")

    def loss(self, model, batch) -> torch.Tensor:
        out = model(batch["images"], batch["tokens"])
        return self.clip_loss(out["image_features"], out["text_features"], out["logit_scale"])

    def after_step(self, model) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))


class Supervised:
    drop_last = False

    def __init__(self, config):
        self.label_smoothing = config.label_smoothing

    def check(self, model, data) -> None:
        if data.labels is None:
            raise ValueError("objective 'supervised' needs labels, but the data has none")
        if (data.labels < 0).any():
            raise ValueError("objective 'supervised' got unlabelled examples (label -1); drop them first")
        if not hasattr(model, "head"):
            raise ValueError(f"objective 'supervised' needs a classifier, got {type(model).__name__}")

    def loss(self, model, batch) -> torch.Tensor:
        return F.cross_entropy(model(batch["images"]), batch["labels"], label_smoothing=self.label_smoothing)

    def after_step(self, model) -> None:
        pass


OBJECTIVES = {"contrastive": Contrastive, "supervised": Supervised}


def get_objective(name: str):
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]
