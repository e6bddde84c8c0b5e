"""Build CLIP models and supervised classifiers on one image tower, and save/load them.

The package's architectures are open_clip model configs (``clipshift/model_configs/*.json``)
whose image tower is a timm model from :mod:`clipshift.models.convnet`. A supervised
classifier is *the same* image tower (``CLIP.visual``: trunk + projection) followed by a
linear head, so the contrastive-vs-supervised comparison changes only the objective.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..io import atomic_path, atomic_write_text
from . import convnet  # noqa: F401  (registers the timm image towers)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
KINDS = ("clip", "classifier", "simclr", "zsclassifier")
# Pixel statistics the towers are trained with: images arrive as uint8 and are normalised here.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
_registered = False


def register_model_configs() -> list[str]:
    """Add the package's architectures to open_clip's registry (idempotent); return their names."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _check_architecture(name: str) -> None:
    known = register_model_configs()
    if name not in open_clip.list_models():
        raise ValueError(f"unknown architecture {name!r}; the package's own: {known} "
                         f"(open_clip knows {len(open_clip.list_models())} more)")


class ImageClassifier(nn.Module):
    """Image tower (B, 3, H, W) → embedding (B, D) → linear head → logits (B, C)."""

    def __init__(self, visual: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(embed_dim, num_classes)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode_image(images))


class NormalizedLinear(nn.Linear):
    """A linear layer on L2-normalised inputs. With weight = logit scale × the zero-shot class
    embeddings (C, D) and zero bias it is CLIP's zero-shot head (scaled cosine similarity), as a
    layer that fine-tuning can train; pruning or probing its input works as on the zero-shot head."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=-1), self.weight, self.bias)


class ZeroShotClassifier(ImageClassifier):
    """A CLIP image tower with a :class:`NormalizedLinear` head: logits = head(normalize(visual(x))),
    the model that fine-tuning, linear probes and WiSE-FT work on (kind ``zsclassifier``).

    Inputs are normalised the package's way (:func:`normalize_images`); a tower trained with other
    pixel statistics (open_clip weights: `pixel_mean`, `pixel_std`) gets them re-normalised inside,
    so its step-0 predictions are those of the zero-shot model."""

    def __init__(self, visual: nn.Module, embed_dim: int, num_classes: int,
                 pixel_mean=MEAN, pixel_std=STD):
        super().__init__(visual, embed_dim, num_classes)
        self.head = NormalizedLinear(embed_dim, num_classes)
        mean, std = torch.tensor(pixel_mean, dtype=torch.float32), torch.tensor(pixel_std, dtype=torch.float32)
        self.renormalise = tuple(pixel_mean) != MEAN or tuple(pixel_std) != STD
        # x_tower = (u - mean) / std = x * (STD / std) + (MEAN - mean) / std, for x = (u - MEAN) / STD
        self.register_buffer("pixel_scale", (torch.tensor(STD) / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_shift", ((torch.tensor(MEAN) - mean) / std).view(1, 3, 1, 1), persistent=False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if self.renormalise:
            images = images * self.pixel_scale + self.pixel_shift
        return self.visual(images)


class SimCLRModel(nn.Module):
    """Image tower → embedding (B, D) → projection MLP (D → D → D) for SimCLR pre-training; the
    tower is then reused by a classifier (``ImageClassifier``) for fine-tuning."""

    def __init__(self, visual: nn.Module, embed_dim: int):
        super().__init__()
        self.visual = visual
        self.projection = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True),
                                        nn.Linear(embed_dim, embed_dim))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encode_image(images))


@dataclass
class ModelSpec:
    """What a checkpoint needs to rebuild its model."""

    kind: str  # "clip", "classifier", "simclr" or "zsclassifier"
    architecture: str  # an open_clip model name, e.g. "clipshift-small"
    class_names: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not self.class_names:
            raise ValueError("class_names must not be empty")


def build_model(spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """A freshly initialised model for `spec` (no weights are downloaded); with `seed`, the
    initialisation does not depend on the global random state."""
    _check_architecture(spec.architecture)
    if seed is not None:
        torch.manual_seed(seed)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded
    try:
        clip = create_clip(spec.architecture)
    finally:
        logging.disable(previous)
    if spec.kind == "clip":
        return clip
    embed_dim = open_clip.get_model_config(spec.architecture)["embed_dim"]
    if spec.kind == "simclr":
        return SimCLRModel(clip.visual, embed_dim)
    if spec.kind == "zsclassifier":  # pixel statistics of towers trained elsewhere (open_clip weights)
        mean, std = spec.metadata.get("pixel_mean", MEAN), spec.metadata.get("pixel_std", STD)
        return ZeroShotClassifier(clip.visual, embed_dim, len(spec.class_names), tuple(mean), tuple(std))
    return ImageClassifier(clip.visual, embed_dim, len(spec.class_names))


TEXT_TOWER_KEY = "clipshift_text_tower"  # a model config's text tower when it is not open_clip's
TEXT_TOWERS = ("transformer", "bag_of_words")


def create_clip(architecture: str) -> nn.Module:
    """A randomly initialised open_clip model for a registered `architecture`. A package config
    with ``"clipshift_text_tower": "bag_of_words"`` gets :class:`~.text.BagOfWordsText` as the
    text module of an ``open_clip.CustomTextCLIP`` (same image tower, loss and zero-shot code)."""
    config = open_clip.get_model_config(architecture)
    tower = (config or {}).get(TEXT_TOWER_KEY, "transformer")
    if tower not in TEXT_TOWERS:
        raise ValueError(f"{architecture}: {TEXT_TOWER_KEY} must be one of {TEXT_TOWERS}, got {tower!r}")
    if tower == "transformer":
        return open_clip.create_model(architecture, pretrained=None, output_dict=True)
    from .text import BagOfWordsText

    config = {k: v for k, v in config.items() if k != TEXT_TOWER_KEY}
    text_cfg = config["text_cfg"]
    # open_clip builds its transformer text tower first; a one-layer stand-in keeps that cheap
    stand_in = {**text_cfg, "layers": 1, "vocab_size": 1}
    clip = open_clip.CustomTextCLIP(**{**config, "text_cfg": stand_in}, output_dict=True)
    clip.text = BagOfWordsText(text_cfg["vocab_size"], text_cfg["width"], config["embed_dim"],
                               text_cfg["context_length"])
    clip.context_length, clip.vocab_size = clip.text.context_length, clip.text.vocab_size
    return clip


def get_tokenizer(architecture: str):
    _check_architecture(architecture)
    return open_clip.get_tokenizer(architecture)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float, normalised with the towers' MEAN/STD, channels-last."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    x = (images.float() / 255.0 - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


def save_checkpoint(model: nn.Module, spec: ModelSpec, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into `directory`, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()},
                            directory / "model.safetensors")
    atomic_write_text(directory / "model.json", json.dumps(vars(spec), indent=2))
    return directory


def load_checkpoint(directory: str | os.PathLike) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model saved by :func:`save_checkpoint` (safetensors: nothing is unpickled)."""
    directory = Path(directory)
    for name in ("model.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a clipshift checkpoint: missing {name}")
    spec = ModelSpec(**json.loads((directory / "model.json").read_text()))
    model = build_model(spec)
    model.load_state_dict(load_file(directory / "model.safetensors"))
    return model.eval(), spec


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` as safetensors at `path` (folder created) through a temporary file in the same
    folder and a rename (:func:`clipshift.io.atomic_path`), so a reader never sees a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path
