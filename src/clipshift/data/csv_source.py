"""Training data as a table of ``filepath,caption[,label]`` (CSV, or TSV as open_clip uses).

Row numbers in error messages count data rows from 1 (the header is not a row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from ..progress import progress_bar
from ._images import check_size, decode_many, open_rgb, stack_into

_SHOW = 3  # how many offending rows an error message lists


def _read_table(path: Path, sep: str) -> pd.DataFrame:
    """The raw table, every cell a string; ValueError naming the file when it cannot be parsed."""
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{path}: the caption table is empty (no header)") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot parse as a table separated by {sep!r}: {error}") from error
    if not isinstance(table.index, pd.RangeIndex):  # pandas took the first field as an index: one too many
        raise ValueError(f"{path}: row 1 has more fields than the header {list(table.columns)} (separated by "
                         f"{sep!r}); quote fields that contain {sep!r}")
    return table


def _require_columns(path: Path, table: pd.DataFrame, columns: list[str], sep: str) -> None:
    """ValueError listing the missing columns and those found (with a hint on the separator)."""
    missing = [c for c in columns if c not in table.columns]
    if not missing:
        return
    hint = ""
    if len(table.columns) == 1 and any(s in table.columns[0] for s in ("\t", ",", ";")):
        hint = f" (read with sep={sep!r}; is the file separated by something else? pass sep=)"
    raise ValueError(f"{path}: missing column(s) {missing}; found {list(table.columns)}{hint}")


def _rows(indices, values=None) -> str:
    """'row 3, row 7, ...' for the first few offending 0-based indices."""
    shown = [f"row {i + 1}" + (f": {values[i]}" if values is not None else "") for i in indices[:_SHOW]]
    return ", ".join(shown) + (", ..." if len(indices) > _SHOW else "")


def _parse_labels(path: Path, column: pd.Series) -> list:
    """Labels as ints when every cell is an integer, else as strings; no blank cells."""
    cells = column.str.strip()
    blank = np.flatnonzero(cells == "")
    if len(blank):
        raise ValueError(f"{path}: {len(blank)} blank label(s) in column {column.name!r} ({_rows(blank)})")
    if cells.str.fullmatch(r"[+-]?\d+").all():
        return [int(c) for c in cells]
    return cells.tolist()


def read_caption_table(path, *, sep: str | None = None, filepath_column: str = "filepath",
                       caption_column: str | Sequence[str] = "caption", label_column: str = "label") -> pd.DataFrame:
    """Read a caption table into columns ``filepath`` (absolute), ``caption`` and, if the table
    has `label_column`, ``label`` (ints when every label is an integer, else strings).

    Relative paths are resolved against the table's folder; ``sep=None`` means tab for ``.tsv``
    files and for tables whose header line contains a tab (open_clip's convention), comma
    otherwise. `caption_column` may list candidates (``("caption", "title")``): the first the
    table has is read. Every image file must exist (the error gives the count and the first few
    rows); captions must not be blank."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(f"caption table not found: {path}")
    if sep is None:  # tab for .tsv files and for any table whose header has tabs (open_clip's default)
        with open(path, encoding="utf-8", errors="replace") as f:
            header = f.readline()
        sep = "\t" if path.suffix.lower() == ".tsv" or "\t" in header else ","
    table = _read_table(path, sep)
    if not isinstance(caption_column, str):
        candidates = list(caption_column)
        caption_column = next((c for c in candidates if c in table.columns), " or ".join(candidates))
    _require_columns(path, table, [filepath_column, caption_column], sep)
    if table.empty:
        raise ValueError(f"{path}: the caption table has a header but no rows")
    out = pd.DataFrame({
        "filepath": [str(path.parent / Path(p).expanduser()) for p in table[filepath_column]],
        "caption": table[caption_column],
    })
    if label_column in table.columns:
        out["label"] = _parse_labels(path, table[label_column])
    empty = np.flatnonzero(out["caption"].str.strip() == "")
    if len(empty):
        raise ValueError(f"{path}: {len(empty)} empty caption(s) in column {caption_column!r} ({_rows(empty)})")
    blank = np.flatnonzero(table[filepath_column].str.strip() == "")
    if len(blank):
        raise ValueError(f"{path}: {len(blank)} empty file path(s) in column {filepath_column!r} ({_rows(blank)})")
    absent = [i for i, p in enumerate(out["filepath"]) if not Path(p).is_file()]
    if absent:
        raise FileNotFoundError(f"{path}: {len(absent)} image file(s) not found ({_rows(absent, out['filepath'])})")
    return out


def label_index(value, class_names: list[str] | None, row: int) -> int:
    """The class index of one label (an int, or a name looked up in `class_names`)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = int(value)
        if value < -1 or (class_names is not None and value >= len(class_names)):
            limit = f"{len(class_names) - 1}" if class_names is not None else "any"
            raise ValueError(f"row {row}: label {value} is out of range (expected -1 .. {limit})")
        return value
    if class_names is None:
        raise ValueError(f"row {row}: label {value!r} is a class name, but no class_names were given")
    try:
        return class_names.index(value)
    except ValueError:
        raise ValueError(f"row {row}: unknown label {value!r}; known classes include {class_names[:10]}") from None


class ImageCaptionDataset(Dataset):
    """``(image, caption, label)`` from a table made by :func:`read_caption_table`.

    The image is decoded as RGB and passed through `transform` (default: ``pil_to_tensor``,
    giving uint8 (3, H, W)). Labels are ints, or class names mapped to their index in
    `class_names`; -1 when the table has no labels."""

    def __init__(self, table: pd.DataFrame, *, transform: Callable | None = None,
                 class_names: Sequence[str] | None = None):
        missing = [c for c in ("filepath", "caption") if c not in table.columns]
        if missing:
            raise ValueError(f"table lacks column(s) {missing}; found {list(table.columns)} "
                             f"(make it with read_caption_table)")
        self.table = table.reset_index(drop=True)
        self.class_names = list(class_names) if class_names is not None else None
        self.transform = transform if transform is not None else pil_to_tensor
        self.labels = torch.tensor(
            [label_index(v, self.class_names, i + 1) for i, v in enumerate(self.table["label"])]
            if "label" in self.table.columns else [-1] * len(self.table), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int):
        image = open_rgb(self.table.at[i, "filepath"])
        return self.transform(image), self.table.at[i, "caption"], int(self.labels[i])


def load_images(paths: Sequence[str], *, size: int | None = None, num_workers: int = 0,
                progress: bool = True) -> torch.Tensor:
    """Decode every image (as RGB) into one uint8 (N, 3, H, W) tensor in memory.

    With `size`, every image is resized to `size` x `size` (aspect ratio not kept); without,
    all images must share a size (ValueError naming the first that does not). `num_workers`
    threads decode in parallel. Undecodable files raise a ValueError naming them."""
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no image paths given")
    check_size(size)
    with progress_bar(total=len(paths), desc="decode", unit="img", enabled=progress) as bar:
        images, _ = stack_into(decode_many(paths, size, num_workers, skip_errors=False), paths, bar)
    return images
