"""Heads: what turns image features into class scores, one registry for every recipe.

A head is a callable features (N, D) → logits (N, C). The kinds (:data:`HEADS`):

- ``zeroshot``: CLIP's zero-shot classifier, the mean of each class's normalised prompt embeddings
  over the templates, re-normalised (prompt ensembling, Radford et al. 2021); the bare class name
  is the same head with the single template ``"{}"``. Cached by weights, class names and templates.
- ``linear``: the model's own linear head (a classifier, a fine-tuned CLIP, a timm model).
- ``probe``: multinomial logistic regression fitted on frozen features of labelled images
  (:mod:`.linear_probe`).

``build_head(spec, model, ...)`` makes a head from a :class:`HeadSpec`; a new kind is one
function registered with :func:`register_head`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..distributed import default_device, world
from ..models.factory import save_safetensors_atomic
from ..models.interface import EvalModel
from .linear_probe import fit_linear_probe, probe_logits

CACHE_VERSION = 2


def cache_key(payload: dict) -> str:
    """A short stable digest of a JSON-able payload, for cache file names."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


# --- templates and class names ---------------------------------------------------------------------------------

def imagenet_class_names() -> list[str]:
    """open_clip's short ImageNet-1k class names for prompts, in the standard class order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def resolve_templates(spec: str | None = None) -> list[str]:
    """Prompt templates with a ``{}`` for the class name: ``openai`` (the 80 of Radford et al.,
    default), ``simple`` (open_clip's short set), ``bare`` (the class name alone), or a text file
    with one template per line."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    spec = spec or "openai"
    if spec == "bare":
        return ["{}"]
    if spec in ("openai", "simple"):
        raw = OPENAI_IMAGENET_TEMPLATES if spec == "openai" else SIMPLE_IMAGENET_TEMPLATES
        return [t("{}") if callable(t) else str(t) for t in raw]
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--templates {spec!r}: not 'openai', 'simple' or 'bare', and no such file")
    templates = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ValueError(f"{path}: every template needs a '{{}}' for the class name; "
                         + (f"these do not: {bad[:3]}" if bad else "the file has none"))
    return templates


# --- heads -----------------------------------------------------------------------------------------------------

@dataclass
class ZeroShotHead:
    """Cosine similarity to per-class text embeddings ``weights`` (D, C)."""

    weights: torch.Tensor
    templates: tuple[str, ...] | None = None  # the prompts it was built from, for the results' protocol stamp

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=-1) @ self.weights.to(features.device)


@dataclass
class LinearHead:
    """A model's own head (an ``nn.Module`` or any callable on features)."""

    module: Callable

    @torch.inference_mode()
    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        parameter = next(self.module.parameters(), None) if isinstance(self.module, torch.nn.Module) else None
        return self.module(features if parameter is None else features.to(parameter.device))  # features: on the CPU


@dataclass
class ProbeHead:
    """A fitted logistic regression (W (C, D), b (C,)) on (optionally L2-normalised) features."""

    weight: torch.Tensor
    bias: torch.Tensor
    normalize: bool = True

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return probe_logits(features, self.weight, self.bias, self.normalize)


@dataclass
class HeadSpec:
    """What head to build: ``kind`` (a key of :data:`HEADS`) and its settings.

    ``templates`` (zeroshot; default the 80 of Radford et al.); ``train`` = (features (N, D),
    labels (N,)) and ``weight_decay`` (probe)."""

    kind: str
    templates: Sequence[str] | None = None
    train: tuple | None = None
    weight_decay: float = 1e-4
    options: dict = field(default_factory=dict)


HEADS: dict[str, Callable] = {}


def register_head(kind: str):
    """Register ``builder(spec, model, *, class_names, cache_dir, device, progress) → head`` as `kind`."""
    def decorator(builder):
        HEADS[kind] = builder
        return builder

    return decorator


def build_head(spec: HeadSpec | str, model: EvalModel, *, class_names: Sequence[str] | None = None, cache_dir=None,
               device: torch.device | None = None, progress: bool = False) -> Callable:
    """The head `spec` describes, for `model` (see the module doc)."""
    spec = HeadSpec(spec) if isinstance(spec, str) else spec
    if spec.kind not in HEADS:
        raise ValueError(f"unknown head {spec.kind!r}; known: {sorted(HEADS)}")
    return HEADS[spec.kind](spec, model, class_names=class_names, cache_dir=cache_dir, device=device,
                            progress=progress)


@register_head("zeroshot")
def _zeroshot(spec, model, *, class_names, cache_dir, device, progress):
    if class_names is None:
        raise ValueError("a zero-shot head needs class names")
    templates = list(spec.templates) if spec.templates is not None else resolve_templates("openai")
    return ZeroShotHead(zero_shot_head(model, class_names, templates, cache_dir=cache_dir, device=device,
                                       progress=progress), tuple(templates))


@register_head("linear")
def _linear(spec, model, *, class_names, cache_dir, device, progress):
    return LinearHead(model.head_module())


@register_head("probe")
def _probe(spec, model, *, class_names, cache_dir, device, progress):
    if spec.train is None:
        raise ValueError("a probe head needs training features and labels: HeadSpec('probe', train=(X, y))")
    features, labels = spec.train
    num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
    return ProbeHead(*fit_linear_probe(features, labels, num_classes, weight_decay=spec.weight_decay))


# --- the zero-shot classifier ----------------------------------------------------------------------------------

@torch.inference_mode()
def zero_shot_weights(model: EvalModel, class_names: Sequence[str], templates: Sequence[str], *,
                      prompts_per_batch: int = 1024, device: torch.device | None = None,
                      progress: bool = False) -> torch.Tensor:
    """(D, C) zero-shot classifier (see the module doc); underscores in class names become spaces.
    Prompts are encoded in batches of whole classes, about `prompts_per_batch` at a time."""
    from ..progress import progress_bar

    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every template needs a '{{}}' placeholder for the class name, got {list(templates)}")
    if not model.has_text:
        raise ValueError(f"{model.name} is a {model.kind}, not a CLIP model: it has no text tower for a zero-shot head")
    device = device or next(model.module.parameters()).device
    model.module.eval()
    per_batch = max(1, prompts_per_batch // len(templates))
    columns = []
    with progress_bar(total=len(class_names), desc=f"zero-shot head ({model.name})", unit="class",
                      enabled=progress) as bar:
        for start in range(0, len(class_names), per_batch):
            names = class_names[start:start + per_batch]
            prompts = [t.format(name.replace("_", " ")) for name in names for t in templates]
            embeddings = F.normalize(model.encode_text(model.tokenizer(prompts).to(device)).float(), dim=-1)
            columns.append(embeddings.view(len(names), len(templates), -1).mean(1))
            bar.update(len(names))
    return F.normalize(torch.cat(columns), dim=-1).T.contiguous()


def zero_shot_head(model: EvalModel, class_names: Sequence[str], templates: Sequence[str], *, cache_dir=None,
                   device: torch.device | None = None, progress: bool = True) -> torch.Tensor:
    """:func:`zero_shot_weights`, read from ``cache_dir/heads/<key>.safetensors`` when cached there
    (keyed by the weights, class names and templates) and written there otherwise."""
    if not model.has_text:
        raise ValueError(f"{model.name} is a {model.kind}, not a CLIP model: it has no text tower for a zero-shot head")
    key = cache_key({"v": CACHE_VERSION, "weights": model.weights_id, "names": list(class_names),
                     "templates": list(templates)})
    path = Path(cache_dir) / "heads" / f"{key}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        return load_file(str(path))["head"]
    device = device or default_device()
    model.to(device)
    rank, _ = world()
    head = zero_shot_weights(model, list(class_names), list(templates), device=device,
                             progress=progress and rank == 0).float().cpu()
    if path is not None and rank == 0:
        save_safetensors_atomic({"head": head}, path, {"model": model.name, "classes": str(len(class_names)),
                                                       "templates": str(len(templates))})
    return head
