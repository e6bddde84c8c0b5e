"""Atomic file writes, the one implementation every stage uses (standard library only: no torch).

A run directory is read while it is written (a resumed run, a report rendered during a study), so
every file goes to a temporary name in its own folder first and is then renamed onto its path
(``os.replace`` is atomic on one file system): a reader sees the old file or the new one, never a
partial one. Files are made readable by everyone (0644): temporary files are created owner-only,
and run directories are for sharing.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

FILE_MODE = 0o644


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder to write to; on leaving the block without an error it
    replaces `path` (mode 0644), on an error it is removed. For writers that take a file name."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable, binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file opened in `path`'s folder (text: UTF-8), then replace
    `path` with it (:func:`atomic_path`); returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8") as f:
            write(f)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    return atomic_write(path, lambda f: f.write(text))

