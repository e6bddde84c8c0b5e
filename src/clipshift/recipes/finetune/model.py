"""The models of ``clipshift finetune`` before training: the CLIP model it starts from, the classifier
initialised from its zero-shot head (:func:`init_from_zero_shot`) and the linear probe on the frozen
tower (:func:`training_features`, :func:`fit_probe_head`).

The zero-shot head comes from the head registry (:mod:`clipshift.evaluate.heads`) and the tower's
features from the evaluation loop (:func:`clipshift.evaluate.loop.encode`): one way to do each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ...evaluate.heads import HeadSpec, build_head, resolve_templates
from ...evaluate.linear_probe import fit_linear_probe, probe_logits
from ...evaluate.loop import ImageTensors, encode
from ...evaluate.loop import top1_accuracy
from ...models.factory import MEAN, STD, ModelSpec, build_model
from ...models.interface import EvalModel
from .config import ProbeSettings


@dataclass
class StartingPoint:
    """The CLIP model fine-tuning starts from, as :func:`load_clip` found it."""

    clip: torch.nn.Module
    tokenizer: Callable
    architecture: str
    pixel_mean: tuple
    pixel_std: tuple
    image_size: int
    name: str


def load_clip(model: str, pretrained: str | None = None) -> StartingPoint:
    """A CLIP model from this package's checkpoint folder, or an open_clip architecture with weights
    (``pretrained``: a local file or an open_clip tag), through :func:`clipshift.models.load.load_model`."""
    import open_clip

    from ...models.load import load_model

    loaded = load_model(model, pretrained)
    if loaded.kind != "clip":
        raise ValueError(f"model {model!r} is a {loaded.kind}, not a CLIP model: fine-tuning starts from a model "
                         f"with an image and a text tower (the zero-shot head needs the text tower)")
    architecture = loaded.metadata["architecture"]
    if architecture.startswith("hf-hub:"):
        raise ValueError(f"model {model!r}: give an open_clip architecture name with a local weights file "
                         f"(pretrained:), so that checkpoints can be rebuilt without the hub")
    if loaded.metadata.get("library") == "clipshift":
        mean, std = MEAN, STD
    else:
        cfg = getattr(loaded.module.visual, "preprocess_cfg", {}) or {}
        mean, std = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), cfg.get("std", open_clip.OPENAI_DATASET_STD)
    size = open_clip.get_model_config(architecture)["vision_cfg"]["image_size"]
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return StartingPoint(loaded.module.float().eval(), loaded.tokenizer, architecture, tuple(map(float, mean)),
                         tuple(map(float, std)), size, loaded.name)


def resolve_finetune_templates(spec: str, classes: str) -> list[str]:
    """Prompt templates: ``world`` (the embedded world's), ``openai``, ``simple`` or a file; ``auto``
    is ``world`` for the world's classes, else ``openai``."""
    from ...world.captions import ZERO_SHOT_TEMPLATES

    if spec == "auto":
        spec = "world" if classes == "world" else "openai"
    return list(ZERO_SHOT_TEMPLATES) if spec == "world" else resolve_templates(spec)


def init_from_zero_shot(clip, tokenizer, spec: ModelSpec, templates: list[str], *, cache_dir=None,
                        progress: bool = False) -> torch.nn.Module:
    """A :class:`~clipshift.models.factory.ZeroShotClassifier` for `spec` (kind ``zsclassifier``) with
    `clip`'s image tower and the head logit_scale · zero-shot weights (C, D), zero bias: its
    predictions are the zero-shot model's (its logits are the zero-shot cosine similarities times
    the logit scale). The zero-shot weights are the registry's ``zeroshot`` head, built on `clip`'s
    device and cached under `cache_dir` when given."""
    if spec.kind != "zsclassifier":
        raise ValueError(f"spec.kind must be 'zsclassifier', got {spec.kind!r}")
    model = build_model(spec)
    model.visual.load_state_dict(clip.visual.state_dict())
    text_model = EvalModel.wrap(clip, "clip", name=spec.architecture, tokenizer=tokenizer)
    head = build_head(HeadSpec("zeroshot", templates=list(templates)), text_model, class_names=list(spec.class_names),
                      cache_dir=cache_dir, device=next(clip.parameters()).device, progress=progress)
    with torch.no_grad():
        model.head.weight.copy_(clip.logit_scale.exp().float().cpu() * head.weights.float().cpu().T)
        model.head.bias.zero_()
    return model.eval()


def training_features(model: EvalModel, data, *, batch_size: int = 256, cache_dir=None,
                      progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Image features (N, D) and labels (N,) of training data through the evaluation loop: images
    held in memory as one tensor are encoded at once (cached under `cache_dir`); image files decoded
    per batch, or a stream (one epoch), a batch at a time, not cached."""
    if torch.is_tensor(data.images) and not getattr(data, "streaming", False):
        encoded = encode(model, ImageTensors(data.images, data.labels), name="train", cache_dir=cache_dir,
                         batch_size=batch_size, progress=progress)
        return encoded.features, encoded.targets
    features, labels = [], []
    for batch in _batches(data, batch_size):
        features.append(encode(model, ImageTensors(batch["images"], batch["labels"]), name="train",
                               batch_size=len(batch["labels"]), progress=False).features)
        labels.append(batch["labels"])
    return torch.cat(features), torch.cat(labels)


def _batches(data, batch_size: int):
    """The training data's batches in order: one epoch of a stream, else `batch_size` images at a time."""
    if getattr(data, "streaming", False):
        for step in range(data.steps_per_epoch):
            data.fetch(step)
            yield data.batch(torch.arange(data.batch_size))
    else:
        for start in range(0, len(data), batch_size):
            yield data.batch(torch.arange(start, min(start + batch_size, len(data))))


def fit_probe_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, settings: ProbeSettings,
                   init: tuple[torch.Tensor, torch.Tensor], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The linear probe (W (C, D), b (C,)) on normalised features, warm-started at `init`; with several
    penalties the one with the best held-out accuracy is refitted on all the data. The summary says
    which penalty was used and each one's held-out accuracy."""
    penalties = settings.penalties()
    held_out, fitted = {}, {}
    if len(penalties) > 1:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        cut = max(1, int(settings.holdout * len(labels)))
        val, fit = order[:cut], order[cut:]
        for penalty in penalties:
            fitted[penalty] = fit_linear_probe(features[fit], labels[fit], num_classes, weight_decay=penalty,
                                               max_iter=settings.max_iter, init=init)
            held_out[penalty] = top1_accuracy(probe_logits(features[val], *fitted[penalty]), labels[val])
    chosen = max(penalties, key=lambda p: held_out.get(p, 0.0))  # the first of equals
    w, b = fit_linear_probe(features, labels, num_classes, weight_decay=chosen, max_iter=settings.max_iter,
                            init=fitted.get(chosen, init))  # the refit starts from the held-out fit
    train_acc = top1_accuracy(probe_logits(features, w, b), labels)
    return w, b, {"weight_decay": chosen, "held_out_accuracy": held_out, "train_accuracy": train_acc}
