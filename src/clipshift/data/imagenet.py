"""ImageNet and its natural distribution shifts, read as distributed, for 1000-way ImageNet models.

Every suite is scored in the full ILSVRC-2012 label space (the 1000 wnids sorted, as
:func:`imagenet_wnids`): models give (N, 1000) logits; a suite says which of those classes are
scored (``class_indices``; ImageNet-R/-A: their 200 classes, ObjectNet: the 125 classes its
mapping names) and which classes count as correct for each target (``target_classes``).

Layouts, folder under a data root (:data:`DEFAULT_FOLDERS`) → what is read:

- ``imagenet``: ``imagenet/val/<wnid>/*.JPEG`` (val sorted into wnid folders).
- ``imagenet-v2`` (and ``-threshold0.7``, ``-top-images``):
  ``imagenetv2-<variant>-format-val/<i>/*.jpeg``, ``i`` = class index 0..999, not zero-padded.
- ``imagenet-sketch``: ``sketch/<wnid>/*.JPEG``.
- ``imagenet-r``, ``imagenet-a``: ``imagenet-r/<wnid>/*.jpg`` (``README.txt`` beside them
  ignored); the class subset is the positions of the folders' wnids in the sorted 1000.
- ``objectnet``: ``objectnet-1.0/images/<folder>/*.png`` with
  ``objectnet-1.0/mappings/folder_to_objectnet_label.json`` and
  ``objectnet-1.0/mappings/objectnet_to_imagenet_1k.json`` (ImageNet label strings joined by
  ``"; "``). Only folders whose ObjectNet label is mapped count; a prediction is correct when it
  is any ImageNet class mapped to the folder; images lose a 2-pixel border before the transform.

Targets index the class folders present (``target_names``), sorted by ImageNet class index
(ObjectNet: by folder name), so on a complete 1000-class set the target is the class index.
Images are found by extension (any case, recursively, hidden entries skipped); nothing is
decoded when a suite is opened. ``open_suite(..., classes=WNID_FILE)`` scores a suite in a class
subset's label space instead (:mod:`.imagenet_classes`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from ._images import ImageDecodeError, open_rgb
from .imagefolder import IMAGE_EXTENSIONS, EvalImageFolder, image_files, masked_topk
from .imagenet_labels import EvalSuite, imagenet_label_strings, imagenet_wnids  # noqa: F401 (re-exported)
from .imagenet_labels import label_index as _label_index, label_tuple as _label_tuple, wnid_index as _wnid_index
from .imagenet_labels import wnid_tuple as _wnid_tuple

IMAGENET_SUITES: tuple[str, ...] = (
    "imagenet", "imagenet-v2", "imagenet-v2-threshold0.7", "imagenet-v2-top-images",
    "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet",
)

DEFAULT_FOLDERS: dict[str, str] = {
    "imagenet": "imagenet/val",
    "imagenet-v2": "imagenetv2-matched-frequency-format-val",
    "imagenet-v2-threshold0.7": "imagenetv2-threshold0.7-format-val",
    "imagenet-v2-top-images": "imagenetv2-top-images-format-val",
    "imagenet-sketch": "sketch",
    "imagenet-r": "imagenet-r",
    "imagenet-a": "imagenet-a",
    "objectnet": "objectnet-1.0",
}

_LAYOUTS = {
    "imagenet": "<wnid>/*.JPEG (1000 wnid folders, val sorted into them)",
    "imagenet-v2": "<i>/*.jpeg, i = class index 0..999",
    "imagenet-v2-threshold0.7": "<i>/*.jpeg, i = class index 0..999",
    "imagenet-v2-top-images": "<i>/*.jpeg, i = class index 0..999",
    "imagenet-sketch": "<wnid>/*.JPEG (1000 wnid folders)",
    "imagenet-r": "<wnid>/*.jpg plus README.txt (200 wnid folders)",
    "imagenet-a": "<wnid>/*.jpg plus README.txt (200 wnid folders)",
    "objectnet": "images/<folder>/*.png and mappings/folder_to_objectnet_label.json, "
                 "mappings/objectnet_to_imagenet_1k.json",
}

_V2_SUITES = ("imagenet-v2", "imagenet-v2-threshold0.7", "imagenet-v2-top-images")
_SUBSET_SUITES = ("imagenet-r", "imagenet-a")
OBJECTNET_BORDER = 2
_OBJECTNET_FOLDER_MAP = "folder_to_objectnet_label.json"
_OBJECTNET_IMAGENET_MAP = "objectnet_to_imagenet_1k.json"


# ---- suites ---------------------------------------------------------------------------------------

def _shown(names: Sequence[str], n: int = 5) -> str:
    return f"{list(names[:n])}" + (f" and {len(names) - n} more" if len(names) > n else "")


def _class_folders(root: Path) -> list[Path]:
    """Non-hidden folders directly under `root`, sorted by name."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _no_folders_error(name: str, root: Path) -> ValueError:
    loose = [p.name for p in root.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
    hint = ""
    if loose:
        hint = (f"; found {len(loose)} images directly in it (e.g. {loose[0]!r}): they must be sorted "
                f"into class folders")
    return ValueError(f"{name}: no class folders in {root} (expected {_LAYOUTS[name]}){hint}")


def _collect(name: str, root: Path, folders: list[Path], target_of: dict[str, int]) -> list[tuple[str, int]]:
    """(path, target) for the images of `folders`; ValueError naming an empty class folder."""
    samples: list[tuple[str, int]] = []
    for folder in folders:
        files = image_files(folder)
        if not files:
            raise ValueError(f"{name}: class folder {folder} has no images "
                             f"(extensions {sorted(IMAGE_EXTENSIONS)}, any case)")
        samples += [(str(p), target_of[folder.name]) for p in files]
    return samples


def _single_label_suite(name: str, root: Path, folders: list[Path], class_of: dict[str, int],
                        class_indices_from_folders: bool) -> EvalSuite:
    """Suite whose folders each hold one ImageNet class (`class_of`: folder name -> class)."""
    folders = sorted(folders, key=lambda f: class_of[f.name])
    target_of = {f.name: t for t, f in enumerate(folders)}
    samples = _collect(name, root, folders, target_of)
    classes = [class_of[f.name] for f in folders]
    return EvalSuite(name=name, root=root, samples=samples, target_classes=[(c,) for c in classes],
                     target_names=[f.name for f in folders],
                     class_indices=sorted(classes) if class_indices_from_folders else None)


def _wnid_suite(name: str, root: Path) -> EvalSuite:
    folders = _class_folders(root)
    if not folders:
        raise _no_folders_error(name, root)
    index = _wnid_index()
    unknown = [f.name for f in folders if f.name not in index]
    if unknown:
        hint = ""
        if name == "imagenet" and "val" in unknown:
            hint = f"; did you mean {root / 'val'}?"
        raise ValueError(f"{name}: {len(unknown)} folder(s) in {root} are not ImageNet-1k wnids, e.g. "
                         f"{_shown(unknown)} (expected {_LAYOUTS[name]}, wnids like 'n01440764'){hint}")
    return _single_label_suite(name, root, folders, index, class_indices_from_folders=name in _SUBSET_SUITES)


def _v2_suite(name: str, root: Path) -> EvalSuite:
    folders = _class_folders(root)
    if not folders:
        raise _no_folders_error(name, root)
    bad = [f.name for f in folders
           if not (f.name.isascii() and f.name.isdigit() and int(f.name) < 1000)]
    if bad:
        raise ValueError(f"{name}: {len(bad)} folder(s) in {root} are not class indices 0..999, e.g. "
                         f"{_shown(bad)} (expected {_LAYOUTS[name]})")
    class_of = {f.name: int(f.name) for f in folders}
    seen: dict[int, str] = {}
    for folder, c in class_of.items():
        if c in seen:
            raise ValueError(f"{name}: folders {seen[c]!r} and {folder!r} in {root} both name class index {c}")
        seen[c] = folder
    return _single_label_suite(name, root, folders, class_of, class_indices_from_folders=False)


def _read_json_dict(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(f"objectnet: mapping file {path} not found (expected {_LAYOUTS['objectnet']} "
                                f"under the ObjectNet root {path.parent.parent})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"objectnet: {path} is not valid JSON: {error}") from error
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"objectnet: {path} must be a JSON object of string -> string")
    return data


def objectnet_mapping(mappings: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """Read ObjectNet's two mapping files from the `mappings` folder.

    Returns (folder -> ObjectNet label for all folders, ObjectNet label -> sorted ImageNet class
    indices for the mapped labels). ValueError naming a label string that is not an ILSVRC label
    (or names more than one class), or a mapped label that no folder carries."""
    folder_to_label = _read_json_dict(mappings / _OBJECTNET_FOLDER_MAP)
    label_to_imagenet = _read_json_dict(mappings / _OBJECTNET_IMAGENET_MAP)
    index = _label_index()
    label_classes: dict[str, tuple[int, ...]] = {}
    for label, joined in label_to_imagenet.items():
        classes = []
        for part in joined.split("; "):
            found = index.get(part)
            if found is None:
                raise ValueError(f"objectnet: {mappings / _OBJECTNET_IMAGENET_MAP}: {label!r} maps to "
                                 f"{part!r}, which is not an ILSVRC-2012 label string (expected strings "
                                 f"like {_label_tuple()[0]!r}, joined by '; ')")
            if len(found) > 1:
                raise ValueError(f"objectnet: {mappings / _OBJECTNET_IMAGENET_MAP}: {label!r} maps to "
                                 f"{part!r}, which names {len(found)} ImageNet classes "
                                 f"{[_wnid_tuple()[i] for i in found]}")
            classes += found
        label_classes[label] = tuple(sorted(set(classes)))
    orphans = sorted(set(label_to_imagenet) - set(folder_to_label.values()))
    if orphans:
        raise ValueError(f"objectnet: {len(orphans)} label(s) in {mappings / _OBJECTNET_IMAGENET_MAP} are "
                         f"not in {mappings / _OBJECTNET_FOLDER_MAP}, e.g. {_shown(orphans)}")
    return folder_to_label, label_classes


def _objectnet_suite(root: Path) -> EvalSuite:
    images = root / "images"
    folder_to_label, label_classes = objectnet_mapping(root / "mappings")
    if not images.is_dir():
        raise FileNotFoundError(f"objectnet: {images} is not a folder (expected {_LAYOUTS['objectnet']} "
                                f"under the ObjectNet root {root})")
    folders = _class_folders(images)
    if not folders:
        raise _no_folders_error("objectnet", images)
    unknown = [f.name for f in folders if f.name not in folder_to_label]
    if unknown:
        raise ValueError(f"objectnet: {len(unknown)} folder(s) in {images} are not in "
                         f"{root / 'mappings' / _OBJECTNET_FOLDER_MAP}, e.g. {_shown(unknown)}")
    mapped = [f for f in folders if folder_to_label[f.name] in label_classes]
    if not mapped:
        raise ValueError(f"objectnet: none of the {len(folders)} folders in {images} maps to ImageNet "
                         f"classes through {root / 'mappings' / _OBJECTNET_IMAGENET_MAP}")
    samples = _collect("objectnet", images, mapped, {f.name: t for t, f in enumerate(mapped)})
    union = sorted({c for classes in label_classes.values() for c in classes})
    return EvalSuite(name="objectnet", root=root, samples=samples,
                     target_classes=[label_classes[folder_to_label[f.name]] for f in mapped],
                     target_names=[f.name for f in mapped], class_indices=union,
                     crop_border=OBJECTNET_BORDER)


def folder_suite(name: str, root, class_names: Sequence[str], *, mask_partial: bool = True) -> EvalSuite:
    """An ImageFolder tree ``root/<class name>/<image>`` as a suite over `class_names` (one target per
    class); a tree holding only some of the classes scores those only (unless not `mask_partial`)."""
    folder = EvalImageFolder(root, class_names)
    partial = mask_partial and len(folder.class_indices) < len(class_names)
    return EvalSuite(name=name, root=folder.root, samples=folder.samples,
                     target_classes=[(i,) for i in range(len(class_names))], target_names=list(class_names),
                     class_indices=folder.class_indices if partial else None, num_classes=len(class_names))


def open_suite(name: str, root=None, *, data_root=None, classes=None) -> EvalSuite:
    """Open the suite `name` (one of :data:`IMAGENET_SUITES`) without decoding any image.

    `root` is the dataset's own folder (e.g. ``.../imagenet-r``); without it the folder is
    ``data_root / DEFAULT_FOLDERS[name]``. `classes`: a class subset (a wnid file or a list of
    wnids) whose label space the suite is scored in
    (:func:`~clipshift.data.imagenet_classes.restrict_suite`); None: all 1000 classes."""
    if name not in DEFAULT_FOLDERS:
        raise ValueError(f"unknown ImageNet suite {name!r}; known suites: {list(IMAGENET_SUITES)}")
    if root is None:
        if data_root is None:
            raise ValueError(f"open_suite({name!r}): pass root= (the dataset's folder) or data_root= "
                             f"(the folder holding {DEFAULT_FOLDERS[name]}/)")
        root = Path(data_root) / DEFAULT_FOLDERS[name]
        if not root.is_dir():
            raise FileNotFoundError(f"{name} not found: expected folder {DEFAULT_FOLDERS[name]}/ under the data "
                                    f"root {data_root}, laid out as {_LAYOUTS[name]}; {root} is not a folder")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name} not found: {root} is not a folder (expected {_LAYOUTS[name]})")
    if name == "objectnet":
        suite = _objectnet_suite(root)
    elif name in _V2_SUITES:
        suite = _v2_suite(name, root)
    else:
        suite = _wnid_suite(name, root)
    return suite if classes is None else restrict_suite(suite, classes)


def restrict_suite(suite: EvalSuite, classes) -> EvalSuite:
    """`suite` scored in a class subset's label space (a wnid file or a list of wnids); see
    :func:`clipshift.data.imagenet_classes.restrict_suite`."""
    from .imagenet_classes import restrict_suite as restrict

    return restrict(suite, classes)


# ---- loading --------------------------------------------------------------------------------------

class SuiteDataset(Dataset):
    """Images of an :class:`EvalSuite`: item ``i`` is ``(transform(image), target, i)``.

    The image is decoded to RGB, loses ``suite.crop_border`` pixels on every side, then goes
    through `transform` (PIL image -> tensor; None: uint8 (3, H, W)). An undecodable image gives
    None in place of the tensor, or raises :class:`ImageDecodeError` naming the file when
    `strict`. Use :func:`suite_collate` as the DataLoader's ``collate_fn``."""

    def __init__(self, suite: EvalSuite, transform: Callable | None, strict: bool = False):
        if not isinstance(suite, EvalSuite):
            raise ValueError(f"suite must be an EvalSuite (from open_suite), got {type(suite).__name__}")
        self.suite = suite
        self.transform = transform if transform is not None else pil_to_tensor
        self.strict = strict

    def __len__(self) -> int:
        return len(self.suite.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int]:
        path, target = self.suite.samples[i]
        try:
            image = open_rgb(path)
        except ImageDecodeError:
            if self.strict:
                raise
            return None, target, i
        b = self.suite.crop_border
        if b:
            width, height = image.size
            if width <= 2 * b or height <= 2 * b:
                raise ValueError(f"{path}: {width}x{height} image is too small to crop a {b}-pixel border")
            image = image.crop((b, b, width - b, height - b))
        return self.transform(image), target, i


def suite_collate(batch: list[tuple[torch.Tensor | None, int, int]]
                  ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, list[int]]:
    """Collate :class:`SuiteDataset` items: (images (B', ...) of the decodable items or None if
    none, their targets int64 (B',), their sample indices int64 (B',), sample indices skipped)."""
    kept = [item for item in batch if item[0] is not None]
    skipped = [int(item[2]) for item in batch if item[0] is None]
    images = torch.stack([item[0] for item in kept]) if kept else None
    targets = torch.tensor([int(item[1]) for item in kept], dtype=torch.int64)
    indices = torch.tensor([int(item[2]) for item in kept], dtype=torch.int64)
    return images, targets, indices, skipped


# ---- scoring --------------------------------------------------------------------------------------

def score(logits: torch.Tensor, targets: torch.Tensor, suite: EvalSuite) -> dict:
    """Accuracy of (N, num_classes) logits on `targets` (N,) of `suite`.

    Only the logits of ``suite.class_indices`` compete (classes outside can never be predicted);
    a prediction is correct when it is in ``suite.target_classes[target]``. Returns ``top1``,
    ``top5`` (any of the best min(5, scored classes) correct), ``mean_per_class_recall`` (mean
    over the targets present of their top-1 recall), all fractions, and ``num_examples``."""
    if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[1] != suite.num_classes:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"logits must be a (N, {suite.num_classes}) tensor in the full ImageNet label space, "
                         f"got {shape}")
    targets = torch.as_tensor(targets)
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets must be a 1-D tensor of {logits.shape[0]} target indices, "
                         f"got shape {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer target indices, got {targets.dtype}")
    if logits.shape[0] == 0:
        raise ValueError("cannot score 0 examples")
    targets = targets.long().cpu()
    num_targets = len(suite.target_classes)
    bad = targets[(targets < 0) | (targets >= num_targets)]
    if bad.numel():
        raise ValueError(f"targets {bad[:5].tolist()} out of range for {suite.name}'s {num_targets} targets")

    subset = list(range(suite.num_classes)) if suite.class_indices is None else suite.class_indices
    k = min(5, len(subset))
    top = masked_topk(logits.detach(), subset, k).cpu()  # (N, k) full-label-space indices
    correct = torch.zeros(num_targets, suite.num_classes, dtype=torch.bool)
    for t, classes in enumerate(suite.target_classes):
        correct[t, list(classes)] = True
    hits = correct[targets.unsqueeze(1), top]  # (N, k)
    top1 = hits[:, 0].double()
    present = torch.unique(targets)
    recalls = torch.stack([top1[targets == t].mean() for t in present])
    # top1 as the float32 mean torch gives for (pred == target).float().mean(), as every recipe reports it
    return {"top1": hits[:, 0].float().mean().item(), "top5": hits.any(dim=1).double().mean().item(),
            "mean_per_class_recall": recalls.mean().item(), "num_examples": int(logits.shape[0])}
