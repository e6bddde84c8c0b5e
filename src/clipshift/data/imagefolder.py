"""Evaluation sets as ImageFolder trees (``root/<class folder>/<image>``), possibly covering
only a subset of the model's classes (as ImageNet-R and -A do), and subset-masked scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor
from tqdm.auto import tqdm

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class EvalImageFolder(Dataset):
    """Images under ``root/<folder>/``; folders map to names in `class_names` (the model's
    full label space), directly or through `folder_to_class`."""

    def __init__(self, root, class_names: Sequence[str], *, folder_to_class: dict[str, str] | None = None,
                 transform: Callable | None = None, strict: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"evaluation set not found: {self.root} is not a folder")
        index = {name: i for i, name in enumerate(class_names)}
        folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        if not folders:
            raise ValueError(f"{self.root}: no class folders")
        mapping = folder_to_class or {}
        unknown = [f.name for f in folders if mapping.get(f.name, f.name) not in index]
        if unknown:
            raise ValueError(f"{self.root}: {len(unknown)} folder(s) name no known class, e.g. {unknown[:10]}; "
                             f"known classes include {list(class_names)[:5]}")
        self.samples: list[tuple[str, int]] = []
        for folder in folders:
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise ValueError(f"{self.root}: class folder {folder.name!r} has no images")
            label = index[mapping.get(folder.name, folder.name)]
            self.samples += [(str(p), label) for p in files]
        self.class_indices = sorted({label for _, label in self.samples})
        self.transform = transform or pil_to_tensor
        self.strict = strict
        self.num_skipped, self.skipped_files = 0, []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def load_all(dataset: EvalImageFolder, *, size: int | None = None, progress: bool = True):
    """(images uint8 (N, 3, H, W), labels int64 (N,), skipped paths); undecodable images are
    skipped and counted (in ``dataset.num_skipped``) unless ``dataset.strict``."""
    images, labels, skipped = [], [], []
    for path, label in tqdm(dataset.samples, desc=dataset.root.name, unit="img", disable=not progress, leave=False):
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if size is not None and image.size != (size, size):
                    image = image.resize((size, size), Image.BILINEAR)
                images.append(pil_to_tensor(image))
        except (UnidentifiedImageError, OSError) as error:
            if dataset.strict:
                raise ValueError(f"cannot decode {path}: {error}") from error
            skipped.append(path)
            continue
        labels.append(label)
    if not images:
        raise ValueError(f"{dataset.root}: no image could be decoded")
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise ValueError(f"{dataset.root}: images differ in size {sorted(shapes)[:3]}; pass size=")
    dataset.num_skipped, dataset.skipped_files = len(skipped), skipped
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), skipped


def subset_mask(class_indices: Sequence[int], num_classes: int) -> torch.Tensor:
    mask = torch.zeros(num_classes, dtype=torch.bool)
    mask[list(class_indices)] = True
    return mask


def masked_topk(logits: torch.Tensor, class_indices: Sequence[int], k: int) -> torch.Tensor:
    """Top-k class indices (full label space) over the subset's logits only."""
    masked = logits.masked_fill(~subset_mask(class_indices, logits.shape[1]).to(logits.device), float("-inf"))
    return masked.topk(min(k, len(class_indices)), dim=1).indices


def masked_argmax(logits: torch.Tensor, class_indices: Sequence[int]) -> torch.Tensor:
    return masked_topk(logits, class_indices, 1)[:, 0]
