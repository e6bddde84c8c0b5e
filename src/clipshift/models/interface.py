"""The one interface to a model under evaluation or probing: :class:`EvalModel`.

Every model the project evaluates, probes or fine-tunes from is seen through it, whatever built it:
this package's checkpoints of every kind (CLIP, classifier, SimCLR, fine-tuned CLIP), open_clip
models and timm classifiers (:func:`clipshift.models.load.load_model`), or a module trained a
moment ago in this process (:meth:`EvalModel.wrap`). It offers

- ``encode_image(images)``: image features (N, D), the representation every head scores;
- ``encode_text(tokens)`` and ``tokenizer`` where the model has a text tower (``has_text``);
- ``classify(features)``: the model's own linear head where it has one (``has_head``).

``weights_id`` and ``preprocess_id`` identify the weights and the transform in cache keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .factory import normalize_images

KINDS = ("clip", "classifier", "simclr")


@dataclass
class EvalModel:
    """A model ready for evaluation (see the module doc).

    ``kind``: ``clip`` (image and text towers), ``classifier`` (image tower and a linear head over
    ``class_names``, or ImageNet-1k's classes when None) or ``simclr`` (image tower only).
    ``preprocess``: PIL image → tensor (C, H, W) as ``encode_image`` expects. ``normalize_uint8``:
    the model takes uint8 images and normalises them itself (this package's models)."""

    name: str
    kind: str
    module: nn.Module
    preprocess: Callable | None
    preprocess_id: str
    weights_id: str
    tokenizer: Callable | None = None
    class_names: list[str] | None = None
    normalize_uint8: bool = False
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")

    @classmethod
    def wrap(cls, module: nn.Module, kind: str, *, name: str = "model", class_names=None, tokenizer=None,
             preprocess: Callable | None = None, metadata: dict | None = None) -> "EvalModel":
        """An in-memory module of this package (uint8 images in, normalised inside) as an EvalModel;
        its weights are identified by a digest of its state dict."""
        kind = "classifier" if kind == "zsclassifier" else kind
        return cls(name=name, kind=kind, module=module, preprocess=preprocess,
                   preprocess_id=" ".join(repr(preprocess).split()), weights_id=state_digest(module),
                   tokenizer=tokenizer, class_names=list(class_names) if class_names is not None else None,
                   normalize_uint8=True, metadata=dict(metadata or {}))

    @property
    def has_text(self) -> bool:
        return self.kind == "clip" and self.tokenizer is not None

    @property
    def has_head(self) -> bool:
        return self.kind == "classifier"

    def to(self, device: torch.device | str) -> "EvalModel":
        self.module.to(device)
        return self

    def eval(self) -> "EvalModel":
        self.module.eval()
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image features (N, D) of a preprocessed batch (uint8 for this package's models)."""
        if self.normalize_uint8 and images.dtype == torch.uint8:
            images = normalize_images(images)
        module = self.module
        if hasattr(module, "encode_image"):
            return module.encode_image(images)
        if hasattr(module, "forward_features") and hasattr(module, "forward_head"):  # timm
            return module.forward_head(module.forward_features(images), pre_logits=True)
        raise ValueError(f"{self.name}: {type(module).__name__} has no image representation (no encode_image, "
                         "and not a timm model with forward_features/forward_head)")

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.has_text:
            raise ValueError(f"{self.name} is a {self.kind} model: it has no text tower")
        return self.module.encode_text(tokens)

    def head_module(self) -> nn.Module:
        """The linear head: this package's ``.head`` or timm's ``get_classifier()``."""
        if not self.has_head:
            raise ValueError(f"{self.name} is a {self.kind} model: it has no classification head of its own")
        module = self.module
        if isinstance(getattr(module, "head", None), nn.Module) and hasattr(module, "visual"):
            return module.head
        if hasattr(module, "get_classifier"):
            return module.get_classifier()
        raise ValueError(f"{self.name}: {type(module).__name__} has no head (expected .head or get_classifier())")

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of the model's own head on image features from :meth:`encode_image`."""
        return self.head_module()(features)


def state_digest(module: nn.Module) -> str:
    """The weights' identity for cache keys: a digest of the state dict (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "module:" + digest.hexdigest()[:16]


def as_eval_model(model, kind: str | None = None, **kw) -> EvalModel:
    """`model` if it is an EvalModel, else an in-memory module wrapped (kind guessed from its towers:
    a text tower → clip, a head → classifier, else simclr)."""
    if isinstance(model, EvalModel):
        return model
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected an EvalModel or an nn.Module, got {type(model).__name__}")
    if kind is None:
        kind = "clip" if hasattr(model, "encode_text") else (
            "classifier" if hasattr(model, "head") or hasattr(model, "get_classifier") else "simclr")
    timm_like = not hasattr(model, "encode_image")
    wrapped = EvalModel.wrap(model, kind, **kw)
    wrapped.normalize_uint8 = not timm_like
    return wrapped
