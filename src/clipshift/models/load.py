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
import logging
import os
from functools import lru_cache
from pathlib import Path

from .factory import TEXT_TOWER_KEY, load_checkpoint, register_model_configs
from .interface import EvalModel

__all__ = ["EvalModel", "load_model", "model_id", "check_model", "file_digest"]

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


# --- weights that cannot be read or fetched: one-line errors saying what to do ---------------------------------

def _checkpoint_format(path) -> str | None:
    """``zip`` (torch.save, .npz), ``pickle`` (legacy torch.save) or ``safetensors`` from the file's
    first bytes; None when it is none of them (a text file, an image, ...)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30:
        return "safetensors"
    return None


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unreadable_checkpoint(name: str, path, error: Exception) -> ValueError:
    """The error for a local `path` that `name` could not load: not a checkpoint at all, or one of
    another model."""
    if _checkpoint_format(path) is None:
        return ValueError(f"--pretrained {str(path)!r} is not a checkpoint file (neither a torch.save file nor "
                          f"safetensors); give the weights of {name} as a .pt, .pth, .bin or .safetensors file")
    return ValueError(f"--pretrained {str(path)!r}: a checkpoint, but not one {name} can load "
                      f"({type(error).__name__}: {_first_line(error)}); give a checkpoint of this architecture, "
                      f"or the --model it was saved from")


def _download_failed(error: BaseException) -> bool:
    """Whether `error` (or one it was raised from) is a failed download: a network or cache-miss
    OSError, or a library's message saying the download failed."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) or "download" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _not_downloaded(name: str, pretrained: str | None, error: Exception, cache_hint: str) -> FileNotFoundError:
    given = f"--model {name}" + (f" --pretrained {pretrained}" if pretrained else "")
    while error.__cause__ or error.__context__:  # the first reason: the libraries wrap it in their own words
        error = error.__cause__ or error.__context__
    return FileNotFoundError(
        f"{given}: the weights could not be downloaded ({_first_line(error)}); "
        f"pass a local weights file instead (--pretrained /path/to/file.pt), or set {cache_hint} to the folder "
        f"where they were downloaded before")


def _create(create: Callable, name: str, pretrained: str | None, local: bool, cache_hint: str):
    """`create()`, with its failures to read a local file or to download weights as clear errors
    (open_clip also logs a failed download at ERROR level: silenced here, the error says it)."""
    quiet = logging.root.manager.disable
    if not local:
        logging.disable(logging.ERROR)
    try:
        return create()
    except Exception as error:  # noqa: BLE001  (each library raises its own types; the cause is chained)
        if local:
            raise _unreadable_checkpoint(name, pretrained, error) from error
        if _download_failed(error):
            raise _not_downloaded(name, pretrained, error, cache_hint) from error
        raise
    finally:
        logging.disable(quiet)


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
    return EvalModel(name=model_id(str(directory)), kind=kind, module=module, preprocess=preprocess,
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
    hint = "HF_HOME (the Hugging Face hub cache timm reads)"
    if pretrained and Path(pretrained).exists():
        module = _create(lambda: timm.create_model(arch, pretrained=False, checkpoint_path=str(pretrained)),
                         name, pretrained, True, hint)
        weights_id, tag = f"timm:{arch}:{file_digest(pretrained)}", Path(pretrained).name
    elif pretrained:
        full = arch if "." in arch else f"{arch}.{pretrained}"
        module = _create(lambda: timm.create_model(full, pretrained=True), name, pretrained, False, hint)
        weights_id, tag = f"timm:{full}", pretrained
    else:
        raise ValueError(f"--model {name!r} needs --pretrained: a checkpoint file or a timm pretrained tag "
                         f"(e.g. a1_in1k); random weights are never evaluated silently")
    module.eval()
    preprocess = create_transform(**resolve_data_config({}, model=module))
    return EvalModel(name=model_id(name, pretrained), kind="classifier", module=module, preprocess=preprocess,
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
    local = bool(pretrained) and Path(pretrained).exists()
    module, _, preprocess = _create(lambda: open_clip.create_model_and_transforms(
        name, pretrained=None if name.startswith("hf-hub:") else str(pretrained)), name, pretrained, local,
        "HF_HOME (the Hugging Face hub cache) or open_clip's cache_dir (~/.cache/clip)")
    module.eval()
    tokenizer = open_clip.get_tokenizer(name)
    return EvalModel(name=model_id(name, pretrained), kind="clip", module=module, preprocess=preprocess,
                     preprocess_id=_transform_id(preprocess), weights_id=weights_id, tokenizer=tokenizer,
                     metadata={"architecture": name, "pretrained": tag, "library": "open_clip"})


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _names_a_file(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES)


def model_id(model: str, pretrained: str | None = None) -> str:
    """The name :func:`load_model` gives the model (the results' ``model`` column), without loading it:
    a checkpoint folder's name, ``ARCH/<file stem>`` or ``ARCH.<tag>`` for timm, ``NAME/<file name or
    tag>`` for open_clip, the hub name for ``hf-hub:``."""
    if Path(model).is_dir():
        return Path(model).name
    if model.startswith(TIMM_PREFIX):
        arch = model[len(TIMM_PREFIX):]
        if pretrained and Path(pretrained).exists():
            return f"{arch}/{Path(pretrained).stem}"
        return arch if "." in arch or not pretrained else f"{arch}.{pretrained}"
    if model.startswith("hf-hub:"):
        return model[len("hf-hub:"):]
    return f"{model}/{Path(pretrained).name if pretrained and Path(pretrained).exists() else pretrained}"


def check_model(model: str, pretrained: str | None = None) -> None:
    """ValueError / FileNotFoundError (one line) where :func:`load_model` would refuse `model` with
    `pretrained`, found without loading or downloading anything: a folder that is no checkpoint, a
    missing weights file, a name open_clip and timm do not know, a tag open_clip has no weights for."""
    path = Path(model)
    if path.is_dir():
        if not (path / "model.json").exists():
            raise FileNotFoundError(f"{model!r}: a folder but not a clipshift checkpoint (no model.json)")
        if pretrained:
            raise ValueError(f"{model!r}: a clipshift checkpoint folder carries its weights; drop {pretrained!r}")
        return
    if pretrained and not Path(pretrained).exists() and _names_a_file(pretrained):
        raise FileNotFoundError(f"{pretrained!r}: no such checkpoint file")
    if os.sep in model and not model.startswith((TIMM_PREFIX, "hf-hub:")):
        raise FileNotFoundError(f"{model!r} names no open_clip/timm/clipshift model or checkpoint file "
                                "(no such checkpoint folder)")
    if model.startswith(TIMM_PREFIX):
        import timm

        from . import convnet  # noqa: F401  (registers this package's convnets with timm)

        if not timm.is_model(model[len(TIMM_PREFIX):]):
            raise ValueError(f"{model!r} names no timm model (timm.list_models() lists them)")
    elif not model.startswith("hf-hub:"):
        import open_clip

        register_model_configs()
        if model not in open_clip.list_models():
            raise ValueError(f"{model!r} names no open_clip/timm/clipshift model or checkpoint file")
        tags = open_clip.list_pretrained_tags_by_model(model)
        if pretrained and not Path(pretrained).exists() and pretrained not in tags:
            raise ValueError(f"{model!r} has no pretrained weights tagged {pretrained!r} (open_clip knows "
                             f"{', '.join(tags) if tags else 'none: give a checkpoint file'})")
    if not pretrained and not model.startswith("hf-hub:"):
        raise ValueError(f"{model!r} needs pretrained weights: a tag or a checkpoint file; random weights are "
                         "never evaluated silently")


def load_model(model: str, pretrained: str | None = None) -> EvalModel:
    """An :class:`EvalModel` from a model name and pretrained weights (see the module doc)."""
    path = Path(model)
    if path.is_dir():
        if not (path / "model.json").exists():
            raise FileNotFoundError(f"{path}: a folder but not a clipshift checkpoint (no model.json)")
        if pretrained:
            raise ValueError("a clipshift checkpoint folder carries its weights; drop --pretrained")
        return _load_own(path)
    if pretrained and not Path(pretrained).exists() and _names_a_file(pretrained):
        raise FileNotFoundError(f"--pretrained {pretrained!r}: no such checkpoint file")
    if model.startswith(TIMM_PREFIX):
        return _load_timm(model, pretrained)
    return _load_open_clip(model, pretrained)
