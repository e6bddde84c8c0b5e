"""Small ImageNet-layout JPEG trees for the evaluation tests (the fixtures in conftest.py use them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from clipshift.data.imagenet import imagenet_wnids

WNIDS = [imagenet_wnids()[i] for i in (0, 1, 207, 417, 980)]


def write_jpegs(folder: Path, n: int, rng, ext: str = ".JPEG", size: tuple[int, int] = (40, 48)) -> None:
    """`n` noise JPEGs of `size` (height, width) named img_<i><ext> in `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        array = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"img_{i}{ext}", format="JPEG")
