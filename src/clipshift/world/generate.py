"""Generate splits of the world: images, captions, labels and every attribute.

Image ``i`` of a split is drawn from its own generator seeded by ``(seed, split name, i)``, so
a split is the same whatever the number of worker processes, and growing a split keeps its
first images.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..progress import progress_bar
from ..spawning import check_main_guard, explain_broken_pool
from .captions import CaptionConfig, write_caption
from .render import render
from .shapes import CLASS_NAMES


@dataclass
class WorldSplit:
    """Images (N, H, W, 3) uint8, labels (N,) int64, captions and per-image attributes."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    captions: list[str]
    attributes: pd.DataFrame

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray, name: str | None = None) -> "WorldSplit":
        index = np.asarray(index)
        return WorldSplit(
            name or self.name,
            self.images[index],
            self.labels[index],
            [self.captions[i] for i in index],
            self.attributes.iloc[index].reset_index(drop=True),
        )


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _make_chunk(args) -> tuple[np.ndarray, list[str], list[dict]]:
    distribution, split, seed, start, stop, size, caption_cfg, num_classes = args
    images = np.empty((stop - start, size, size, 3), dtype=np.uint8)
    captions, attrs = [], []
    for j, index in enumerate(range(start, stop)):
        rng = _image_rng(seed, split, index)
        scene = distribution.sample(rng, index % num_classes)
        images[j] = render(scene, rng, size)
        captions.append(write_caption(scene, rng, caption_cfg))
        row = asdict(scene)
        row["factors"] = "|".join(scene.factors)
        attrs.append(row)
    return images, captions, attrs


def generate_split(
    distribution,
    n: int,
    *,
    split: str,
    seed: int = 0,
    size: int = 32,
    caption_config: CaptionConfig = CaptionConfig(),
    start: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> WorldSplit:
    """Draw `n` images (indices ``start .. start+n-1``) of `split` from `distribution`.

    Labels cycle through the classes, so every split is class-balanced.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if size < 16 or size % 4:
        raise ValueError(f"size must be a multiple of 4 and at least 16, got {size}")
    distribution.validate()
    caption_config.validate()
    workers = workers or min(os.cpu_count() or 1, 4)
    chunk = max(64, min(1024, n // (4 * workers) + 1))
    jobs = [
        (distribution, split, seed, lo, min(lo + chunk, start + n), size, caption_config, len(CLASS_NAMES))
        for lo in range(start, start + n, chunk)
    ]
    if workers > 1 and len(jobs) > 1:
        check_main_guard(workers)  # spawn and forkserver workers import the main script again
    bar = progress_bar(total=n, desc=f"world {split}", unit="img", enabled=progress)
    results = []
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            results.append(_make_chunk(job))
            bar.update(job[4] - job[3])
    else:
        with explain_broken_pool(), ProcessPoolExecutor(workers) as pool:
            for job, result in zip(jobs, pool.map(_make_chunk, jobs)):
                results.append(result)
                bar.update(job[4] - job[3])
    bar.close()
    images = np.concatenate([r[0] for r in results])
    captions = [c for r in results for c in r[1]]
    attributes = pd.DataFrame([a for r in results for a in r[2]])
    attributes.insert(0, "class_name", [CLASS_NAMES[i] for i in attributes["label"]])
    labels = attributes["label"].to_numpy(np.int64)
    return WorldSplit(split, images, labels, captions, attributes)
