"""Evaluation sets as ImageFolder trees (``root/<class folder>/<image>``), possibly covering
only a subset of the model's classes (as ImageNet-R and -A do), and subset-masked scoring.

Layout rules: every non-hidden folder directly under ``root`` is a class folder; images are
found in it recursively (as torchvision's ImageFolder does), by extension only (``.png``,
``.jpg``, ``.jpeg``, ``.bmp``, ``.webp``, any case); other files and hidden files or folders
(names starting with ``.``) are ignored. Nothing is decoded at construction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset, default_collate
from torchvision.transforms.functional import pil_to_tensor

from ..progress import progress_bar
from ._images import ImageDecodeError, check_size, decode_many, open_rgb, stack_into

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, sorted, hidden entries skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return found




def _class_index(root: Path, folders: list[Path], class_names: list[str],
                 folder_to_class: dict[str, str]) -> dict[str, int]:
    """Folder name -> class index; ValueError listing folders that map to no known class."""
    index = {name: i for i, name in enumerate(class_names)}
    mapped = {f.name: folder_to_class.get(f.name, f.name) for f in folders}
    unknown = [f for f, c in mapped.items() if c not in index]
    if unknown:
        shown = [f if mapped[f] == f else f"{f} -> {mapped[f]}" for f in unknown[:10]]
        raise ValueError(f"{root}: {len(unknown)} folder(s) name no known class, e.g. {shown}; "
                         f"known classes include {class_names[:5]}"
                         + ("" if folder_to_class else " (pass folder_to_class= to map folder names)"))
    return {f: index[c] for f, c in mapped.items()}


class EvalImageFolder(Dataset):
    """Images under ``root/<folder>/``, labelled in the model's full label space.

    Each folder name maps to a class name (itself, or ``folder_to_class[name]`` when given),
    then to its index in `class_names`. Attributes: ``samples`` (list of (path, class index)),
    ``class_indices`` (sorted class indices present), ``num_skipped`` and ``skipped_files``
    (undecodable images met so far by ``__getitem__`` or :func:`load_all`).

    ``__getitem__`` returns ``(transform(image), class index)``; the default transform gives
    uint8 (3, H, W). For an undecodable image it raises a ValueError when `strict`, and
    otherwise records the file and returns None (drop those with :func:`skip_none_collate` in a
    DataLoader; skips recorded in DataLoader worker processes do not reach this object)."""

    def __init__(self, root, class_names: Sequence[str], *, folder_to_class: dict[str, str] | None = None,
                 transform: Callable | None = None, strict: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"evaluation set not found: {self.root} is not a folder")
        if isinstance(class_names, str) or not class_names:
            raise ValueError(f"class_names must be a non-empty list of class names, got {class_names!r}")
        if folder_to_class is not None and not isinstance(folder_to_class, dict):
            raise ValueError(f"folder_to_class must be a dict of folder name -> class name, "
                             f"got {type(folder_to_class).__name__}")
        self.class_names = list(class_names)
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise ValueError(f"{self.root}: no class folders (expected root/<class folder>/<image>)")
        labels = _class_index(self.root, folders, self.class_names, folder_to_class or {})
        self.samples: list[tuple[str, int]] = []
        for folder in folders:
            files = image_files(folder)
            if not files:
                raise ValueError(f"{self.root}: class folder {folder.name!r} has no images "
                                 f"(extensions {sorted(IMAGE_EXTENSIONS)})")
            self.samples += [(str(p), labels[folder.name]) for p in files]
        self.class_indices = sorted({label for _, label in self.samples})
        self.transform = transform if transform is not None else pil_to_tensor
        self.strict = strict
        self.num_skipped, self.skipped_files = 0, []

    def __repr__(self) -> str:
        return (f"EvalImageFolder({str(self.root)!r}, {len(self.samples)} images, "
                f"{len(self.class_indices)} of {len(self.class_names)} classes)")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        """The class index of every sample (as torchvision's ImageFolder names it)."""
        return [label for _, label in self.samples]

    def _record_skip(self, path: str) -> None:
        if path not in self.skipped_files:
            self.skipped_files.append(path)
            self.num_skipped = len(self.skipped_files)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            image = open_rgb(path)
        except ImageDecodeError:
            if self.strict:
                raise
            self._record_skip(path)
            return None
        return self.transform(image), label


def skip_none_collate(batch: list):
    """DataLoader ``collate_fn`` that drops the None items of a non-strict EvalImageFolder."""
    return default_collate([item for item in batch if item is not None])


def load_all(dataset: EvalImageFolder, *, size: int | None = None, progress: bool = True,
             num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode a whole evaluation set: (images uint8 (N, 3, H, W), labels int64 (N,), skipped paths).

    Undecodable images are skipped and recorded in ``dataset.num_skipped`` /
    ``dataset.skipped_files``, unless ``dataset.strict`` (then ValueError naming the file).
    Without `size` all images must share a size (ValueError naming the first that does not)."""
    check_size(size)
    paths = [path for path, _ in dataset.samples]
    with progress_bar(total=len(paths), desc=dataset.root.name, unit="img", enabled=progress) as bar:
        images, kept = stack_into(decode_many(paths, size, num_workers, skip_errors=not dataset.strict), paths, bar)
    kept_set = set(kept)
    skipped = [p for i, p in enumerate(paths) if i not in kept_set]
    for path in skipped:
        dataset._record_skip(path)
    if not kept:
        raise ValueError(f"{dataset.root}: none of the {len(paths)} images could be decoded")
    labels = torch.tensor([dataset.samples[i][1] for i in kept], dtype=torch.int64)
    return images, labels, skipped


def _check_indices(class_indices: Sequence[int], num_classes: int) -> torch.Tensor:
    """Sorted unique int64 tensor of `class_indices`; ValueError when empty or out of range."""
    indices = torch.as_tensor(list(class_indices) if not torch.is_tensor(class_indices) else class_indices)
    if indices.numel() == 0:
        raise ValueError("class_indices is empty")
    if indices.dtype.is_floating_point or indices.dtype == torch.bool or indices.dim() != 1:
        raise ValueError(f"class_indices must be a 1-D list of ints, "
                         f"got {indices.dtype} of shape {tuple(indices.shape)}")
    bad = indices[(indices < 0) | (indices >= num_classes)]
    if bad.numel():
        raise ValueError(f"class_indices {bad[:10].tolist()} out of range for {num_classes} classes")
    return torch.unique(indices.long())


def subset_mask(class_indices: Sequence[int], num_classes: int) -> torch.Tensor:
    """Bool (num_classes,) mask, True at `class_indices`."""
    mask = torch.zeros(num_classes, dtype=torch.bool)
    mask[_check_indices(class_indices, num_classes)] = True
    return mask


def masked_topk(logits: torch.Tensor, class_indices: Sequence[int], k: int) -> torch.Tensor:
    """Top-`k` classes of each row over the subset's logits only: (..., k) indices in the full
    label space, best first. Classes outside the subset can never be returned (even when the
    subset's logits are -inf or NaN)."""
    if not torch.is_tensor(logits) or logits.dim() < 1:
        raise ValueError(f"logits must be a tensor of shape (..., num_classes), got {type(logits).__name__}")
    subset = _check_indices(class_indices, logits.shape[-1]).to(logits.device)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(subset):
        raise ValueError(f"k must be an int in 1 .. {len(subset)} (the subset's size), got {k!r}")
    inside = logits.index_select(-1, subset)
    return subset[inside.topk(k, dim=-1).indices]


def masked_argmax(logits: torch.Tensor, class_indices: Sequence[int]) -> torch.Tensor:
    """Best class of each row over the subset's logits only, as full-label-space indices."""
    return masked_topk(logits, class_indices, 1)[..., 0]
