"""Training data as a table of ``filepath,caption[,label]`` (CSV, or TSV as open_clip uses)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor
from tqdm.auto import tqdm


def read_caption_table(path, *, sep=None, filepath_column="filepath", caption_column="caption",
                       label_column="label") -> pd.DataFrame:
    """Columns ``filepath`` (absolute), ``caption`` and, if present, ``label``.

    Relative paths are resolved against the table's folder; ``sep=None`` means tab for
    ``.tsv`` files and comma otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption table not found: {path}")
    sep = sep or ("\t" if path.suffix.lower() == ".tsv" else ",")
    table = pd.read_csv(path, sep=sep, dtype={filepath_column: str, caption_column: str}, keep_default_na=False)
    missing = [c for c in (filepath_column, caption_column) if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    out = pd.DataFrame({
        "filepath": [str(p if Path(p).is_absolute() else (path.parent / p)) for p in table[filepath_column]],
        "caption": table[caption_column].astype(str),
    })
    if label_column in table.columns:
        out["label"] = table[label_column].tolist()
    empty = np.flatnonzero(out["caption"].str.strip() == "")
    if len(empty):
        raise ValueError(f"{path}: empty caption in data row {empty[0] + 1} ({len(empty)} rows in all)")
    absent = [i for i, p in enumerate(out["filepath"]) if not Path(p).is_file()]
    if absent:
        first = ", ".join(f"row {i + 1}: {out['filepath'][i]}" for i in absent[:3])
        raise FileNotFoundError(f"{path}: {len(absent)} image file(s) not found ({first})")
    return out


def _label_index(value, class_names: Sequence[str] | None, row: int) -> int:
    if isinstance(value, (int, np.integer)):
        return int(value)
    if class_names is None:
        raise ValueError(f"row {row}: label {value!r} is a name, but no class_names were given")
    try:
        return list(class_names).index(value)
    except ValueError:
        raise ValueError(f"row {row}: unknown label {value!r}; known: {list(class_names)[:10]}...") from None


class ImageCaptionDataset(Dataset):
    """(image, caption, label or -1) from a table made by :func:`read_caption_table`."""

    def __init__(self, table: pd.DataFrame, *, transform: Callable | None = None,
                 class_names: Sequence[str] | None = None):
        self.table = table.reset_index(drop=True)
        self.transform = transform or pil_to_tensor
        self.labels = ([_label_index(v, class_names, i + 1) for i, v in enumerate(table["label"])]
                       if "label" in table.columns else [-1] * len(table))

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int):
        with Image.open(self.table.at[i, "filepath"]) as image:
            return self.transform(image.convert("RGB")), self.table.at[i, "caption"], self.labels[i]


def _decode(path: str, size: int | None) -> torch.Tensor:
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return pil_to_tensor(image)


def load_images(paths: Sequence[str], *, size: int | None = None, num_workers: int = 0,
                progress: bool = True) -> torch.Tensor:
    """Decode every image into one uint8 (N, 3, H, W) tensor (all must share a size unless `size`)."""
    if not paths:
        raise ValueError("no image paths given")
    it = tqdm(paths, desc="decode", unit="img", disable=not progress, leave=False)
    if num_workers > 0:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(num_workers) as pool:
            images = list(pool.map(lambda p: _decode(p, size), it))
    else:
        images = [_decode(p, size) for p in it]
    first = images[0].shape
    for path, image in zip(paths, images):
        if image.shape != first:
            raise ValueError(f"{path} has shape {tuple(image.shape)}, the first image {tuple(first)}; pass size=")
    return torch.stack(images)
