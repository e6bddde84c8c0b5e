"""Write world splits in the formats real data uses, so one loader per format serves both.

- Evaluation sets: ImageFolder trees, ``ROOT/<split>/<class name>/<index>.png`` (the layout
  of ImageNet val, Sketch, R and A).
- Training sets: ``ROOT/<split>.csv`` with columns ``filepath,caption,label`` (paths relative
  to the CSV, images under ``ROOT/<split>/``), the open_clip CSV convention plus a label.
- Every split also gets ``ROOT/<split>.attributes.csv``: the scene attributes the world knows
  (true label, style, colour, fill, background, pose, factors), for analyses and probes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .generate import WorldSplit
from .shapes import CLASS_NAMES


def _save_pngs(split: WorldSplit, paths: list[Path]) -> None:
    for folder in {p.parent for p in paths}:
        folder.mkdir(parents=True, exist_ok=True)

    def save(i: int) -> None:
        Image.fromarray(split.images[i]).save(paths[i], compress_level=1)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(save, range(len(paths))))


def export_imagefolder(split: WorldSplit, root: str | Path) -> Path:
    """Write `split` as ``root/<split name>/<class>/<index>.png``; return that folder."""
    folder = Path(root) / split.name
    paths = [folder / CLASS_NAMES[label] / f"{i:06d}.png" for i, label in enumerate(split.labels)]
    _save_pngs(split, paths)
    _write_attributes(split, Path(root), [p.relative_to(root).as_posix() for p in paths])
    return folder


def export_caption_csv(split: WorldSplit, root: str | Path) -> Path:
    """Write `split` as ``root/<split name>.csv`` (filepath,caption,label) plus its images."""
    root = Path(root)
    relative = [f"{split.name}/{i:06d}.png" for i in range(len(split))]
    _save_pngs(split, [root / r for r in relative])
    table = pd.DataFrame({
        "filepath": relative,
        "caption": split.captions,
        "label": [CLASS_NAMES[i] for i in split.labels],
    })
    path = root / f"{split.name}.csv"
    _write_csv(table, path)
    _write_attributes(split, root, relative)
    return path


def _write_attributes(split: WorldSplit, root: Path, relative_paths: list[str]) -> None:
    table = split.attributes.copy()
    table.insert(0, "filepath", relative_paths)
    table.insert(1, "caption", split.captions)
    _write_csv(table, root / f"{split.name}.attributes.csv")


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)


def plot_samples(rows: dict[str, np.ndarray], path: str | Path, per_row: int = 12) -> Path:
    """A PNG grid: one row of example images (uint8 (N, H, W, 3)) per named split."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(per_row * 0.75 + 1.4, len(rows) * 0.8 + 0.2))
    FigureCanvasAgg(fig)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(min(per_row, len(images))):
            ax = fig.add_subplot(len(rows), per_row, r * per_row + c + 1)
            ax.imshow(images[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(left=1.3 / fig.get_figwidth(), right=0.99, top=0.98, bottom=0.02, wspace=0.05, hspace=0.08)
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path
