"""Zero-shot classification (class names × prompt templates) and supervised-head evaluation.

Image features are computed once per (model, dataset) and then scored by any number of heads:
the zero-shot head with a template ensemble, the bare-class-name ablation, or a trained
linear head.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.factory import normalize_images


@torch.inference_mode()
def zero_shot_weights(model, tokenizer, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(D, C) classifier: per class, the mean of its L2-normalised prompt embeddings,
    re-normalised (prompt ensembling, Radford et al. 2021)."""
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every template needs a '{{}}' placeholder for the class name, got {list(templates)}")
    model.eval()
    prompts = [t.format(name.replace("_", " ")) for name in class_names for t in templates]
    tokens = tokenizer(prompts).to(next(model.parameters()).device)
    embeddings = F.normalize(model.encode_text(tokens).float(), dim=-1)
    per_class = embeddings.view(len(class_names), len(templates), -1).mean(1)  # (C, D)
    return F.normalize(per_class, dim=-1).T.contiguous()


@torch.inference_mode()
def encode_images(model, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(N, D) image-tower outputs for uint8 images (N, 3, H, W), in batches."""
    model.eval()
    out = [model.encode_image(normalize_images(images[i : i + batch_size])).float()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def zero_shot_logits(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (N, C) between image features (N, D) and a zero-shot head (D, C)."""
    return F.normalize(features, dim=-1) @ weights


@torch.inference_mode()
def head_logits(model, features: torch.Tensor) -> torch.Tensor:
    """Logits (N, C) of a classifier's linear head on its image features."""
    return model.head(features)


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        raise ValueError("cannot compute accuracy on an empty dataset")
    return float((logits.argmax(1) == labels).float().mean())


def predictions(logits: torch.Tensor) -> np.ndarray:
    return logits.argmax(1).cpu().numpy()
