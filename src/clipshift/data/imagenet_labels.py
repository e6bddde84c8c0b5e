"""The ILSVRC-2012 label space (timm's synset list) and the evaluation-suite record: the ground
the ImageNet suites (:mod:`.imagenet`) and class subsets (:mod:`.imagenet_classes`) stand on."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


# ---- the label space ----------------------------------------------------------------

@lru_cache(maxsize=1)
def wnid_tuple() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    wnids = tuple(ImageNetInfo("imagenet-1k").label_names())
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError(f"timm's ImageNet-1k synset list is not the 1000 sorted wnids ({len(wnids)} entries)")
    return wnids


@lru_cache(maxsize=1)
def label_tuple() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    return tuple(info.label_name_to_description(w) for w in wnid_tuple())


@lru_cache(maxsize=1)
def wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(wnid_tuple())}


@lru_cache(maxsize=1)
def label_index() -> dict[str, tuple[int, ...]]:
    """ILSVRC label string -> class indices (more than one for 'crane')."""
    found: dict[str, list[int]] = {}
    for i, label in enumerate(label_tuple()):
        found.setdefault(label, []).append(i)
    return {label: tuple(ids) for label, ids in found.items()}


def imagenet_wnids() -> list[str]:
    """The 1000 ILSVRC-2012 wnids, sorted: position = class index."""
    return list(wnid_tuple())


def imagenet_label_strings() -> list[str]:
    """The ILSVRC-2012 label strings ("tench, Tinca tinca", ...) in class-index order."""
    return list(label_tuple())



@dataclass
class EvalSuite:
    """One evaluation set in the 1000-class ImageNet label space.

    ``samples``: (image path, target index); ``target_classes[t]``: ImageNet class indices that
    count as correct for target ``t``; ``target_names[t]``: its folder name; ``class_indices``:
    sorted ImageNet classes whose logits are scored (None = all ``num_classes``);
    ``crop_border``: pixels cropped off every side of each image before the transform."""

    name: str
    root: Path
    samples: list[tuple[str, int]]
    target_classes: list[tuple[int, ...]]
    target_names: list[str]
    class_indices: list[int] | None
    crop_border: int = 0
    num_classes: int = 1000

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        scored = self.num_classes if self.class_indices is None else len(self.class_indices)
        return (f"EvalSuite({self.name!r}, {str(self.root)!r}, {len(self.samples)} images, "
                f"{len(self.target_names)} targets, {scored} of {self.num_classes} classes scored)")

    @property
    def targets(self) -> list[int]:
        """The target index of every sample."""
        return [t for _, t in self.samples]
