"""Training images decoded when a batch is taken, for sets too large to hold decoded in memory.

:class:`LazyImages` stands where the training loop expects a uint8 (N, 3, H, W) tensor
(:class:`~clipshift.train.loop.TrainData` ``images``): ``len()``, ``.shape``, ``.dtype``, and
indexing with a LongTensor, an ndarray, a list, a slice or a bool mask gives the decoded uint8
batch (B, 3, size, size). A file is decoded (RGB, resized to size x size, bilinear) by the same
function :func:`~clipshift.data.csv_source.load_images` uses, on a few threads, so a batch holds
the very pixels an in-memory copy would. Only an index map is held: :meth:`LazyImages.take`
(subsets, mixture picks, label filters) and :meth:`LazyImages.concat` (sources side by side, in
memory tensors included) never decode; :meth:`LazyImages.materialize` decodes every distinct
file once into one tensor.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from ..progress import progress_bar
from ._images import check_size, decode_many, decode_rgb, stack_into

DECODE_THREADS = 4  # PIL decodes with the GIL released: threads overlap the file reads and decodes


def take_images(images, index):
    """The rows `index` (an int or bool ndarray or tensor) of uint8 images: a LazyImages' subset (nothing
    decoded), or a tensor's rows."""
    return images.take(index) if isinstance(images, LazyImages) else images[torch.as_tensor(index)]


def _as_index(key, length: int) -> np.ndarray:
    """int64 positions of `key` (slice, bool mask, int sequence, LongTensor, ndarray) in 0..length-1."""
    if isinstance(key, slice):
        return np.arange(length)[key]
    if torch.is_tensor(key):
        key = key.cpu().numpy()
    index = np.asarray(key)
    if index.dtype == bool:
        if index.shape != (length,):
            raise IndexError(f"bool mask of shape {index.shape} for {length} images")
        return np.flatnonzero(index)
    if index.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(index.dtype, np.integer) or index.ndim != 1:
        raise IndexError(f"index images with a 1-D integer or bool array, got {index.dtype} of shape {index.shape}")
    if index.min() < -length or index.max() >= length:
        raise IndexError(f"index out of range for {length} images: {int(index.min())} .. {int(index.max())}")
    return np.where(index < 0, index + length, index).astype(np.int64)


class LazyImages:
    """`paths` decoded on demand as uint8 (3, `size`, `size`) images (see the module docstring)."""

    dtype = torch.uint8

    def __init__(self, paths: Sequence[str], size: int, *, num_workers: int = DECODE_THREADS):
        check_size(size)
        if size is None:
            raise ValueError("LazyImages needs size= (every image is resized to size x size)")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        self.size, self.num_workers = size, num_workers
        self._banks: list = [np.asarray([str(p) for p in paths], dtype=object)]
        self._bank = np.zeros(len(self._banks[0]), dtype=np.int32)
        self._row = np.arange(len(self._banks[0]), dtype=np.int64)
        self._pool: ThreadPoolExecutor | None = None

    def _view(self, bank: np.ndarray, row: np.ndarray, banks: list | None = None) -> "LazyImages":
        view = LazyImages.__new__(LazyImages)
        view.size, view.num_workers, view._pool = self.size, self.num_workers, None
        view._banks, view._bank, view._row = self._banks if banks is None else banks, bank, row
        return view

    def __len__(self) -> int:
        return len(self._row)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), 3, self.size, self.size))

    def __repr__(self) -> str:
        files = sum(len(b) for b in self._banks if not torch.is_tensor(b))
        return f"LazyImages({len(self)} images of 3x{self.size}x{self.size} from {files} files)"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None}  # a thread pool does not pickle

    @property
    def paths(self) -> list[str | None]:
        """The file of every image (None for an image held in memory)."""
        return [None if torch.is_tensor(self._banks[b]) else self._banks[b][r] for b, r in zip(self._bank, self._row)]

    def take(self, index) -> "LazyImages":
        """The images at `index` (any index __getitem__ takes), as a LazyImages: nothing is decoded."""
        index = _as_index(index, len(self))
        return self._view(self._bank[index], self._row[index])

    @classmethod
    def concat(cls, parts: Sequence["LazyImages | torch.Tensor"]) -> "LazyImages":
        """`parts` one after the other: LazyImages of one size, or uint8 (N, 3, size, size) tensors."""
        lazy = [p for p in parts if isinstance(p, LazyImages)]
        if not lazy:
            raise ValueError("LazyImages.concat needs at least one LazyImages among the parts")
        size = lazy[0].size
        banks, bank_ids, rows = [], [], []
        for part in parts:
            if isinstance(part, LazyImages):
                if part.size != size:
                    raise ValueError(f"cannot concatenate images of size {part.size} and {size}")
                new_ids = []
                for bank in part._banks:  # a bank shared by several parts (views of one source) is kept once
                    same = [j for j, known in enumerate(banks) if known is bank]
                    new_ids.append(same[0] if same else len(banks))
                    banks += [] if same else [bank]
                bank_ids.append(np.asarray(new_ids, dtype=np.int32)[part._bank])
                rows.append(part._row)
            else:
                if not torch.is_tensor(part) or part.dtype != torch.uint8 or tuple(part.shape[1:]) != (3, size, size):
                    got = f"{getattr(part, 'dtype', type(part).__name__)} {tuple(getattr(part, 'shape', ()))}"
                    raise ValueError(f"expected uint8 (N, 3, {size}, {size}) images, got {got}")
                bank_ids.append(np.full(len(part), len(banks), dtype=np.int32))
                rows.append(np.arange(len(part), dtype=np.int64))
                banks.append(part)
        return lazy[0]._view(np.concatenate(bank_ids).astype(np.int32), np.concatenate(rows), banks)

    def _decode(self, paths: Sequence[str]) -> list[torch.Tensor]:
        if self.num_workers == 0 or len(paths) < 2:
            return [decode_rgb(p, self.size) for p in paths]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_workers)
        return list(self._pool.map(lambda p: decode_rgb(p, self.size), paths))

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self[[int(key)]][0]
        index = _as_index(key, len(self))
        out = torch.empty((len(index), 3, self.size, self.size), dtype=torch.uint8)
        banks, rows = self._bank[index], self._row[index]
        for b in np.unique(banks):
            where = np.flatnonzero(banks == b)
            bank = self._banks[b]
            if torch.is_tensor(bank):
                out[torch.from_numpy(where)] = bank[torch.from_numpy(rows[where])]
            else:
                out[torch.from_numpy(where)] = torch.stack(self._decode(list(bank[rows[where]])))
        return out

    def materialize(self, progress: bool = False) -> torch.Tensor:
        """All images decoded into one uint8 (N, 3, size, size) tensor (each distinct file once)."""
        out = torch.empty(tuple(self.shape), dtype=torch.uint8)
        banks = self._bank
        for b in np.unique(banks):
            where = np.flatnonzero(banks == b)
            bank = self._banks[b]
            if torch.is_tensor(bank):
                out[torch.from_numpy(where)] = bank[torch.from_numpy(self._row[where])]
                continue
            distinct, inverse = np.unique(self._row[where], return_inverse=True)
            paths = list(bank[distinct])
            with progress_bar(total=len(paths), desc="decode", unit="img", enabled=progress) as bar:
                images, _ = stack_into(decode_many(paths, self.size, self.num_workers, skip_errors=False), paths, bar)
            out[torch.from_numpy(where)] = images[torch.from_numpy(inverse.reshape(-1))]
        return out
