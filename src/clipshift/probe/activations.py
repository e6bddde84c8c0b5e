"""The representation a probe looks at: h = f_v(x), the image encoder's output, for any model the
package loads (its own checkpoints, open_clip, timm), plus named intermediate layers via forward hooks.

What h is, per model:

- this package's models (:class:`~clipshift.models.factory.ImageClassifier` or an open_clip CLIP
  built from a package config): ``encode_image``, i.e. the image tower (trunk + projection); for a
  classifier that is what its linear ``head`` reads, for CLIP what the zero-shot head scores;
- open_clip CLIP models: ``encode_image`` (unnormalised embedding);
- timm classifiers: ``forward_head(forward_features(x), pre_logits=True)``, the input of the final
  classifier (``get_classifier()``).

Intermediate layers are named as in ``module.named_modules()`` of the model's module (e.g.
``visual.trunk`` for this package's models, ``visual.transformer.resblocks.6`` for an open_clip
ViT, ``layer3`` for a timm ResNet). A layer's output is pooled to one vector per image: a
(B, C, H, W) map by its spatial mean, a (B, T, C) token sequence by its mean over tokens (a
sequence-first (T, B, C) output is recognised from the batch size), a tuple by its first element.

Data: a tensor of images (what the model's ``preprocess`` gives, or uint8 images for this package's
models, which normalise inside), optionally with labels; or an
:class:`~clipshift.data.imagenet.EvalSuite`, encoded through
:func:`clipshift.evaluate.loop.encode` (decoding workers, ``torchrun`` sharding, feature cache).
Both paths cache under `cache_dir` when given: the suite path in the evaluation loop's feature cache
(keyed by the weights, the layers, the dataset and the transform), the tensor path under
``cache_dir/probe/`` (keyed by the weights, the layers and a digest of the images).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file
from torch import nn

from ..evaluate.heads import ZeroShotHead
from ..evaluate.loop import tensor_digest
from ..models.factory import save_safetensors_atomic
from ..models.interface import EvalModel, as_eval_model, state_digest
from ..progress import progress_bar

CACHE_VERSION = 1


@dataclass
class Activations:
    """Representations of one dataset: ``features`` h (N, D) float32, ``targets`` (N,) or None,
    ``layers`` {name: (N, D_layer)} pooled intermediate activations, ``indices`` (N,) into the
    suite's samples (suite path) or None, ``skipped`` (undecodable sample indices)."""

    features: torch.Tensor
    targets: torch.Tensor | None = None
    layers: dict[str, torch.Tensor] = field(default_factory=dict)
    indices: torch.Tensor | None = None
    skipped: list[int] = field(default_factory=list)
    cached: bool = False

    def __len__(self) -> int:
        return int(self.features.shape[0])


# --- what h is -------------------------------------------------------------------------------------------------

def representation(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """images → h (B, D) for an :class:`EvalModel`, a module of this package, open_clip or timm
    (seen through :func:`~clipshift.models.interface.as_eval_model`), or a callable (returned as is)."""
    if callable(model) and not isinstance(model, (nn.Module, EvalModel)):
        return model
    return as_eval_model(model).encode_image


def classifier_head(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """h → logits for a classifier: its own head (this package's ``.head``, timm's
    ``get_classifier()``). CLIP models have none: use :func:`zero_shot_classifier`."""
    model = as_eval_model(model)
    if model.kind == "clip":
        raise ValueError(f"{model.name} is a CLIP model: score its h with zero_shot_classifier(head weights)")
    return model.head_module()


def zero_shot_classifier(weights: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """h → cosine-similarity logits against a (D, C) zero-shot head (as the quickstart and
    ``clipshift eval`` score CLIP models): pruned dimensions are zeroed before the normalisation."""
    return ZeroShotHead(weights.float())


def is_clip(model) -> bool:
    return as_eval_model(model).kind == "clip"


# --- forward hooks ---------------------------------------------------------------------------------------------

def pool_activation(output, batch_size: int) -> torch.Tensor:
    """One vector per image from a layer's output (see the module doc)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if isinstance(output, dict):
        output = next(iter(output.values()))
    if not torch.is_tensor(output):
        raise ValueError(f"layer output is a {type(output).__name__}, not a tensor")
    if output.dim() == 2:
        return output.detach().float().clone()
    if output.dim() == 4:
        return output.detach().float().mean(dim=(2, 3))
    if output.dim() == 3:
        if output.shape[0] != batch_size and output.shape[1] == batch_size:
            output = output.transpose(0, 1)  # (T, B, C) → (B, T, C)
        return output.detach().float().mean(dim=1)
    raise ValueError(f"cannot pool a layer output of shape {tuple(output.shape)} to one vector per image")


class LayerRecorder:
    """Context manager: forward hooks on named submodules that keep each layer's pooled output of
    the last forward pass in ``self.outputs`` (pooled inside the hook, so later in-place ops
    cannot change what was recorded)."""

    def __init__(self, module: nn.Module, names: Sequence[str]):
        available = dict(module.named_modules())
        missing = [n for n in names if n not in available]
        if missing:
            shown = [n for n in available if n][:12]
            raise ValueError(f"unknown layer(s) {missing}; the module's layers include {shown} "
                             f"({len(available) - 1} in all, as named by named_modules())")
        self.module, self.names, self.targets = module, list(names), available
        self.outputs: dict[str, torch.Tensor] = {}
        self.batch_size = 0
        self._handles = []

    def __enter__(self) -> "LayerRecorder":
        for name in self.names:
            def hook(_module, _inputs, output, name=name):
                self.outputs[name] = pool_activation(output, self.batch_size)
            self._handles.append(self.targets[name].register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


# --- caching ---------------------------------------------------------------------------------------------------

def weights_id(model) -> str:
    """The weights' identity for cache keys: the EvalModel's ``weights_id``, else a digest of the state dict."""
    if isinstance(model, EvalModel):
        return model.weights_id
    if not isinstance(model, nn.Module):
        raise ValueError("caching needs an EvalModel or an nn.Module (a bare callable has no weights to key on)")
    return state_digest(model)


# --- collection ------------------------------------------------------------------------------------------------

@torch.inference_mode()
def _collect_tensor(model, images: torch.Tensor, layers: Sequence[str], batch_size: int,
                    device: torch.device, progress: bool, desc: str) -> tuple[torch.Tensor, dict]:
    represent = representation(model)
    module = as_eval_model(model).module if isinstance(model, (nn.Module, EvalModel)) else None
    if layers and module is None:
        raise ValueError("layers need a module to hook: pass an EvalModel or an nn.Module")
    if module is not None:
        module.to(device).eval()
    feats, per_layer = [], {name: [] for name in layers}
    recorder = LayerRecorder(module, layers) if layers else None
    with progress_bar(total=len(images), desc=desc, unit="img", enabled=progress) as bar:
        if recorder:
            recorder.__enter__()
        try:
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size].to(device)
                if recorder:
                    recorder.batch_size = len(batch)
                feats.append(represent(batch).float().cpu())
                for name in layers:
                    per_layer[name].append(recorder.outputs[name].cpu())
                bar.update(len(batch))
        finally:
            if recorder:
                recorder.__exit__(None, None, None)
    return torch.cat(feats), {name: torch.cat(parts) for name, parts in per_layer.items()}


@dataclass
class _RepresentationModel(EvalModel):
    """An EvalModel whose ``encode_image`` gives h and the pooled layers, concatenated after it, so
    the evaluation loop's :func:`~clipshift.evaluate.loop.encode` collects them with its loaders,
    sharding and cache."""

    represent: Callable | None = None
    layer_names: tuple[str, ...] = ()
    sizes: list[int] = field(default_factory=list)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if not self.layer_names:
            return self.represent(images)
        with LayerRecorder(self.module, self.layer_names) as recorder:
            recorder.batch_size = len(images)
            h = self.represent(images)
            parts = [h.float()] + [recorder.outputs[n].to(h.device) for n in self.layer_names]
        self.sizes = [p.shape[1] for p in parts]
        return torch.cat(parts, dim=1)


def _representation_view(model: EvalModel, layers: Sequence[str]) -> _RepresentationModel:
    values = {f.name: getattr(model, f.name) for f in fields(EvalModel)}
    values["weights_id"] = f"{model.weights_id}|probe:h|layers={','.join(layers)}"
    return _RepresentationModel(**values, represent=model.encode_image, layer_names=tuple(layers))


def _collect_suite(model: EvalModel, suite, layers, *, cache_dir, batch_size, workers, device, progress,
                   strict, amp) -> Activations:
    from ..data.imagenet import SuiteDataset
    from ..evaluate.loop import encode

    view = _representation_view(model, layers)
    feats = encode(view, suite, name=suite.name, cache_dir=cache_dir, batch_size=batch_size, workers=workers,
                   device=device, strict=strict, amp=amp, progress=progress)
    out = feats.features
    sizes = view.sizes
    if layers and not sizes:  # read from the cache: one image tells the sizes
        item = SuiteDataset(suite, model.preprocess)[int(feats.indices[0])][0]
        with torch.inference_mode():
            view.encode_image(item.unsqueeze(0).to(device or "cpu"))
        sizes = view.sizes
    parts = torch.split(out, sizes, dim=1) if layers else (out,)
    return Activations(parts[0].contiguous(), feats.targets, {n: p.contiguous() for n, p in zip(layers, parts[1:])},
                       feats.indices, feats.skipped, feats.cached)


def collect_activations(model, data, *, targets: torch.Tensor | None = None, layers: Sequence[str] = (),
                        batch_size: int = 256, device: torch.device | str | None = None, cache_dir=None,
                        workers: int = 4, strict: bool = False, amp: bool = False, progress: bool = True,
                        desc: str = "activations") -> Activations:
    """h (and pooled `layers`) of every image of `data`, in batches, in inference mode.

    `model`: an :class:`EvalModel`, a module of this package / open_clip / timm, or a callable
    images → h (no layers, no cache). `data`: a tensor of images (N, C, H, W) (with `targets`
    optionally), an ``(images, targets)`` pair, or an :class:`EvalSuite` (needs an EvalModel, whose
    ``preprocess`` decodes the files). With `cache_dir`, results are read from and written to the
    cache (see the module doc). `amp`: bf16/fp16 autocast on GPU (suite path; off by default so
    that activation statistics are those of the full-precision model)."""
    from ..data.imagenet import EvalSuite

    layers = list(layers)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if isinstance(data, EvalSuite):
        if not isinstance(model, EvalModel):
            raise ValueError("an EvalSuite is decoded with the model's preprocess: pass an EvalModel (load_model)")
        return _collect_suite(model, data, layers, cache_dir=cache_dir, batch_size=batch_size, workers=workers,
                              device=device, progress=progress, strict=strict, amp=amp)
    if isinstance(data, (tuple, list)):
        data, targets = data
    if not torch.is_tensor(data) or data.dim() < 2:
        raise ValueError(f"data must be an image tensor (N, C, H, W), an (images, targets) pair or an EvalSuite, "
                         f"got {type(data).__name__}")
    if targets is not None:
        targets = torch.as_tensor(targets)
        if len(targets) != len(data):
            raise ValueError(f"{len(targets)} targets for {len(data)} images")
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "weights": weights_id(model), "layers": layers,
                                         "images": tensor_digest(data)}, sort_keys=True).encode()).hexdigest()[:24]
        path = Path(cache_dir) / "probe" / f"{key}.safetensors"
        if path.exists():
            stored = load_file(str(path))
            return Activations(stored["h"], targets, {n: stored[f"layer:{n}"] for n in layers}, cached=True)
    h, per_layer = _collect_tensor(model, data, layers, batch_size, device, progress, desc)
    if path is not None:
        save_safetensors_atomic({"h": h, **{f"layer:{n}": v for n, v in per_layer.items()}}, path)
    return Activations(h, targets, per_layer)
