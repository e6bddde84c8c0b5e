"""Reading results files: text checks, CSV reading, value and duplicate checks shared by the readers.

Percent vs fraction is decided per column: a column with any value above 1 holds percentages and is
divided by 100. A value that is then outside [0, 1], or not a number, is an error that names the file,
the line and the column.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

SNIFF_BYTES = 8192


class TableFormatError(ValueError):
    """A results table whose format could not be recognised or whose content is invalid."""


def is_gzip(path: Path) -> bool:
    """Whether `path` is a gzip-compressed file (``.gz``: read as the text it holds)."""
    return Path(path).suffix.lower() == ".gz"


def base_suffix(path: Path) -> str:
    """The suffix of `path` without a ``.gz`` ending, lower case (``results.tsv.gz`` → ``.tsv``)."""
    path = Path(path)
    return (path.with_suffix("") if is_gzip(path) else path).suffix.lower()


def stem_of(path: Path) -> str:
    """The name of `path` without its suffix and a ``.gz`` ending (``mine.csv.gz`` → ``mine``)."""
    path = Path(path)
    return (path.with_suffix("") if is_gzip(path) else path).stem


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def check_text(path: Path, expected: str) -> None:
    """Raise TableFormatError naming `path` and what was `expected` when the file is not UTF-8 text
    (a NUL byte or undecodable bytes in its first ``SNIFF_BYTES``)."""
    try:
        with _open_bytes(path) as f:
            head = f.read(SNIFF_BYTES)
    except (OSError, EOFError) as error:  # a .gz that is not gzip, or cut short
        raise TableFormatError(f"{path}: not a readable gzip file ({error}); expected {expected}") from None
    nul = head.find(b"\0")
    if nul >= 0:
        raise TableFormatError(f"{path}: a binary file (NUL byte at offset {nul}), not text; "
                               f"expected {expected}")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if len(head) < SNIFF_BYTES or error.start < len(head) - 4:  # not just a character cut at the end
            raise TableFormatError(f"{path}: a binary file (byte {error.start} is not UTF-8 text); "
                                   f"expected {expected}") from None


def read_text(path: Path, expected: str) -> str:
    """The whole file as UTF-8 text, or TableFormatError naming it and what was `expected`."""
    check_text(path, expected)
    try:
        with _open_bytes(path) as f:
            return f.read().decode("utf-8")
    except UnicodeDecodeError as error:
        raise TableFormatError(f"{path}: not UTF-8 text (byte {error.start}); expected {expected}") from None


def read_csv(path: Path) -> pd.DataFrame:
    """A CSV (TSV for ``.tsv``; either gzip-compressed as ``.gz``) table as strings, header stripped; clear
    errors for binary, empty (no bytes, or a header and no rows) or malformed files."""
    expected = "a results table as CSV/TSV text, CLIP_benchmark JSON or JSON lines"
    check_text(path, expected)
    sep = "\t" if base_suffix(path) == ".tsv" else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8",
                            compression="gzip" if is_gzip(path) else None)
    except pd.errors.EmptyDataError:
        raise TableFormatError(f"{path}: empty file (no bytes); expected {expected}") from None
    except UnicodeDecodeError as error:
        raise TableFormatError(f"{path}: not UTF-8 text (byte {error.start}); expected {expected}") from None
    except pd.errors.ParserError as error:
        raise TableFormatError(f"{path}: not a readable CSV table ({str(error).strip()}); expected {expected}"
                               ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise TableFormatError(f"{path}: empty table (a header and no rows: {', '.join(frame.columns)}); expected "
                               f"one row per model (or per model and dataset)")
    return frame


def lines_of(frame: pd.DataFrame) -> pd.Series:
    """File line number of each row (header is line 1)."""
    return pd.Series(np.arange(len(frame)) + 2, index=frame.index)


def as_fraction(values: pd.Series, where: str, column: str, lines: pd.Series) -> pd.Series:
    """Accuracies of one column as fractions: numbers checked, percent detected (any value > 1)."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna() & (values.astype(str).str.strip() != "")
    if bad.any():
        i = bad.idxmax()
        raise TableFormatError(f"{where}, line {lines[i]}, column {column!r}: {values[i]!r} is not a number")
    percent = bool((numeric > 1).any())
    if percent:
        numeric = (numeric / 100).round(12)  # 75.57 / 100 → 0.7557, not 0.7556999999999999
    out_of_range = (numeric < 0) | (numeric > 1)
    if out_of_range.any():
        i = out_of_range.idxmax()
        raw = values[i]
        reason = "percent above 100" if percent and numeric[i] > 1 else "negative accuracy"
        raise TableFormatError(f"{where}, line {lines[i]}, column {column!r}: {raw!r} is not an accuracy "
                               f"({reason}; values are read as {'percent' if percent else 'fractions'})")
    return numeric


def check_unique(frame: pd.DataFrame, keys: list[str], where: str, lines: pd.Series, what: str) -> None:
    """TableFormatError naming the lines of the first duplicate of `keys`."""
    dupes = frame[frame.duplicated(keys, keep=False)]
    if len(dupes):
        first = dupes.iloc[0]
        same = dupes[(dupes[keys] == first[keys]).all(axis=1)]
        at = ", ".join(str(lines[i]) for i in same.index)
        desc = ", ".join(f"{k}={first[k]!r}" for k in keys)
        raise TableFormatError(f"{where}: duplicate {what} ({desc}) on lines {at}")


def left_out_note(where: str, names, count: int, what: str = "row(s)") -> str:
    """One line naming the datasets a reader left out."""
    names = sorted({str(n) for n in names})
    return (f"{where}: left out {count} {what} of {len(names)} dataset(s) that are not ImageNet or its natural "
            f"shifts: {', '.join(names)}")

