"""Load a model to evaluate: open_clip (names, local files, ``hf-hub:``), timm classifiers, or this
package's own checkpoints, behind one small interface (:class:`EvalModel`).

    load_model("ViT-B-32", "openai")                  # open_clip name + pretrained tag (downloads if needed)
    load_model("ViT-B-32", "/weights/vitb32.pt")      # open_clip name + local checkpoint file
    load_model("hf-hub:timm/ViT-B-16-SigLIP")         # open_clip from the Hugging Face hub
    load_model("timm/resnet50", "/weights/r50.pth")   # timm classifier + local checkpoint file
    load_model("timm/resnet50", "a1_in1k")            # timm classifier + pretrained tag (downloads)
    load_model("runs/quickstart/checkpoints/contrastive_narrow")   # this package's checkpoint folder
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from .factory import TEXT_TOWER_KEY, load_checkpoint, register_model_configs
from .interface import EvalModel

__all__ = ["EvalModel", "load_model", "file_digest"]

TIMM_PREFIX = "timm/"


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def file_digest(path) -> str:
    """First 16 hex digits of the file's SHA-256 (memoised per path, size and mtime)."""
    stat = os.stat(path)
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime)


def _transform_id(transform) -> str:
    return " ".join(repr(transform).split())


def _load_own(directory: Path) -> EvalModel:
    from torchvision import transforms

    module, spec = load_checkpoint(directory)
    module.eval()
    import open_clip

    register_model_configs()
    size = int(open_clip.get_model_config(spec.architecture)["vision_cfg"]["image_size"])
    preprocess = transforms.Compose([transforms.Resize(size, antialias=True), transforms.CenterCrop(size),
                                     transforms.PILToTensor()])
    weights = sorted(directory.glob("*.safetensors"))
    weights_id = "clipshift:" + "+".join(file_digest(w) for w in weights)
    tokenizer = None
    if spec.kind == "clip":
        from .factory import get_tokenizer
        tokenizer = get_tokenizer(spec.architecture)
    kind = "classifier" if spec.kind == "zsclassifier" else spec.kind  # a fine-tuned CLIP: a head over its classes
    return EvalModel(name=directory.name, kind=kind, module=module, preprocess=preprocess,
                     preprocess_id=_transform_id(preprocess), weights_id=weights_id, tokenizer=tokenizer,
                     class_names=list(spec.class_names),
                     normalize_uint8=True, metadata={"architecture": spec.architecture, "library": "clipshift"})


def _load_timm(name: str, pretrained: str | None) -> EvalModel:
    import timm
    from timm.data import create_transform, resolve_data_config

    from . import convnet  # noqa: F401  (registers this package's convnets with timm)

    arch = name[len(TIMM_PREFIX):]
    if not arch:
        raise ValueError(f"--model {name!r}: give a timm architecture after 'timm/', e.g. timm/resnet50")
    if pretrained and Path(pretrained).exists():
        module = timm.create_model(arch, pretrained=False, checkpoint_path=str(pretrained))
        weights_id, tag = f"timm:{arch}:{file_digest(pretrained)}", Path(pretrained).name
        model_id = f"{arch}/{Path(pretrained).stem}"
    elif pretrained:
        full = arch if "." in arch else f"{arch}.{pretrained}"
        module = timm.create_model(full, pretrained=True)
        weights_id, tag, model_id = f"timm:{full}", pretrained, full
    else:
        raise ValueError(f"--model {name!r} needs --pretrained: a checkpoint file or a timm pretrained tag "
                         f"(e.g. a1_in1k); random weights are never evaluated silently")
    module.eval()
    preprocess = create_transform(**resolve_data_config({}, model=module))
    return EvalModel(name=model_id, kind="classifier", module=module, preprocess=preprocess,
                     preprocess_id=_transform_id(preprocess), weights_id=weights_id,
                     metadata={"architecture": arch, "pretrained": tag, "library": "timm"})


def _load_open_clip(name: str, pretrained: str | None) -> EvalModel:
    import open_clip

    register_model_configs()
    if pretrained and Path(pretrained).exists():
        weights_id, tag = f"open_clip:{name}:{file_digest(pretrained)}", Path(pretrained).name
    elif name.startswith("hf-hub:"):
        weights_id, tag = f"open_clip:{name}", name[len("hf-hub:"):]
    elif pretrained:
        weights_id, tag = f"open_clip:{name}:{pretrained}", pretrained
    else:
        raise ValueError(f"--model {name!r} needs --pretrained: an open_clip tag (e.g. openai), a checkpoint file, "
                         f"or an hf-hub: model name; random weights are never evaluated silently")
    known = set(open_clip.list_models())
    if not name.startswith("hf-hub:") and name not in known:
        close = sorted(m for m in known if m.lower().startswith(name.lower()[:4]))[:8]
        raise ValueError(f"unknown open_clip model {name!r}; similar names: {close}")
    config = open_clip.get_model_config(name) or {}
    if config.get(TEXT_TOWER_KEY, "transformer") != "transformer":
        raise ValueError(f"--model {name!r} has a {config[TEXT_TOWER_KEY]} text tower that open_clip cannot build "
                         f"from a weights file; give the checkpoint folder clipshift wrote (it holds model.json) as --model")
    module, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=None if name.startswith("hf-hub:") else str(pretrained))
    module.eval()
    tokenizer = open_clip.get_tokenizer(name)
    model_id = name[len("hf-hub:"):] if name.startswith("hf-hub:") else f"{name}/{tag}"
    return EvalModel(name=model_id, kind="clip", module=module, preprocess=preprocess,
                     preprocess_id=_transform_id(preprocess), weights_id=weights_id, tokenizer=tokenizer,
                     metadata={"architecture": name, "pretrained": tag, "library": "open_clip"})


def load_model(model: str, pretrained: str | None = None) -> EvalModel:
    """An :class:`EvalModel` from a model name and pretrained weights (see the module doc)."""
    path = Path(model)
    if path.is_dir():
        if not (path / "model.json").exists():
            raise FileNotFoundError(f"{path}: a folder but not a clipshift checkpoint (no model.json)")
        if pretrained:
            raise ValueError("a clipshift checkpoint folder carries its weights; drop --pretrained")
        return _load_own(path)
    if pretrained and not Path(pretrained).exists() and (os.sep in pretrained or pretrained.endswith(
            (".pt", ".pth", ".bin", ".safetensors", ".ckpt"))):
        raise FileNotFoundError(f"--pretrained {pretrained!r}: no such checkpoint file")
    if model.startswith(TIMM_PREFIX):
        return _load_timm(model, pretrained)
    return _load_open_clip(model, pretrained)
